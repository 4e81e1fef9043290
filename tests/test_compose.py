"""Composition of trained modules: each method against its formula, baked == unbaked, the manifest,
and every refusal. Modules are random (non-zero) LoRA/(IA)3 adapters on the tiny local Llama."""
from __future__ import annotations

import json
import math
import shutil

import pytest
import yaml
import torch
from safetensors.torch import load_file, save_file

from neurosym.compose import compose, load
from neurosym.compose.core import MANIFEST, plan, read_manifest
from neurosym.compose.sources import ComposeError

X = torch.tensor([[1, 5, 9, 12, 40, 33, 7, 2]])
TARGETS = ["q_proj", "v_proj"]
TOL = dict(atol=1e-5, rtol=1e-5)


def _base(model_dir):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(model_dir).eval()


def make_lora(model_dir, out, seed, r=4, alpha=8, targets=TARGETS, **kw):
    from peft import LoraConfig, get_peft_model
    torch.manual_seed(seed)
    model = get_peft_model(_base(model_dir), LoraConfig(r=r, lora_alpha=alpha, target_modules=targets,
                                                        init_lora_weights=False, **kw))
    model.save_pretrained(str(out))
    return out


def make_ia3(model_dir, out, seed):
    from peft import IA3Config, get_peft_model
    model = get_peft_model(_base(model_dir), IA3Config(target_modules=["v_proj", "down_proj"],
                                                       feedforward_modules=["down_proj"]))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ia3_l" in name:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
    model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="module")
def mods(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("modules")
    return {
        "a": make_lora(tiny_model_dir, d / "a", 1),
        "b": make_lora(tiny_model_dir, d / "b", 2),
        "c": make_lora(tiny_model_dir, d / "c", 3, r=2, alpha=6),           # another rank and scale
        "rs1": make_lora(tiny_model_dir, d / "rs1", 4, use_rslora=True),
        "rs2": make_lora(tiny_model_dir, d / "rs2", 5, r=8, use_rslora=True),
        "dora": make_lora(tiny_model_dir, d / "dora", 6, use_dora=True),
        "other_targets": make_lora(tiny_model_dir, d / "ot", 7, targets=["k_proj"]),
        "i1": make_ia3(tiny_model_dir, d / "i1", 8),
        "i2": make_ia3(tiny_model_dir, d / "i2", 9),
    }


def _lora_tensors(path):
    """{(module path, 'A'|'B'): tensor} and the scale s of a saved LoRA adapter."""
    cfg = json.loads((path / "adapter_config.json").read_text())
    r, alpha = cfg["r"], cfg["lora_alpha"]
    s = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
    out = {}
    for key, t in load_file(str(path / "adapter_model.safetensors")).items():
        module = key.split(".lora_")[0].removeprefix("base_model.model.")
        out[(module, key.split(".lora_")[1][0])] = t
    return out, s


def reference_logits(model_dir, adapters, lambdas):
    """Base weights W + sum_i lambda_i s_i B_i A_i, merged by hand: the formula, on logits."""
    model = _base(model_dir)
    params = dict(model.named_modules())
    with torch.no_grad():
        for path, lam in zip(adapters, lambdas):
            t, s = _lora_tensors(path)
            for (module, which), A in t.items():
                if which == "A":
                    params[module].weight += lam * s * t[(module, "B")] @ A
        return model(X).logits


def logits(model):
    with torch.no_grad():
        return model(X).logits


# ------------------------------------------------------------------- output composition (LoRA)

@pytest.mark.parametrize("method, weights, lambdas", [
    ("output_sum", None, [1, 1, 1]),
    ("output_avg", None, [1 / 3] * 3),
    ("output_weighted", {"b": -0.7, "c": 2.0}, [1, -0.7, 2.0]),
])
def test_output_composition_is_base_plus_weighted_module_outputs(tmp_path, tiny_model_dir, mods, method, weights,
                                                                  lambdas):
    paths = [mods["a"], mods["b"], mods["c"]]
    out = compose(list(zip("abc", map(str, paths))), method, tmp_path / "comp", weights=weights)
    assert not (out / "adapter_model.safetensors").exists()      # unbaked: a manifest only
    model, _ = load(out, device="cpu")
    # on the logits
    torch.testing.assert_close(logits(model), reference_logits(tiny_model_dir, paths, lambdas), **TOL)
    # at one layer, on a random input
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    x = torch.randn(3, layer.in_features, generator=torch.Generator().manual_seed(0))
    want = x @ layer.base_layer.weight.T
    for path, lam in zip(paths, lambdas):
        t, s = _lora_tensors(path)
        A, B = t[("model.layers.0.self_attn.q_proj", "A")], t[("model.layers.0.self_attn.q_proj", "B")]
        want = want + lam * s * (x @ A.T @ B.T)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), want, **TOL)


def test_one_module_alone_is_that_module(tmp_path, tiny_model_dir, mods):
    from peft import PeftModel
    model, _ = load(compose([("a", str(mods["a"]))], "output_sum", tmp_path / "one"), device="cpu")
    alone = PeftModel.from_pretrained(_base(tiny_model_dir), str(mods["a"])).eval()
    torch.testing.assert_close(logits(model), logits(alone), **TOL)


@pytest.mark.parametrize("names, weights", [(("a", "c"), {"c": -1.5}), (("rs1", "rs2"), {"rs1": 0.5})],
                         ids=["lora", "rslora"])
def test_baked_equals_unbaked_and_loads_with_plain_peft(tmp_path, tiny_model_dir, mods, names, weights):
    from peft import PeftModel
    adapters = [(n, str(mods[n])) for n in names]
    unbaked, _ = load(compose(adapters, "output_weighted", tmp_path / "u", weights=weights), device="cpu")
    baked_dir = compose(adapters, "output_weighted", tmp_path / "b", weights=weights, bake=True)
    cfg = json.loads((baked_dir / "adapter_config.json").read_text())
    assert cfg["r"] == sum(json.loads((mods[n] / "adapter_config.json").read_text())["r"] for n in names)
    plain = PeftModel.from_pretrained(_base(tiny_model_dir), str(baked_dir)).eval()
    torch.testing.assert_close(logits(plain), logits(unbaked), **TOL)
    ours, _ = load(baked_dir, device="cpu")
    torch.testing.assert_close(logits(ours), logits(unbaked), **TOL)


# ------------------------------------------------------------------- weight methods (LoRA)

@pytest.mark.parametrize("method, weights, lambdas", [
    ("weight_avg", None, [0.5, 0.5]),
    ("weight_sum", None, [1.0, 1.0]),
    ("weight_linear", {"a": 0.8, "b": -0.3}, [0.8, -0.3]),
])
def test_linear_weight_methods_equal_their_formula(tmp_path, mods, method, weights, lambdas):
    """PEFT's linear: A = sum sign(l_i s_i) sqrt|l_i s_i| A_i, B = sum sqrt|l_i s_i| B_i, scale 1."""
    out = compose([("a", str(mods["a"])), ("b", str(mods["b"]))], method, tmp_path / "w", weights=weights)
    got, s_out = _lora_tensors(out)
    assert s_out == 1.0
    parts = [_lora_tensors(mods[n]) for n in "ab"]
    for (module, which), t in got.items():
        want = 0
        for (tensors, s), lam in zip(parts, lambdas):
            k = lam * s
            coef = math.copysign(math.sqrt(abs(k)), k) if which == "A" else math.sqrt(abs(k))
            want = want + coef * tensors[(module, which)]
        torch.testing.assert_close(t, want, **TOL)


@pytest.mark.parametrize("method, opts", [("cat", {}), ("svd", {"svd_rank": 6})])
def test_cat_and_full_rank_svd_give_the_exact_weighted_delta(tmp_path, tiny_model_dir, mods, method, opts):
    paths = [mods["a"], mods["c"]]                              # ranks 4 + 2: svd at rank 6 is exact
    out = compose([("a", str(paths[0])), ("c", str(paths[1]))], method, tmp_path / "m",
                  weights={"c": -0.5}, **opts)
    model, _ = load(out, device="cpu")
    torch.testing.assert_close(logits(model), reference_logits(tiny_model_dir, paths, [1, -0.5]), atol=1e-4,
                               rtol=1e-4)


def test_lora_negation_then_addition_gives_the_base_back(tmp_path, tiny_model_dir, mods):
    out = compose([("a", str(mods["a"])), ("minus_a", str(mods["a"]))], "weight_linear", tmp_path / "n",
                  weights={"minus_a": -1})
    model, _ = load(out, device="cpu")
    torch.testing.assert_close(logits(model), logits(_base(tiny_model_dir)), **TOL)
    # negation alone is the module with B negated: base - s B A
    neg, _ = load(compose([("a", str(mods["a"]))], "weight_linear", tmp_path / "neg", weights={"a": -1}),
                  device="cpu")
    torch.testing.assert_close(logits(neg), reference_logits(tiny_model_dir, [mods["a"]], [-1]), **TOL)


@pytest.mark.parametrize("method", ["ties", "dare_linear", "dare_ties"])
def test_pruning_merges_run_and_are_reproducible_by_seed(tmp_path, mods, method):
    one = compose([("a", str(mods["a"])), ("b", str(mods["b"]))], method, tmp_path / "1", density=0.5, seed=3)
    two = compose([("a", str(mods["a"])), ("b", str(mods["b"]))], method, tmp_path / "2", density=0.5, seed=3)
    t1, t2 = load_file(str(one / "adapter_model.safetensors")), load_file(str(two / "adapter_model.safetensors"))
    assert t1.keys() == t2.keys() and all(torch.equal(t1[k], t2[k]) for k in t1)
    assert any((t1[k] == 0).any() for k in t1)                  # something was pruned


# ------------------------------------------------------------------- (IA)3, by hand

def _ia3(path):
    return {k.removeprefix("base_model.model."): v for k, v in load_file(str(path / "adapter_model.safetensors")).items()}


def test_ia3_negation_is_two_minus_l_and_average_is_the_mean(tmp_path, mods):
    neg = compose([("i1", str(mods["i1"]))], "weight_linear", tmp_path / "neg", weights={"i1": -1})
    l1, l2 = _ia3(mods["i1"]), _ia3(mods["i2"])
    for k, v in _ia3(neg).items():
        torch.testing.assert_close(v, 2 - l1[k])
    avg = compose([("i1", str(mods["i1"])), ("i2", str(mods["i2"]))], "weight_avg", tmp_path / "avg")
    for k, v in _ia3(avg).items():
        torch.testing.assert_close(v, (l1[k] + l2[k]) / 2)


@pytest.mark.parametrize("feed_forward", [False, True], ids=["v_proj", "down_proj"])
def test_ia3_output_composition_matches_its_formula(tmp_path, tiny_model_dir, mods, feed_forward):
    """At a layer: base(x) + sum_i lambda_i (module_i(x) - base(x)), each module run alone."""
    from peft import PeftModel
    lambdas = {"i1": 1.0, "i2": -0.6}
    model, _ = load(compose([(n, str(mods[n])) for n in lambdas], "output_weighted", tmp_path / "o",
                            weights=lambdas), device="cpu")
    pick = (lambda m: m.model.layers[1].mlp.down_proj) if feed_forward else (lambda m: m.model.layers[1].self_attn.v_proj)
    layer = pick(model.base_model.model)
    x = torch.randn(4, layer.in_features, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        base_y = layer.base_layer(x)
        want = base_y.clone()
        for name, lam in lambdas.items():
            alone = PeftModel.from_pretrained(_base(tiny_model_dir), str(mods[name])).eval()
            want += lam * (pick(alone.base_model.model)(x) - base_y)
        torch.testing.assert_close(layer(x), want, **TOL)
    # baked (IA)3 output composition is the same adapter
    baked, _ = load(compose([(n, str(mods[n])) for n in lambdas], "output_weighted", tmp_path / "ob",
                            weights=lambdas, bake=True), device="cpu")
    torch.testing.assert_close(logits(baked), logits(model), **TOL)


# ------------------------------------------------------------------- manifest

def test_manifest_round_trip_and_a_changed_module_is_refused(tmp_path, mods):
    a, b = tmp_path / "a", tmp_path / "b"
    shutil.copytree(mods["a"], a)
    shutil.copytree(mods["b"], b)
    out = compose([("a", str(a)), ("b", str(b))], "output_weighted", tmp_path / "comp", weights={"b": -1})
    _, doc = read_manifest(out / MANIFEST)
    assert doc["method"] == "output_weighted" and [m["weight"] for m in doc["modules"]] == [1.0, -1.0]
    assert doc["modules"][0]["path"] == "../a"             # relative: the tree can move as a whole
    first = logits(load(out, device="cpu")[0])
    moved = tmp_path / "moved"
    moved.mkdir()
    for d in ("a", "b", "comp"):
        shutil.move(str(tmp_path / d), str(moved / d))
    torch.testing.assert_close(logits(load(moved / "comp" / MANIFEST, device="cpu")[0]), first)
    weights = load_file(str(moved / "b" / "adapter_model.safetensors"))
    save_file({k: v * 2 for k, v in weights.items()}, str(moved / "b" / "adapter_model.safetensors"))
    with pytest.raises(ComposeError, match=r"module b: .*adapter_model.safetensors changed since"):
        load(moved / "comp", device="cpu")


def test_a_changed_baked_adapter_is_refused(tmp_path, mods):
    out = compose([("a", str(mods["a"])), ("b", str(mods["b"]))], "weight_avg", tmp_path / "w")
    cfg = json.loads((out / "adapter_config.json").read_text())
    cfg["lora_alpha"] = 99
    (out / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ComposeError, match="result: .*adapter_config.json changed"):
        load(out, device="cpu")


def test_run_directory_is_a_module_source(tmp_path, tiny_model_dir):
    from neurosym.config.schema import load_config
    from neurosym.train import train
    from tests.support.jobs import write_config
    cfg = load_config(write_config(tmp_path, tiny_model_dir, train={"max_steps": 2, "save_every": 2}))
    run = train(cfg, quiet=True).run_dir
    sources, _, _ = plan([("r", str(run))], "output_sum")
    assert sources[0].adapter_dir.name == "step-2" and sources[0].run_dir == run
    model, _ = load(run, device="cpu")                 # a run loads as its newest checkpoint
    assert "default" in model.peft_config


# ------------------------------------------------------------------- refusals (before any model loads)

def _edit_config(src, dst, **changes):
    shutil.copytree(src, dst)
    cfg = json.loads((dst / "adapter_config.json").read_text())
    cfg.update(changes)
    (dst / "adapter_config.json").write_text(json.dumps(cfg))
    return dst


def test_each_incompatible_pair_is_refused_with_its_reason(tmp_path, mods):
    other_base = _edit_config(mods["b"], tmp_path / "ob", base_model_name_or_path="some/other-model")
    other_rev = _edit_config(mods["b"], tmp_path / "or", revision="v2")
    no_weights = tmp_path / "nw"
    shutil.copytree(mods["b"], no_weights)
    (no_weights / "adapter_model.safetensors").unlink()
    a = ("a", str(mods["a"]))
    cases = [
        ([a, ("b", str(other_base))], "output_sum", "trained on .* but b on some/other-model"),
        ([a, ("b", str(other_rev))], "output_sum", r"revision v2.*share one base model and revision"),
        ([a, ("b", str(mods["other_targets"]))], "output_sum", "targets .* but b targets .*k_proj"),
        ([a, ("c", str(mods["c"]))], "weight_avg", "needs equal ranks .*a r=4, c r=2"),
        ([a, ("c", str(mods["c"]))], "ties", "needs equal ranks"),
        ([a, ("i", str(mods["i1"]))], "output_sum", r"a is LoRA and i is \(IA\)3"),
        ([("i", str(mods["i1"])), ("j", str(mods["i2"]))], "svd", "LoRA modules only"),
        ([a, ("b", str(no_weights))], "output_sum", "adapter_model.safetensors is missing"),
        ([a, ("b", str(tmp_path / "nowhere"))], "output_sum", "no such file or folder"),
        ([a, ("b", str(tmp_path))], "output_sum", "not a run directory, checkpoint or PEFT adapter folder"),
        ([a, ("d", str(mods["dora"]))], "weight_linear", "DoRA module"),
        ([a, ("a", str(mods["b"]))], "output_sum", "given twice"),
        ([("default", str(mods["a"]))], "output_sum", "name of the composed result"),
        ([("a.b", str(mods["a"]))], "output_sum", "the name must start with a letter"),
        ([a], "nonsense", "unknown composition method"),
    ]
    for adapters, method, reason in cases:
        with pytest.raises(ComposeError, match=reason):
            plan(adapters, method)
    with pytest.raises(ComposeError, match="DoRA"):
        plan([a, ("d", str(mods["dora"]))], "output_sum", bake=True)
    plan([a, ("d", str(mods["dora"]))], "output_sum")        # unbaked sum of DoRA modules is allowed
    plan([a, ("c", str(mods["c"]))], "cat")                  # cat and svd take unequal ranks
    with pytest.raises(ComposeError, match="fixes its weights .* use --method output_weighted"):
        plan([a], "output_sum", weights={"a": 2})
    with pytest.raises(ComposeError, match="no --adapter is named 'zz'"):
        plan([a], "output_weighted", weights={"zz": 2})


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_a_4bit_base_is_refused_clearly_without_cuda(tmp_path, mods):
    from neurosym.model.load import ModelError
    out = compose([("a", str(mods["a"])), ("b", str(mods["b"]))], "output_sum", tmp_path / "q",
                  quantization="4bit")
    assert read_manifest(out)[1]["base"]["quantization"] == "4bit"
    with pytest.raises(ModelError, match="4bit .*needs a CUDA GPU.*--quantization none"):
        load(out)
    with pytest.raises(ModelError, match="needs a CUDA GPU"):
        compose([("a", str(mods["a"]))], "weight_sum", tmp_path / "q2", quantization="4bit")
    model, _ = load(out, device="cpu", quantization="none")     # a full-precision copy of the base
    assert sorted(model.base_model.active_adapters) == ["a", "b"]


# ------------------------------------------------------------------- CLI

def test_cli_compose_writes_and_refuses_with_exit_2(tmp_path, mods, capsys):
    from neurosym.cli import main
    rc = main(["compose", "--adapter", f"a={mods['a']}", "--adapter", f"b={mods['b']}", "--method", "output_sum",
               "--bake", "--out", str(tmp_path / "baked")])
    assert rc == 0 and "(baked)" in capsys.readouterr().out
    assert (tmp_path / "baked" / "adapter_model.safetensors").exists()
    rc = main(["compose", "--adapter", f"a={mods['a']}", "--adapter", f"c={mods['c']}", "--method", "weight_avg",
               "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert rc == 2 and "needs equal ranks" in err and "Traceback" not in err
    with pytest.raises(SystemExit) as exc:
        main(["compose", "--adapter", "no-equals-sign", "--method", "cat", "--out", str(tmp_path / "y")])
    assert exc.value.code == 2 and "expected NAME=PATH" in capsys.readouterr().err


# ------------------------------------------------------------------- paths: one meaning from any directory

def test_a_composition_made_in_one_directory_loads_the_same_from_another(tmp_path, tiny_model_dir, mods,
                                                                          monkeypatch):
    from neurosym.cli import main
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copytree(tiny_model_dir, work / "models" / "tiny")
    # PEFT folders naming their base as from_pretrained got it: relative to the directory of the job;
    # the second names none, so --base (also relative) supplies it
    _edit_config(mods["a"], work / "mods" / "a", base_model_name_or_path="models/tiny")
    _edit_config(mods["b"], work / "mods" / "b", base_model_name_or_path=None)
    monkeypatch.chdir(work)
    rc = main(["compose", "--adapter", "a=mods/a", "--adapter", "b=mods/b", "--base", "models/tiny",
               "--method", "output_weighted", "--weight", "b=-0.5", "--out", "comp"])
    assert rc == 0
    _, doc = read_manifest(work / "comp")
    assert doc["base"]["name_or_path"] == str((work / "models" / "tiny").resolve())   # not "models/tiny"
    assert [m["path"] for m in doc["modules"]] == ["../mods/a", "../mods/b"]
    expected = reference_logits(tiny_model_dir, [mods["a"], mods["b"]], [1, -0.5])
    monkeypatch.chdir(elsewhere)                                  # where "models/tiny" names nothing
    torch.testing.assert_close(logits(load(work / "comp", device="cpu")[0]), expected, **TOL)


def _set_base(comp, name_or_path):
    doc = yaml.safe_load((comp / MANIFEST).read_text())
    doc["base"]["name_or_path"] = name_or_path
    (comp / MANIFEST).write_text(yaml.safe_dump(doc))


def test_a_relative_base_in_a_manifest_is_read_from_the_manifests_folder(tmp_path, tiny_model_dir, mods,
                                                                        monkeypatch):
    shutil.copytree(tiny_model_dir, tmp_path / "tree" / "base")
    out = compose([("a", str(mods["a"]))], "output_sum", tmp_path / "tree" / "comp")
    _set_base(out, "../base")
    (tmp_path / "cwd" / "base").mkdir(parents=True)            # a decoy: "../base" from the cwd is empty
    monkeypatch.chdir(tmp_path / "cwd" / "base")
    expected = reference_logits(tiny_model_dir, [mods["a"]], [1])
    torch.testing.assert_close(logits(load(out, device="cpu")[0]), expected, **TOL)
    _set_base(out, "../no-such-model")
    from neurosym.model.load import ModelError
    with pytest.raises(ModelError, match=str(tmp_path / "tree" / "no-such-model")):
        load(out, device="cpu")
