"""What `neurosym export` writes: the learned system prompt on every row, TRL's SFTTrainer schemas, and
the training data of a run that has no refined examples (LoRA-only). Synthetic runs, no model."""
from __future__ import annotations

import json
import math

import pytest

from neurosym.cli import main
from neurosym.config.schema import load_config
from neurosym.data import Renderer, load_examples
from neurosym.data.examples import Example
from neurosym.observe.prompt_history import learned_prompt
from neurosym.remake.export import export_records
from neurosym.remake.store import RemakeStore
from neurosym.updates.symbolic.textgrad_step import Rewrite
from neurosym.model.tiny import build_tokenizer
from tests.test_inspect import PROMPTS, full_events, make_run, populate_store, write_checkpoint, write_events

CONFIG_PROMPT = "Add the numbers."


@pytest.fixture
def run(tmp_path):
    """Refined examples in the store; the newest complete checkpoint (step 30) has prompt v2 current."""
    run_dir, cfg = make_run(tmp_path)
    write_events(run_dir, [e for e in full_events() if e["step"] <= 30])
    write_checkpoint(run_dir, 10, [0])
    write_checkpoint(run_dir, 30, [0, 1, 2])
    populate_store(run_dir, cfg)
    return run_dir


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def is_conversational(row: dict) -> bool:
    """TRL's test (trl.data_utils.is_conversational): the first of its dataset keys holds role/content dicts."""
    keys = [k for k in ("prompt", "chosen", "rejected", "completion", "messages") if k in row]
    if not keys:
        return False
    value = row[keys[0]]
    return isinstance(value, list) and bool(value) and all(
        isinstance(m, dict) and set(m) == {"role", "content"} and isinstance(m["content"], str) for m in value)


def test_exported_rows_carry_the_learned_system_prompt(run, tmp_path, capsys):
    assert learned_prompt(run) == PROMPTS[2]  # the prompt of the adapter in the newest complete checkpoint
    out = tmp_path / "refined.jsonl"
    assert main(["export", str(run), "--out", str(out)]) == 0
    assert "carry the run's learned system prompt" in capsys.readouterr().out
    assert [r["system"] for r in read_jsonl(out)] == [PROMPTS[2]] * 3
    back, _ = load_examples(out, load_config(run / "config.yaml").data)
    assert [e.system for e in back] == [PROMPTS[2]] * 3  # so training on the export uses the learned prompt


def test_an_examples_own_system_message_is_kept(tmp_path):
    own = Example((("system", "Be brief."), ("user", "What is 2 plus 3?")), "5", "t:1")
    bare = Example((("user", "earlier"), ("assistant", "ok"), ("user", "What is 4 plus 4?")), "8", "t:2")
    with RemakeStore(tmp_path / "r.sqlite") as store:
        store.add([Rewrite(own.with_prompt("Add 2 and 3.", ""), own, "f")], step=1)
        rows = export_records(store, [bare], only="all", system="Learned.")
        trl = export_records(store, [bare], only="all", system="Learned.", schema="trl")
    assert [r["messages"][0] for r in rows] == [{"role": "system", "content": "Learned."},
                                                {"role": "system", "content": "Be brief."}]
    assert [r["prompt"][0]["content"] for r in trl] == ["Learned.", "Be brief."]
    assert [m["role"] for m in trl[0]["prompt"]] == ["system", "user", "assistant", "user"]
    assert export_records(None, [bare], only="all", system=None, schema="trl")[0]["prompt"][0]["role"] == "user"


@pytest.mark.parametrize("fmt,name", [("jsonl", "trl.jsonl"), ("parquet", "trl.parquet"), ("hf", "trl_hf")])
def test_export_schema_trl_is_what_sfttrainer_takes(run, tmp_path, fmt, name):
    out = tmp_path / name
    assert main(["export", str(run), "--out", str(out), "--format", fmt, "--schema", "trl"]) == 0
    import datasets
    ds = (datasets.load_dataset("json", data_files=str(out), split="train") if fmt == "jsonl" else
          datasets.Dataset.from_parquet(str(out)) if fmt == "parquet" else datasets.load_from_disk(str(out)))
    assert ds.column_names == ["prompt", "completion"] and len(ds) == 3
    store = RemakeStore(run / "remake.sqlite")
    refined = store.examples()
    store.close()
    tok = build_tokenizer()
    renderer = Renderer(tok, 512, CONFIG_PROMPT)
    renderer.system_prompt = PROMPTS[2]
    for row, ex in zip(ds, refined):
        assert is_conversational(row)
        assert row["prompt"] == [{"role": "system", "content": PROMPTS[2]}, {"role": "user", "content": ex.prompt}]
        assert row["completion"] == [{"role": "assistant", "content": ex.response}]
        # SFTTrainer renders prompt + completion with the chat template: the very text neurosym trained on
        rendered = tok.apply_chat_template(row["prompt"], tokenize=False, add_generation_prompt=True)
        assert rendered == renderer.prompt_text(ex)


def test_export_schema_trl_messages(run, tmp_path):
    out = tmp_path / "msgs.jsonl"
    assert main(["export", str(run), "--out", str(out), "--schema", "trl-messages", "--only", "all"]) == 0
    rows = read_jsonl(out)
    assert len(rows) == 27 and all(set(r) == {"messages"} and is_conversational(r) for r in rows)
    assert all([m["role"] for m in r["messages"]] == ["system", "user", "assistant"] for r in rows)
    assert {r["messages"][0]["content"] for r in rows} == {PROMPTS[2]}
    assert rows[0]["messages"][1:] == [{"role": "user", "content": "What is 0 plus 0?"},
                                       {"role": "assistant", "content": "The answer is 0."}]


@pytest.mark.parametrize("schema", ["neurosym", "trl"])
def test_export_of_a_lora_only_run_writes_its_training_data(tmp_path, capsys, schema):
    """Was: `has no remake store yet`, exit 2, for every run that trained without the symbolic route."""
    run_dir, cfg = make_run(tmp_path)
    write_events(run_dir, [e for e in full_events() if e["kind"] == "train" and e["route"] == "lora"][:5])
    out = tmp_path / "train-out.jsonl"
    assert main(["export", str(run_dir), "--out", str(out), "--schema", schema]) == 0
    assert capsys.readouterr().out.splitlines()[0] == \
        f"exported 24 rows (the training data: this run has no refined examples) to {out}"
    assert not (run_dir / "remake.sqlite").exists()
    rows = read_jsonl(out)
    train, _ = load_examples(cfg.data.train, cfg.data)
    if schema == "neurosym":
        assert [(r["prompt"], r["response"], r["system"]) for r in rows] == \
            [(e.prompt, e.response, CONFIG_PROMPT) for e in train]
        assert rows[0]["source"].endswith("train.jsonl:1")
    else:
        assert [r["prompt"] for r in rows] == [[{"role": "system", "content": CONFIG_PROMPT},
                                                {"role": "user", "content": e.prompt}] for e in train]


def test_export_of_a_lora_only_run_whose_data_is_gone_says_so(tmp_path, capsys):
    run_dir, _ = make_run(tmp_path)
    (tmp_path / "data" / "train.jsonl").unlink()
    out = tmp_path / "x.jsonl"
    assert main(["export", str(run_dir), "--out", str(out)]) == 2
    assert "data file not found" in capsys.readouterr().err and not out.exists()


@pytest.mark.parametrize("schema", ["trl", "trl-messages"])
def test_trl_sfttrainer_trains_on_the_export_as_is(run, tmp_path, tiny_model_dir, schema):
    """With TRL installed (not a dependency; skipped otherwise): SFTTrainer takes the exported file with
    no mapping, tokenizes each row to the ids neurosym trained on and, for `trl`, puts the loss on the
    same tokens (the completion)."""
    pytest.importorskip("trl")
    import datasets
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    out = tmp_path / "trl.jsonl"
    assert main(["export", str(run), "--out", str(out), "--schema", schema]) == 0
    ds = datasets.load_dataset("json", data_files=str(out), split="train")
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    args = SFTConfig(output_dir=str(tmp_path / "trl-out"), max_steps=1, per_device_train_batch_size=3,
                     report_to=[], save_strategy="no", use_cpu=True, max_length=512, logging_steps=1)
    trainer = SFTTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model_dir), args=args,
                         train_dataset=ds, processing_class=tok)
    with RemakeStore(run / "remake.sqlite") as store:
        refined = store.examples()
    renderer = Renderer(tok, 512, PROMPTS[2])
    for row, ex in zip(trainer.train_dataset, refined):
        enc = renderer.encode(ex)
        n = len(enc.input_ids)
        assert row["input_ids"][:n] == enc.input_ids  # the template may add its turn separator after EOS
        if schema == "trl":
            trained = [i for i, label in enumerate(row["labels"][:n]) if label != -100]
            assert trained == [i for i, label in enumerate(enc.labels) if label != -100]
    result = trainer.train()
    assert math.isfinite(result.training_loss) and result.training_loss > 0
