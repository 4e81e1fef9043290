import json

import pytest

from neurosym.config.schema import DataConfig
from neurosym.data import DataError, EpochSampler, Renderer, collate, load_examples
from neurosym.data.render import IGNORE
from tests.support.jobs import write_rows


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def _cfg(path, **kw):
    return DataConfig(train=str(path), **kw)


def test_prompt_response_alpaca_and_chat_formats(tmp_path):
    path = write_rows(tmp_path / "mixed.jsonl", [
        {"prompt": "2+2?", "response": "4", "system": "Be brief."},
        {"instruction": "Add", "input": "1 and 2", "output": "3"},
        {"instruction": "Say hi", "output": "hi"},
        {"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "a"},
                      {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"},
                      {"role": "assistant", "content": "d"}]},
    ])
    examples, report = load_examples(path, _cfg(path))
    assert [e.prompt for e in examples] == ["2+2?", "Add\n\n1 and 2", "Say hi", "c"]
    assert [e.response for e in examples] == ["4", "3", "hi", "d"]
    assert examples[0].system == "Be brief." and examples[3].system == "S"
    assert examples[3].messages[1:3] == (("user", "a"), ("assistant", "b"))
    assert examples[0].source == f"{path}:1" and report.loaded == 4 and report.skipped == 0


def test_custom_field_names(tmp_path):
    path = write_rows(tmp_path / "d.jsonl", [{"question": "q", "answer": "a"}])
    examples, _ = load_examples(path, _cfg(path, format="prompt_response",
                                           fields={"prompt": "question", "response": "answer"}))
    assert (examples[0].prompt, examples[0].response) == ("q", "a")


@pytest.mark.parametrize("line, reason", [
    ('{"prompt": "p", "response": "r"', "bad JSON"),
    ('{"prompt": "p"}', "cannot tell the format"),
    ('{"prompt": "p", "response": "  "}', "empty response"),
    ('{"messages": [{"role": "user", "content": "x"}]}', "must end with an assistant message"),
    ('["a list"]', "expected a JSON object"),
])
def test_bad_line_is_reported_with_file_and_line(tmp_path, line, reason):
    path = write_rows(tmp_path / "bad.jsonl", [{"prompt": "ok", "response": "fine"}, line])
    with pytest.raises(DataError) as err:
        load_examples(path, _cfg(path))
    assert f"{path}:2" in str(err.value) and reason in str(err.value) and "on_error: skip" in str(err.value)


def test_skip_mode_counts_bad_lines(tmp_path):
    rows = [{"prompt": "ok", "response": "fine"}, "{oops", {"prompt": "p", "response": ""}, {"prompt": "a", "response": "b"}]
    path = write_rows(tmp_path / "bad.jsonl", rows)
    examples, report = load_examples(path, _cfg(path, on_error="skip"))
    assert len(examples) == 2 and report.skipped == 2
    assert report.errors[0].startswith(f"{path}:2") and report.errors[1].startswith(f"{path}:3")


def test_hf_datasets_folder_and_parquet(tmp_path):
    import datasets
    rows = [{"instruction": f"i{k}", "output": f"o{k}"} for k in range(3)]
    ds = datasets.Dataset.from_list(rows)
    ds.save_to_disk(str(tmp_path / "ds"))
    ds.to_parquet(str(tmp_path / "d.parquet"))
    for path in (tmp_path / "ds", tmp_path / "d.parquet"):
        examples, _ = load_examples(path, _cfg(path))
        assert [e.response for e in examples] == ["o0", "o1", "o2"]


def test_loss_mask_covers_exactly_the_response_and_eos(tmp_path, tokenizer):
    path = write_rows(tmp_path / "d.jsonl", [{"prompt": "What is 2+3?", "response": "The answer is 5."}])
    ex = load_examples(path, _cfg(path))[0][0]
    for template in (True, False):
        tokenizer_t = tokenizer
        saved = tokenizer.chat_template
        if not template:
            tokenizer.chat_template = None
        try:
            enc = Renderer(tokenizer_t, 128, "Solve it.").encode(ex)
        finally:
            tokenizer.chat_template = saved
        trained = [t for t in enc.labels if t != IGNORE]
        assert tokenizer.decode(trained) == "The answer is 5.</s>"
        n_prompt = enc.labels.index(trained[0])
        prompt = tokenizer.decode(enc.input_ids[:n_prompt])
        assert "Solve it." in prompt and "What is 2+3?" in prompt
        assert all(t == IGNORE for t in enc.labels[:n_prompt])
        assert ("[SYS]" in prompt) == template and ("User: " in prompt) == (not template)


def test_example_system_field_wins_over_task_prompt(tokenizer):
    from neurosym.data import Example
    ex = Example((("system", "Own."), ("user", "q")), "a")
    text = Renderer(tokenizer, 64, "Task prompt.").prompt_text(ex)
    assert "Own." in text and "Task prompt." not in text


def test_truncation_keeps_the_response(tokenizer):
    from neurosym.data import Example
    ex = Example((("user", "x" * 200),), "answer 42")
    enc = Renderer(tokenizer, 32, None).encode(ex)
    assert len(enc.input_ids) == 32 and enc.truncated
    assert tokenizer.decode([t for t in enc.labels if t != IGNORE]) == "answer 42</s>"


def test_collate_pads_right_with_ignored_labels(tokenizer):
    from neurosym.data import Example
    r = Renderer(tokenizer, 64, None)
    batch = collate([r.encode(Example((("user", "a"),), "b")), r.encode(Example((("user", "long one"),), "c"))],
                    tokenizer.pad_token_id)
    assert batch["input_ids"].shape[0] == 2
    assert batch["attention_mask"][0].sum() < batch["attention_mask"][1].sum()
    assert (batch["labels"][0][batch["attention_mask"][0] == 0] == IGNORE).all()


def test_sampler_is_deterministic_and_resumes_across_epochs():
    a = EpochSampler(10, seed=7)
    full = [a.take(4) for _ in range(8)]  # 32 draws: crosses three epoch boundaries
    b = EpochSampler(10, seed=7)
    first = [b.take(4) for _ in range(3)]  # 12 draws: already in epoch 1
    state = json.loads(json.dumps(b.state_dict()))
    c = EpochSampler(10, seed=7)
    c.load_state_dict(state)
    assert first + [c.take(4) for _ in range(5)] == full
    assert sorted(sum(full, [])[:10]) == list(range(10))  # each epoch is a permutation
    assert sum(full, [])[:10] != sum(full, [])[10:20]     # and epochs differ
    with pytest.raises(ValueError, match="training file or run.seed changed"):
        EpochSampler(11, seed=7).load_state_dict(state)
