"""Each data source (train and eval) carries its own format and fields, data.format/data.fields being
only the default; the model card says what system messages the training rows carried."""
import json

import pytest

from neurosym.cli import main
from neurosym.config.schema import load_config
from neurosym.data import DataError, load_examples
from neurosym.observe.prompt_history import data_system_summary, learned_prompt_card
from tests.support.jobs import arithmetic_rows, write_config, write_rows


def _chat(path, rows, system=None):
    sys_msg = [{"role": "system", "content": system}] if system else []
    return write_rows(path, [{"messages": sys_msg + [{"role": "user", "content": r["prompt"]},
                                                     {"role": "assistant", "content": r["response"]}]}
                             for r in rows])


def test_a_chat_eval_beside_renamed_training_fields(tmp_path, tiny_model_dir):
    """The training file needs data.format/data.fields; the chat eval file carries its own format."""
    train = write_rows(tmp_path / "q.jsonl", [{"q": r["prompt"], "a": r["response"]} for r in arithmetic_rows(12)])
    chat = _chat(tmp_path / "chat_eval.jsonl", arithmetic_rows(4, start=300))
    data = {"train": str(train), "format": "prompt_response", "fields": {"prompt": "q", "response": "a"},
            "eval": {"path": str(chat), "format": "chat"}}
    cfg_path = write_config(tmp_path, tiny_model_dir, data=data, train={"max_steps": 2, "eval_every": 2})
    cfg = load_config(cfg_path)
    assert [s.format for s in cfg.data.sources("eval")] == ["chat"]
    assert cfg.data.sources("eval")[0].fields.prompt == "prompt"  # not the training file's renames
    evals, report = load_examples(cfg.data.eval, cfg.data)
    assert len(evals) == 4 and report.formats == {"chat": 4}
    assert main(["train", str(cfg_path), "--quiet"]) == 0
    events = [json.loads(l) for l in open(tmp_path / "runs" / "job" / "events.jsonl")]
    assert [e["step"] for e in events if e["kind"] == "eval" and "eval_loss" in e] == [0, 2]


def test_an_eval_file_read_with_the_training_format_says_how_to_give_it_its_own(tmp_path):
    chat = _chat(tmp_path / "chat_eval.jsonl", arithmetic_rows(2))
    cfg = load_config(write_config(tmp_path, "org/m", data={"format": "prompt_response", "eval": str(chat)}))
    with pytest.raises(DataError) as err:
        load_examples(cfg.data.eval, cfg.data)
    assert "read as format: prompt_response" in str(err.value)
    assert "data.eval: {path: ..., format: auto}" in str(err.value)


def test_per_source_fields_in_a_training_mix(tmp_path):
    a = write_rows(tmp_path / "a.jsonl", [{"question": r["prompt"], "answer": r["response"]} for r in arithmetic_rows(3)])
    b = write_rows(tmp_path / "b.jsonl", arithmetic_rows(2))
    cfg = load_config(write_config(tmp_path, "org/m", data={"train": [
        {"path": str(a), "format": "prompt_response", "fields": {"prompt": "question", "response": "answer"}},
        {"path": str(b)}]}))
    examples, report = load_examples(cfg.data.train, cfg.data)
    assert len(examples) == 5 and examples[0].prompt == "What is 0 plus 0?"


def test_model_card_says_what_system_messages_the_data_carried(tmp_path, tiny_model_dir):
    chat = _chat(tmp_path / "train_chat.jsonl", arithmetic_rows(12), system="You add numbers.")
    cfg_path = write_config(tmp_path, tiny_model_dir, data={"train": str(chat), "system_prompt": None},
                            train={"max_steps": 2, "save_every": 2, "eval_every": 0})
    assert main(["train", str(cfg_path), "--quiet"]) == 0
    card = (tmp_path / "runs" / "job" / "checkpoints" / "step-2" / "README.md").read_text()
    assert "trained without a system prompt" not in card
    assert "Every training row carried its own system message, the same in each" in card
    assert "You add numbers." in card
    # merge says the same
    assert main(["merge", str(tmp_path / "runs" / "job"), "--out", str(tmp_path / "merged")]) == 0
    merged = (tmp_path / "merged" / "README.md").read_text()
    assert "Every training row carried its own system message" in merged and "You add numbers." in merged


def test_card_wording_for_each_case():
    class Ex:
        def __init__(self, system):
            self.system = system
    none = data_system_summary([Ex(None)] * 3)
    assert "trained without a system prompt" in learned_prompt_card(None, none)
    mixed = data_system_summary([Ex("A"), Ex("B"), Ex(None)])
    card = learned_prompt_card("Learned.", mixed)
    assert "2 of 3 training rows carried its own system message (2 different ones)" in card
    assert "trained (the 1 rows without their own) under the system prompt below" in card and "Learned." in card
    every = data_system_summary([Ex("A"), Ex("A")])
    assert "reached no training row" in learned_prompt_card("Learned.", every)
    assert "trained without a system prompt" in learned_prompt_card(None)  # unknown data: as before
