"""The rows' common prefix run once (neurosym.model.shared_prefix): the same losses, gradients and
argmax as the full pass, less compute, and used only where that holds."""
from __future__ import annotations

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM, AutoTokenizer

from neurosym.config.schema import load_config
from neurosym.data import Example
from neurosym.data.batching import collate
from neurosym.data.render import Renderer
from neurosym.model.compute import ComputeMeter
from neurosym.model.losses import _token_losses
from neurosym.model.shared_prefix import MIN_SHARED, has_active_dropout, shared_length, shares_prefix
from tests.support.jobs import arithmetic_rows, write_config

SYSTEM = "Answer with the sum only. Write it in digits, with no words and no full stop at the end."


def lora_model(model_dir, dropout: float = 0.0):
    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=4, lora_alpha=8, lora_dropout=dropout, target_modules=["q_proj", "v_proj"]))
    for name, p in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)  # a LoRA that changes the keys and values of the prefix
    return model


def batch(model_dir, rows=6, system=SYSTEM):
    tok = AutoTokenizer.from_pretrained(model_dir)
    renderer = Renderer(tok, 256, system)
    return collate([renderer.encode(Example((("user", r["prompt"]),), r["response"])) for r in arithmetic_rows(rows)],
                   tok.pad_token_id)


def test_the_shared_prefix_gives_the_full_passs_losses_gradients_and_argmax_for_less_compute(tiny_model_dir):
    model, b = lora_model(tiny_model_dir), batch(tiny_model_dir)
    k = shared_length(b)
    rows, length = b["input_ids"].shape
    assert k >= len(SYSTEM) > MIN_SHARED  # the template and the system prompt, at least
    params = [p for p in model.parameters() if p.requires_grad]
    meter = ComputeMeter(model)
    model.train()
    got = {}
    for share in (False, True):
        with meter.part(training=True) as used:
            losses, mask, exact = _token_losses(model, b, share)
            (losses.sum() / mask.sum()).backward()
        got[share] = (losses.sum(1).detach(), mask.sum(1), exact, [p.grad.clone() for p in params], dict(used))
        for p in params:
            p.grad = None
    (full, n_full, ex_full, g_full, c_full), (part, n_part, ex_part, g_part, c_part) = got[False], got[True]
    assert torch.equal(n_full, n_part) and torch.equal(ex_full, ex_part)
    assert torch.allclose(full, part, rtol=1e-5, atol=1e-5)
    assert max(float((a - c).abs().max()) for a, c in zip(g_full, g_part)) < 1e-6 < max(float(a.abs().max()) for a in g_full)
    assert c_full["train_tokens"] == rows * length
    assert c_part["train_tokens"] == k + rows * (length - k)  # the prefix once, each row's own part


def test_the_shared_length_is_read_from_the_ids_and_refuses_what_it_cannot_share(tiny_model_dir):
    b = batch(tiny_model_dir)
    k = shared_length(b)
    assert bool((b["input_ids"][:, :k + 1] == b["input_ids"][:1, :k + 1]).all())
    assert not bool((b["input_ids"][:, k + 1] == b["input_ids"][0, k + 1]).all())
    assert shared_length(batch(tiny_model_dir, rows=1)) == 0                      # one row: nothing to share
    assert shared_length(batch(tiny_model_dir, system=None)) < k                # a short prompt shares less
    left = dict(b, attention_mask=b["attention_mask"].flip(1), input_ids=b["input_ids"].flip(1))
    assert shared_length(left) == 0                                             # padding first
    assert shared_length(dict(b, labels=b["input_ids"].clone())) == 0            # trained prompt tokens (train_on: all)
    assert shared_length(dict(b, position_ids=torch.zeros_like(b["input_ids"]))) == 0  # packed rows
    labels = b["labels"].clone()
    labels[:, 3] = 5
    assert shared_length(dict(b, labels=labels)) == 0                            # a label inside the first 8 tokens


def test_a_job_shares_only_where_it_is_sound(tmp_path, tiny_model_dir):
    cfg = load_config(write_config(tmp_path, tiny_model_dir))
    one = type("Runtime", (), {"world_size": 1})()
    two = type("Runtime", (), {"world_size": 2})()
    model = lora_model(tiny_model_dir)
    assert shares_prefix(cfg, one, model) and not shares_prefix(cfg, two, model)
    for key, value in (("gradient_checkpointing", True), ("shared_prefix", False)):
        off = cfg.model_copy(update={"train": cfg.train.model_copy(update={key: value})})
        assert not shares_prefix(off, one, model), key
    packed = cfg.model_copy(update={"data": cfg.data.model_copy(update={"packing": True})})
    assert not shares_prefix(packed, one, model)
    assert not has_active_dropout(model) and has_active_dropout(lora_model(tiny_model_dir, dropout=0.1))


def test_a_job_trains_the_same_adapter_with_the_shared_prefix_as_without_for_fewer_tokens(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    from neurosym.observe.events import read_events
    from neurosym.train import train

    adapters, tokens = {}, {}
    for share in (True, False):
        path = write_config(tmp_path / str(share), tiny_model_dir, lora={"dropout": 0.0},
                            data={"system_prompt": SYSTEM, "max_length": 256},
                            train={"shared_prefix": share, "max_steps": 4, "eval_every": 0, "save_every": 0})
        result = train(load_config(path), quiet=True)
        adapters[share] = load_file(result.run_dir / "checkpoints" / "step-4" / "adapter_model.safetensors")
        tokens[share] = sum(e["compute"]["train_tokens"] for e in read_events(result.run_dir / "events.jsonl")
                            if e.get("kind") == "train")
    assert tokens[True] < 0.6 * tokens[False]  # most of each row is the system prompt
    assert adapters[True].keys() == adapters[False].keys()
    for name, tensor in adapters[True].items():
        assert torch.allclose(tensor, adapters[False][name], atol=1e-5), name


def test_generation_prefills_the_common_prefix_once_and_answers_as_the_full_prefill():
    """The testbed student under a long system prompt: the same greedy answers, token for token, for
    fewer positions computed."""
    import sys
    from pathlib import Path

    from neurosym.model.generation import generate_batched
    from neurosym.model.shared_prefix import common_length

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "experiments" / "testbed"))
    import world as W

    student = root / "experiments" / "testbed" / "student"
    model, tok = AutoModelForCausalLM.from_pretrained(student), AutoTokenizer.from_pretrained(student)
    renderer = Renderer(tok, 128, W.hand_prompt())
    rows = W.task_splits(W.make_world(0), 0.5)["test"][:20]
    prompts = [renderer.generation_ids(Example((("user", r["prompt"]),), r["response"])) for r in rows]
    assert len({len(p) for p in prompts}) > 3  # prompts of several lengths: the padding between differs
    k = common_length(prompts)
    assert k > len(W.hand_prompt())
    # rows that start otherwise, among the others: their own system message, a prompt cut at its start
    own = renderer.generation_ids(Example((("system", "Reply."), ("user", rows[0]["prompt"])), "x"))
    cut = renderer.generation_ids(Example((("user", "Say it again. " * 12 + rows[1]["prompt"]),), "x"))
    assert common_length([prompts[0], own]) == 0 and common_length([prompts[0], cut]) == 0
    prompts[3:3], prompts[11:11] = [own], [cut, own]
    rows[3:3], rows[11:11] = [rows[0]], [rows[1], rows[0]]
    meter = ComputeMeter(model)
    got = {}
    for share in (False, True):
        with meter.part() as used:
            out = generate_batched(model, tok, prompts, 16, batch_size=8, share_prefix=share)
        got[share] = ([g.token_ids for g in out], dict(used))
    assert got[True][0] == got[False][0]
    right = sum(g.text.strip() == r["response"] for g, r in zip(out, rows))
    assert right >= 10  # the student answers these: the answers compared are not all the same failure
    assert got[True][1]["forward_tokens"] < 0.6 * got[False][1]["forward_tokens"]
    # (decoding runs per group of rows that start alike: each group stops when its own rows end)
    assert sum(got[True][1].values()) < 0.7 * sum(got[False][1].values())
    sampled = [[g.token_ids for g in generate_batched(model, tok, prompts, 8, batch_size=8, temperature=1.0, seed=3,
                                                      share_prefix=share)] for share in (False, True)]
    assert sampled[0] == sampled[1]  # sampling is left as it was: its draws depend on the rows drawn together
