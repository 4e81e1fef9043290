"""`data.train_on` (last turn, every assistant turn, everything) and packing without attention leaking
across example boundaries, proven on the tiny Llama: an example's logits packed with others equal its
logits alone."""
import pytest
import torch

from neurosym.config.schema import DataConfig
from neurosym.data import Example, Renderer, forward_inputs, make_micro_batches
from neurosym.data.batching import collate, pack
from neurosym.data.render import IGNORE
from neurosym.data.preview import preview_lines

CONV = Example((("system", "Be exact."), ("user", "1+1?"), ("assistant", "2"), ("user", "2+2?")), "4")


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _trained(tok, enc) -> list[str]:
    """The trained spans, decoded, in order."""
    spans, cur = [], []
    for t, lab in zip(enc.input_ids, enc.labels):
        if lab != IGNORE:
            cur.append(t)
        elif cur:
            spans.append(tok.decode(cur))
            cur = []
    return spans + ([tok.decode(cur)] if cur else [])


@pytest.mark.parametrize("template", [True, False])
def test_train_on_modes(tokenizer, template):
    saved = tokenizer.chat_template
    if not template:
        tokenizer.chat_template = None
    try:
        last = Renderer(tokenizer, 256, None, "last_turn").encode(CONV)
        every = Renderer(tokenizer, 256, None, "assistant").encode(CONV)
        allt = Renderer(tokenizer, 256, None, "all").encode(CONV)
    finally:
        tokenizer.chat_template = saved
    assert _trained(tokenizer, last) == ["4</s>"]
    # the earlier assistant turn is trained as the template renders it (end-of-turn included)
    assert _trained(tokenizer, every) == (["2</s>\n", "4</s>"] if template else ["2\n", "4</s>"])
    assert tokenizer.decode(every.input_ids) == tokenizer.decode(last.input_ids)
    assert allt.labels == allt.input_ids and allt.input_ids == last.input_ids
    single = Example((("user", "q"),), "a")  # without earlier turns `assistant` is the last turn
    assert Renderer(tokenizer, 64, "S", "assistant").encode(single) == Renderer(tokenizer, 64, "S").encode(single)


def test_train_on_assistant_truncation_keeps_the_response(tokenizer):
    long = Example((("user", "x" * 100), ("assistant", "y" * 40), ("user", "z")), "answer")
    enc = Renderer(tokenizer, 32, None, "assistant").encode(long)
    assert len(enc.input_ids) == 32 and enc.truncated and _trained(tokenizer, enc)[-1] == "answer</s>"


def test_pack_fills_rows_without_exceeding_max_length():
    lengths = [30, 10, 25, 5, 40, 20, 12]
    rows = pack(lengths, 50)
    assert sorted(i for r in rows for i in r) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in r) <= 50 for r in rows) and len(rows) == 3
    assert sorted(sum(lengths[i] for i in r) for r in rows) == [45, 47, 50]  # balanced, not 50/50/42
    # 8 x 140 tokens at max_length 1024: two rows of 560, not 1022 + 98 (padded to 1022)
    assert [sum(140 for _ in r) for r in pack([140] * 8, 1024)] == [560, 560]
    with pytest.raises(ValueError, match="longer than max_length"):
        pack([51], 50)


def _examples(n):
    return [Example((("user", f"What is {i} plus {i * 7 % 13}? " + "pad " * (i % 4)),), f"It is {i + i * 7 % 13}.")
            for i in range(n)]


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    from transformers import AutoModelForCausalLM
    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    return m.eval()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_packed_logits_equal_logits_alone(tokenizer, model, attn):
    model.set_attn_implementation(attn)
    r = Renderer(tokenizer, 512, "Add the numbers.")
    encs = [r.encode(ex) for ex in _examples(5)]
    (batch,) = make_micro_batches(encs, 4, tokenizer.pad_token_id, packing=True, max_length=512)
    rows = pack([len(e.input_ids) for e in encs], 512)
    assert batch["input_ids"].shape[0] == len(rows) < 4 and max(len(row) for row in rows) >= 3
    with torch.no_grad():
        packed = model(**forward_inputs(batch)).logits
        leaky = model(input_ids=batch["input_ids"]).logits  # plain causal attention over the row
    leak = 0.0
    for k, row in enumerate(rows):
        at = 0
        for i in row:
            n = len(encs[i].input_ids)
            with torch.no_grad():
                alone = model(input_ids=torch.tensor([encs[i].input_ids])).logits[0]
            torch.testing.assert_close(packed[k, at:at + n], alone, rtol=1e-4, atol=1e-5)
            leak = max(leak, float((leaky[k, at:at + n] - alone).abs().max()))
            at += n
    assert leak > 1e-2  # the check can see a leak: without the mask the later examples differ


def test_packed_loss_equals_padded_loss(tokenizer, model):
    from neurosym.model.losses import token_losses
    model.set_attn_implementation("sdpa")
    r = Renderer(tokenizer, 256, "Add.", "all")  # `all` trains every token: the boundary token must not be
    encs = [r.encode(ex) for ex in _examples(7)]
    with torch.no_grad():
        padded = [token_losses(model, b) for b in make_micro_batches(encs, 2, tokenizer.pad_token_id)]
        packed_batches = make_micro_batches(encs, 2, tokenizer.pad_token_id, packing=True, max_length=256)
        packed = [token_losses(model, b) for b in packed_batches]
    assert len(packed_batches) < 4
    total = lambda res: (sum(float(l.sum()) for l, _ in res), sum(int(m.sum()) for _, m in res))
    (lp, np_), (lq, nq) = total(padded), total(packed)
    assert np_ == nq and abs(lp - lq) < 1e-3 * nq
    assert sum(int(b["attention_mask"].sum()) for b in packed_batches) == sum(len(e.input_ids) for e in encs)


def test_preview_shows_train_on_and_packed_rows(tokenizer):
    cfg = DataConfig(train="x.jsonl", max_length=128, packing=True, train_on="assistant")
    lines = preview_lines(tokenizer, [CONV] + _examples(4), cfg, n=5, color=False)
    assert lines[0].endswith("loss on: assistant; packed rows")
    rows = [l for l in lines if l.startswith("=== row")]
    assert rows and sum(int(l.split(": ")[1].split()[0]) for l in rows) == 5
    assert any("[[2</s>\n]]" in l for l in lines) and any("positions 0.." in l for l in lines)
    plain = preview_lines(tokenizer, [CONV], DataConfig(train="x.jsonl"), n=1, color=False)
    assert plain[0].endswith("loss on: last_turn") and "[[4</s>]]" in plain[2] and "[[2" not in plain[2]


def test_packed_multi_source_run_trains_evaluates_and_previews(tmp_path, tiny_model_dir, capsys):
    import json as _json

    from neurosym.cli import main
    from tests.support.jobs import arithmetic_rows, write_config, write_rows
    chats = write_rows(tmp_path / "chats.jsonl", [
        {"conversations": [{"from": "human", "value": f"{i}+1?"}, {"from": "gpt", "value": f"{i + 1}"},
                           {"from": "human", "value": f"{i}+2?"}, {"from": "gpt", "value": f"{i + 2}"}]}
        for i in range(6)])
    plain = write_rows(tmp_path / "plain.jsonl", arithmetic_rows(10))
    cfg = write_config(tmp_path, tiny_model_dir, train={"max_steps": 3, "save_every": 0, "eval_every": 0},
                       data={"train": [{"path": str(plain), "weight": 2}, {"path": str(chats)}],
                             "eval": {"path": str(chats)}, "packing": True, "train_on": "assistant",
                             "max_length": 256})
    assert main(["preview", str(cfg), "-n", "4", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert "loss on: assistant; packed rows" in out and "=== row 0" in out
    assert main(["train", str(cfg)]) == 0
    run = tmp_path / "runs" / "job"
    events = [_json.loads(l) for l in (run / "events.jsonl").read_text().splitlines()]
    losses = [e["loss"] for e in events if e["kind"] == "train"]
    assert len(losses) == 3 and all(l == l and l > 0 for l in losses)
    state = _json.loads(next(run.glob("checkpoints/step-3/state.json")).read_text())
    assert state["components"]["batches"]["sampler"]["kind"] == "mixture"
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    assert _json.loads(capsys.readouterr().out)["split"] == str(chats)


GEMMA_LIKE = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
              "{% for m in messages %}<{{ m['role'] }}>{{ m['content'] }}</s>{% endfor %}"
              "{% if add_generation_prompt %}<assistant>{% endif %}")
DROPS_OLD_TURNS = ("{% for m in messages %}{% if loop.last or m['role'] != 'assistant' %}<{{ m['role'] }}>"
                   "{{ m['content'] }}\n{% endif %}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}")


def test_examples_a_template_refuses_are_found_before_training(tokenizer):
    from neurosym.data import DataError, TrainSet
    saved = tokenizer.chat_template
    tokenizer.chat_template = GEMMA_LIKE
    try:
        own = Example((("system", "S"), ("user", "q")), "a", "d.jsonl:2")
        fine = [Example((("user", f"q{i}"),), "a", f"d.jsonl:{i + 3}") for i in range(3)]
        data = TrainSet([fine[0], own] + fine[1:], [(0, 2, 1.0, "d.jsonl"), (2, 4, 2.0, "e.jsonl")])
        r = Renderer(tokenizer, 64, None)
        with pytest.raises(DataError, match="d.jsonl:2: the tokenizer's chat template refuses this example"):
            r.check(data)
        kept, errors = r.check(data, on_error="skip")
        assert list(kept) == fine and kept.parts == [(0, 1, 1.0, "d.jsonl"), (1, 3, 2.0, "e.jsonl")]
        assert len(errors) == 1 and "System role not supported" in errors[0]
        tokenizer.chat_template = DROPS_OLD_TURNS
        with pytest.raises(DataError, match="renders a conversation turn by turn"):
            Renderer(tokenizer, 64, None, "assistant")
        Renderer(tokenizer, 64, None, "last_turn")  # fine for the last turn only
    finally:
        tokenizer.chat_template = saved


def test_example_losses_mean_the_same_packed_or_padded(tokenizer, model):
    from neurosym.data.batching import example_losses
    from neurosym.model.losses import token_losses
    model.set_attn_implementation("sdpa")
    r = Renderer(tokenizer, 256, "Add.")
    encs = [r.encode(ex) for ex in _examples(6)]
    out = {}
    for packing in (False, True):
        pairs = []
        with torch.no_grad():
            for b in make_micro_batches(encs, 2, tokenizer.pad_token_id, packing=packing, max_length=256):
                pairs += example_losses(*token_losses(model, b), b)
        out[packing] = [l for _, l in sorted(pairs)]
    assert len(out[True]) == 6 and out[True] == pytest.approx(out[False], abs=1e-5)
