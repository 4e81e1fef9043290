"""`neurosym compose --out` keeps what the user has (the rules `export` and `merge` follow), every bad
input is a message (exit 2), and a file someone hands you cannot decide to run code
(`trust_remote_code` in a manifest or a run's config needs `--trust-remote-code`)."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import yaml

from neurosym.cli import main
from neurosym.compose import compose, load
from neurosym.compose.core import MANIFEST
from neurosym.compose.sources import ComposeError
from neurosym.persist.safe_output import OLD_TAG, TMP_TAG
from tests.test_compose import make_lora


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if TMP_TAG in p.name or OLD_TAG in p.name]


@pytest.fixture(scope="module")
def mods(tmp_path_factory, tiny_model_dir):
    d = tmp_path_factory.mktemp("modules")
    return {"a": make_lora(tiny_model_dir, d / "a", 1), "b": make_lora(tiny_model_dir, d / "b", 2)}


def make_run(tmp_path: Path, model_dir, adapter: Path, name: str = "r", trust: bool = False) -> Path:
    """A run directory (config.yaml, events.jsonl, checkpoints/step-2) whose checkpoint is ``adapter``."""
    from neurosym.config.schema import load_config, save_resolved
    from tests.support.jobs import write_config

    cfg = load_config(write_config(tmp_path, model_dir, name=name,
                                   model={"name_or_path": str(model_dir), "trust_remote_code": trust}))
    run = cfg.run_dir
    ckpt = run / "checkpoints" / "step-2"
    shutil.copytree(adapter, ckpt)
    (ckpt / "COMPLETE").write_text("step 2\n")
    save_resolved(cfg, run / "config.yaml")
    (run / "events.jsonl").write_text("")
    return run


def cli_compose(mods, out, method="output_sum", *extra, adapters=None) -> int:
    adapters = adapters or [f"a={mods['a']}", f"b={mods['b']}"]
    args = ["compose", *[x for a in adapters for x in ("--adapter", a)], "--method", method, "--out", str(out)]
    return main(args + list(extra))


# ---------------------------------------------------------------------------------------- --out

@pytest.mark.parametrize("method,extra", [("output_sum", []), ("weight_avg", []), ("output_sum", ["--bake"])])
def test_compose_into_a_users_folder_is_refused_and_keeps_its_files(tmp_path, mods, capsys, method, extra):
    """Was: compose replaced the folder's README.md with PEFT's model card (baked / weight methods) and
    wrote a composition.yaml beside the user's files (unbaked)."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "README.md").write_text("my notes")
    before = tree(mine)
    assert cli_compose(mods, mine, method, *extra) == 2
    err = capsys.readouterr().err
    assert "already exists and is not empty; pass --overwrite" in err and "Traceback" not in err
    assert tree(mine) == before and leftovers(tmp_path) == []


def test_compose_never_writes_into_the_base_model_a_run_or_a_checkpoint(tmp_path, tiny_model_dir, mods, capsys):
    """Was: `--out <base model folder>` wrote adapter_config.json there (transformers may then read the
    base as an adapter folder); `--out RUN` wrote a composition.yaml into the run."""
    run = make_run(tmp_path, tiny_model_dir, mods["a"])
    other = make_run(tmp_path / "o", tiny_model_dir, mods["b"], name="other")   # a run compose does not read
    watched = [tiny_model_dir, run, other, mods["a"], mods["b"]]
    before = [tree(p) for p in watched]
    outs = [tiny_model_dir, tiny_model_dir / "comp", run, run / "comp", run / "checkpoints" / "step-2",
            run / "checkpoints" / "step-2" / "comp", other, other / "comp", mods["b"], mods["b"] / "comp",
            mods["a"], run.parent / ".models"]          # mods["a"]: an adapter folder this compose does not read
    for method, bake in (("output_sum", []), ("weight_avg", [])):
        for out in outs:
            for extra in ([], ["--overwrite"]):
                rc = cli_compose(mods, out, method, *bake, *extra, adapters=[f"a={run}", f"b={mods['b']}"])
                err = capsys.readouterr().err
                assert rc == 2, (out, extra)
                assert "which this command reads from" in err or "run directory" in err \
                    or (not extra and "not empty" in err) or "not an earlier output of neurosym compose" in err, err
                assert "Traceback" not in err
    assert [tree(p) for p in watched] == before
    assert not (tiny_model_dir / "adapter_config.json").exists() and not (run / MANIFEST).exists()


def test_compose_through_a_symlink_is_refused(tmp_path, tiny_model_dir, mods, capsys):
    run = make_run(tmp_path, tiny_model_dir, mods["a"])
    links = tmp_path / "links"
    links.mkdir()
    (links / "to_base").symlink_to(tiny_model_dir, target_is_directory=True)
    (links / "to_run").symlink_to(run, target_is_directory=True)
    (links / "to_ckpt").symlink_to(run / "checkpoints" / "step-2", target_is_directory=True)
    empty = tmp_path / "empty"
    empty.mkdir()
    (links / "to_empty").symlink_to(empty, target_is_directory=True)
    before = [tree(tiny_model_dir), tree(run)]
    outs = [links / n for n in ("to_base", "to_run", "to_ckpt", "to_empty")]     # the link itself: refused
    outs += [links / n / "comp" for n in ("to_base", "to_run", "to_ckpt")]       # through it into what is read
    for out in outs:
        for extra in ([], ["--overwrite"]):
            assert cli_compose(mods, out, "weight_avg", *extra) == 2, out
            err = capsys.readouterr().err
            assert err.startswith("error: --out ") and "Traceback" not in err
    assert [tree(tiny_model_dir), tree(run)] == before and list(empty.iterdir()) == []
    assert cli_compose(mods, links / "to_empty" / "comp", "weight_avg") == 0      # a link to a folder of yours
    assert (empty / "comp" / "adapter_model.safetensors").exists()


def test_compose_out_an_existing_file_is_a_message(tmp_path, mods, capsys):
    """Was: FileExistsError traceback."""
    f = tmp_path / "notes.txt"
    f.write_text("mine")
    for extra in ([], ["--overwrite"]):
        assert cli_compose(mods, f, "output_sum", *extra) == 2
        err = capsys.readouterr().err
        assert "is a file" in err and "Traceback" not in err
    assert f.read_text() == "mine"


def test_compose_overwrite_replaces_a_previous_composition_whole_and_it_loads(tmp_path, mods, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "weights.bin").write_text("a model of mine")
    assert cli_compose(mods, mine, "output_sum", "--overwrite") == 2       # not an earlier composition
    assert "not an earlier output of neurosym compose" in capsys.readouterr().err
    assert tree(mine) == {"weights.bin": hashlib.sha256(b"a model of mine").hexdigest()}
    out = tmp_path / "comp"
    assert cli_compose(mods, out, "weight_avg") == 0
    assert (out / "adapter_model.safetensors").exists()
    assert cli_compose(mods, out, "output_sum") == 2                        # not without --overwrite
    assert "pass --overwrite" in capsys.readouterr().err
    assert cli_compose(mods, out, "output_sum", "--overwrite") == 0
    assert not (out / "adapter_model.safetensors").exists()                 # the old one is gone, whole
    doc = yaml.safe_load((out / MANIFEST).read_text())
    assert doc["method"] == "output_sum"
    assert all((out / m["path"]).resolve() == mods[m["name"]].resolve() for m in doc["modules"])
    model, _ = load(out, device="cpu")                                      # paths relative to the final folder
    assert sorted(model.base_model.active_adapters) == ["a", "b"]
    assert leftovers(tmp_path) == []
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_compose(mods, empty, "output_sum") == 0 and (empty / MANIFEST).exists()  # an empty folder is taken


def test_a_failed_compose_leaves_nothing_behind(tmp_path, mods, monkeypatch):
    import neurosym.compose.core as core

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(core, "write_manifest", broken)
    with pytest.raises(OSError):
        compose([("a", str(mods["a"])), ("b", str(mods["b"]))], "weight_avg", tmp_path / "w")
    assert not (tmp_path / "w").exists() and leftovers(tmp_path) == []


# ---------------------------------------------------------------------------------------- messages

def test_an_adapter_config_that_is_a_json_list_is_a_message(tmp_path, mods, capsys):
    """Was: AttributeError: 'list' object has no attribute 'get'."""
    bad = tmp_path / "bad"
    shutil.copytree(mods["a"], bad)
    (bad / "adapter_config.json").write_text(json.dumps([{"peft_type": "LORA"}]))
    assert cli_compose(mods, tmp_path / "out", "output_sum", adapters=[f"a={bad}", f"b={mods['b']}"]) == 2
    err = capsys.readouterr().err
    assert str(bad / "adapter_config.json") in err and "expected a JSON object" in err and "got a JSON list" in err
    assert "Traceback" not in err
    with pytest.raises(ComposeError, match="expected a JSON object"):
        load(bad, device="cpu")
    (bad / "adapter_config.json").write_text(json.dumps({"peft_type": 3}))
    with pytest.raises(ComposeError, match="'peft_type' is 3"):
        load(bad, device="cpu")


def _edit_manifest(src: Path, dst: Path, edit) -> Path:
    shutil.copytree(src, dst)
    doc = yaml.safe_load((dst / MANIFEST).read_text())
    edit(doc)
    (dst / MANIFEST).write_text(yaml.safe_dump(doc, sort_keys=False))
    return dst


@pytest.mark.parametrize("edit,where", [
    (lambda d: d["base"].update(nmae_or_path="x"), "base.nmae_or_path: unknown key"),
    (lambda d: d["base"].pop("name_or_path"), "base.name_or_path: missing"),
    (lambda d: d["base"].update(dtype="fp8"), "base.dtype: must be one of"),
    (lambda d: d["base"].update(trust_remote_code="yes"), "base.trust_remote_code: must be bool"),
    (lambda d: d.update(base=["tiny"]), "base: must be a mapping"),
    (lambda d: d["modules"][0].pop("sha256"), r"modules\[0\].sha256: missing"),
    (lambda d: d["modules"][0].update(weight="heavy"), r"modules\[0\].weight: must be"),
    (lambda d: d.update(modules={"a": 1}), "modules: must be a non-empty list"),
    (lambda d: d.update(kind="prefix"), "kind: must be lora or ia3"),
])
def test_a_bad_manifest_is_a_message_naming_the_file_and_key(tmp_path, mods, capsys, edit, where):
    """Was: TypeError (BaseRef() got an unexpected keyword argument), KeyError..."""
    comp = compose([("a", str(mods["a"])), ("b", str(mods["b"]))], "output_sum", tmp_path / "comp")
    # a copy beside the original: module paths (relative) still lead to the modules
    bad = _edit_manifest(comp, tmp_path / "bad", edit)
    with pytest.raises(ComposeError, match=where) as exc:
        load(bad, device="cpu")
    assert str(bad / MANIFEST) in str(exc.value) and "re-create it with neurosym compose" in str(exc.value)
    assert main(["generate", str(bad), "--prompt", "hi", "--conn", "none", "--max-new-tokens", "2"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(bad / MANIFEST) in err


# ---------------------------------------------------------------------------------------- code that runs

def test_trust_remote_code_from_a_manifest_needs_the_flag(tmp_path, mods, capsys):
    """Was: a received composition.yaml with base.trust_remote_code: true loaded its base folder's code."""
    comp = compose([("a", str(mods["a"])), ("b", str(mods["b"]))], "output_sum", tmp_path / "comp")
    trusting = _edit_manifest(comp, tmp_path / "trusting", lambda d: d["base"].update(trust_remote_code=True))
    with pytest.raises(ComposeError, match="trust_remote_code: true.*--trust-remote-code"):
        load(trusting, device="cpu")
    gen = ["generate", str(trusting), "--prompt", "hi", "--conn", "none", "--max-new-tokens", "2"]
    assert main(gen) == 2
    err = capsys.readouterr().err
    assert "base.trust_remote_code" in err and "--trust-remote-code" in err and "Traceback" not in err
    assert main(gen + ["--trust-remote-code"]) == 0        # the user said so (the tiny base has no code)
    model, _ = load(trusting, device="cpu", trust_remote_code=True)
    assert sorted(model.base_model.active_adapters) == ["a", "b"]


def test_trust_remote_code_from_a_runs_config_needs_the_flag(tmp_path, tiny_model_dir, mods, capsys):
    run = make_run(tmp_path, tiny_model_dir, mods["a"], trust=True)
    args = [f"a={run}", f"b={mods['b']}"]
    assert cli_compose(mods, tmp_path / "w", "weight_avg", adapters=args) == 2   # would load the base
    err = capsys.readouterr().err
    assert "config.yaml" in err and "--trust-remote-code" in err and not (tmp_path / "w").exists()
    with pytest.raises(ComposeError, match="--trust-remote-code"):
        load(run, device="cpu")
    assert cli_compose(mods, tmp_path / "w", "weight_avg", "--trust-remote-code", adapters=args) == 0
    assert cli_compose(mods, tmp_path / "u", "output_sum", adapters=args) == 0   # a manifest only: no code runs
    assert yaml.safe_load((tmp_path / "u" / MANIFEST).read_text())["base"]["trust_remote_code"] is True
    with pytest.raises(ComposeError, match="--trust-remote-code"):
        load(tmp_path / "u", device="cpu")


def test_help_says_what_runs_code(capsys):
    for verb in (["generate"], ["conn", "run"], ["compose"]):
        with pytest.raises(SystemExit):
            main([*verb, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        if verb == ["compose"]:
            assert "--trust-remote-code" in text
        else:
            assert "sys.path" in text and "current folder" in text and "runs its code" in text
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    assert "--trust-remote-code" in capsys.readouterr().out
