"""Record formats detected by `format: auto` (ShareGPT, TRL prompt/completion, chat, alpaca, prompt/response),
field maps for each, and datasets by name through `datasets.load_dataset`."""
import json

import pytest

from neurosym.config.schema import ConfigError, DataConfig, DataSource, load_config
from neurosym.data import DataError, load_examples
from tests.support.jobs import write_config, write_rows

SHAREGPT = {"conversations": [{"from": "system", "value": "Be exact."}, {"from": "human", "value": "1+1?"},
                              {"from": "gpt", "value": "2"}, {"from": "human", "value": "2+2?"},
                              {"from": "gpt", "value": "4"}]}
SHAREGPT_UA = {"conversations": [{"from": "user", "value": "hi"}, {"from": "assistant", "value": "hello"}]}
TRL_PLAIN = {"prompt": "Capital of France?", "completion": " Paris."}
TRL_CONV = {"prompt": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}],
            "completion": [{"role": "assistant", "content": "A."}]}
CHAT = {"messages": [{"role": "user", "content": "u"}, {"role": "assistant", "content": "a"}]}
ALPACA = {"instruction": "Add", "input": "1, 2", "output": "3"}
PR = {"prompt": "p", "response": "r"}


def _load(tmp_path, rows, **kw):
    path = write_rows(tmp_path / "d.jsonl", rows)
    return load_examples(path, DataConfig(train=str(path), **kw))


def test_auto_detects_every_format_in_one_file(tmp_path):
    examples, report = _load(tmp_path, [SHAREGPT, SHAREGPT_UA, TRL_PLAIN, TRL_CONV, CHAT, ALPACA, PR])
    got = [(e.meta["format"], e.system, e.messages[-1][1], e.response) for e in examples]
    assert got == [("sharegpt", "Be exact.", "2+2?", "4"), ("sharegpt", None, "hi", "hello"),
                   ("prompt_completion", None, "Capital of France?", " Paris."),
                   ("prompt_completion", "S", "Q?", "A."), ("chat", None, "u", "a"),
                   ("alpaca", None, "Add\n\n1, 2", "3"), ("prompt_response", None, "p", "r")]
    assert examples[0].messages == (("system", "Be exact."), ("user", "1+1?"), ("assistant", "2"), ("user", "2+2?"))
    assert report.formats == {"sharegpt": 2, "prompt_completion": 2, "chat": 1, "alpaca": 1, "prompt_response": 1}


def test_field_maps_rename_every_key(tmp_path):
    rows = [{"dialog": [{"speaker": "human", "text": "q"}, {"speaker": "gpt", "text": "a"}], "sys": "S"},
            {"turns": [{"speaker": "user", "text": "q2"}, {"speaker": "assistant", "text": "a2"}]},
            {"question": "q3", "answer": "a3"}, {"q": "q4", "gold": "a4"},
            {"task": "t5", "ctx": "c5", "out": "a5"}]
    fields = {"conversations": "dialog", "messages": "turns", "role": "speaker", "content": "text",
              "system": "sys", "prompt": "question", "completion": "answer", "instruction": "task",
              "input": "ctx", "output": "out"}
    examples, _ = _load(tmp_path, rows[:3] + rows[4:], fields=fields)
    assert [(e.prompt, e.response) for e in examples] == [("q", "a"), ("q2", "a2"), ("q3", "a3"), ("t5\n\nc5", "a5")]
    assert examples[0].system == "S"
    examples, _ = _load(tmp_path, [rows[3]], format="prompt_response", fields={"prompt": "q", "response": "gold"})
    assert (examples[0].prompt, examples[0].response) == ("q4", "a4")


@pytest.mark.parametrize("row, reason", [
    ({"conversations": [{"from": "human", "value": "q"}]}, "must end with an assistant message"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "function_call", "value": "x"}]},
     "role 'function_call' is not supported"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "system", "value": "s"},
                        {"from": "gpt", "value": "a"}]}, "only allowed first"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "human", "value": "q"},
                        {"from": "gpt", "value": "a"}]}, "two user messages in a row"),
    ({"conversations": [{"speaker": "human", "value": "q"}]}, "Map yours with data.fields.role"),
    ({"prompt": [{"role": "user", "content": "q"}], "completion": [{"role": "user", "content": "x"}]},
     "must be one assistant message"),
    ({"prompt": "q", "completion": 3}, "must be a string"),
])
def test_bad_conversations_are_refused_with_file_and_line(tmp_path, row, reason):
    with pytest.raises(DataError) as err:
        _load(tmp_path, [PR, row])
    assert f"d.jsonl:2: " in str(err.value) and reason in str(err.value)


def test_explicit_format_applies_to_every_record(tmp_path):
    examples, _ = _load(tmp_path, [SHAREGPT_UA], format="sharegpt")
    assert examples[0].response == "hello"
    with pytest.raises(DataError, match="missing field `instruction`"):
        _load(tmp_path, [PR], format="alpaca")


@pytest.fixture
def dataset_folder(tmp_path, monkeypatch):
    """A local dataset repository (README `configs:` with two subsets and two splits), loaded through
    `datasets.load_dataset` exactly as a hub id is. The HF datasets cache is pointed at tmp to check that
    reading a local folder leaves nothing in it."""
    import datasets
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))
    monkeypatch.setattr(datasets.config, "DOWNLOADED_DATASETS_PATH", str(tmp_path / "hf-cache" / "downloads"))
    root = tmp_path / "my-dataset"
    write_rows(root / "math" / "train.jsonl", [{"prompt": f"p{i}", "completion": f"c{i}"} for i in range(3)])
    write_rows(root / "math" / "test.jsonl", [{"prompt": "t", "completion": "c"}])
    write_rows(root / "chat" / "train.jsonl", [SHAREGPT_UA])
    (root / "README.md").write_text(
        "---\nconfigs:\n- config_name: math\n  data_files:\n  - split: train\n    path: math/train.jsonl\n"
        "  - split: test\n    path: math/test.jsonl\n- config_name: chat\n  data_files:\n  - split: train\n"
        "    path: chat/train.jsonl\n---\n")
    return root


def test_dataset_by_name_with_split_and_subset(tmp_path, dataset_folder, tiny_model_dir):
    cfg_path = write_config(tmp_path, tiny_model_dir, data={
        "train": [{"path": "my-dataset", "subset": "math"}, {"path": "my-dataset", "subset": "chat", "weight": 0.5}],
        "eval": {"path": "my-dataset", "subset": "math", "split": "test"}})
    cfg = load_config(cfg_path)
    assert cfg.data.sources()[0].path == str(dataset_folder)  # resolved against the config's folder
    train, report = load_examples(cfg.data.train, cfg.data)
    assert [e.response for e in train] == ["c0", "c1", "c2", "hello"]
    assert train.parts == [(0, 3, 1.0, f"{dataset_folder}[subset=math]"), (3, 4, 0.5, f"{dataset_folder}[subset=chat]")]
    assert train[0].source == f"{dataset_folder}[subset=math][0]"
    evals, _ = load_examples(cfg.data.eval, cfg.data)
    assert [e.prompt for e in evals] == ["t"]
    assert not (tmp_path / "hf-cache").exists() or not any((tmp_path / "hf-cache").rglob("*.arrow"))
    with pytest.raises(DataError, match=r"cannot load dataset .*split=test_x"):
        load_examples(DataSource(path=str(dataset_folder), subset="math", split="test_x"), cfg.data)


def test_hub_id_is_kept_and_fails_clearly_offline(tmp_path, tiny_model_dir):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, data={"train": "someorg/some-dataset"}))
    assert cfg.data.train == "someorg/some-dataset"  # not turned into a path under the config folder
    with pytest.raises(DataError) as err:
        load_examples(cfg.data.train, cfg.data)
    assert "someorg/some-dataset" in str(err.value) and "hub dataset id" in str(err.value)
    with pytest.raises(ConfigError, match="missing file"):  # a file path is still checked at load
        load_config(write_config(tmp_path, tiny_model_dir, name="j2", data={"train": "nope/train.jsonl"}))


def test_save_to_disk_dataset_dict_needs_a_split(tmp_path):
    import datasets
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_list([PR]),
                               "test": datasets.Dataset.from_list([ALPACA])})
    dd.save_to_disk(str(tmp_path / "dd"))
    cfg = DataConfig(train=str(tmp_path / "dd"))
    with pytest.raises(DataError, match="set `split:`"):
        load_examples(str(tmp_path / "dd"), cfg)
    examples, _ = load_examples(DataSource(path=str(tmp_path / "dd"), split="test"), cfg)
    assert examples[0].response == "3"


def test_json_array_file(tmp_path):
    path = tmp_path / "alpaca_data.json"
    path.write_text(json.dumps([ALPACA, ALPACA], indent=2))
    examples, _ = load_examples(path, DataConfig(train=str(path)))
    assert len(examples) == 2 and examples[1].source == f"{path}[1]"


def test_a_missing_file_is_not_mistaken_for_a_hub_id(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DataError, match="data file not found: missing.jsonl"):
        load_examples("missing.jsonl", DataConfig(train="x"))


def test_source_list_errors_name_the_item_line_and_fix(tmp_path, tiny_model_dir):
    a = write_rows(tmp_path / "a.jsonl", [PR])
    text = (f"model: {{name_or_path: {tiny_model_dir}}}\ntrain: {{max_steps: 1}}\ndata:\n  train:\n"
            f"    - {{path: a.jsonl, wieght: 2}}\n    - {{path: a.jsonl, weight: .inf}}\n    - {{path: b.jsonl}}\n")
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "c.yaml")
    msg = str(err.value)
    assert "c.yaml:5: unknown key `data.train.0.wieght`. Did you mean `data.train.0.weight`?" in msg
    assert "c.yaml:6: `data.train.1.weight`" in msg and "valid string" not in msg  # no union noise
    (tmp_path / "c.yaml").write_text(text.replace("wieght", "weight").replace(".inf", "1"))
    with pytest.raises(ConfigError, match="c.yaml:7: `data.train.2.path` points to a missing file: .*b.jsonl"):
        load_config(tmp_path / "c.yaml")
    (tmp_path / "c.yaml").write_text(text.replace("wieght", "weight").replace(".inf", "1").replace("b.jsonl", "a.jsonl"))
    cfg = load_config(tmp_path / "c.yaml")
    assert [(s.path, s.weight, s.format) for s in cfg.data.sources()] == [(str(a), 2.0, "auto")] * 1 + [(str(a), 1.0, "auto")] * 2
    one = load_config(write_config(tmp_path, tiny_model_dir, data={"train": {"path": str(a), "format": "chat"}}))
    assert [s.format for s in one.data.sources()] == ["chat"] and isinstance(one.data.train, list)
    with pytest.raises(ConfigError, match="empty list"):
        load_config(write_config(tmp_path, tiny_model_dir, data={"train": []}))
