"""`neurosym eval RUN --data FILE --reward KIND`: loss, perplexity, the reward, and each row's generation
and score in a JSONL, generated under the checkpoint's learned system prompt."""
import json
import typing

import pytest

from neurosym.cli import DATA_FORMATS, REWARD_KINDS, main
from tests.support.jobs import arithmetic_rows, write_config, write_rows


@pytest.fixture(scope="module")
def run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("evalrun")
    cfg = write_config(tmp, tiny_model_dir, train={"max_steps": 2, "save_every": 1, "eval_every": 2},
                       data={"format": "prompt_response"}, reward={"kind": "exact_match"})
    assert main(["train", str(cfg), "--quiet"]) == 0
    return tmp / "runs" / "job"


def _rows(path):
    return [json.loads(line) for line in open(path)]


def _chat_file(path, n=4):
    return write_rows(path, [{"messages": [{"role": "user", "content": r["prompt"]},
                                           {"role": "assistant", "content": r["response"]}]}
                             for r in arithmetic_rows(n, start=40)])


def test_eval_on_another_file_writes_each_rows_generation_and_score(run, tmp_path, capsys):
    chat = _chat_file(tmp_path / "test-chat.jsonl")  # chat format, while the job's data.format is prompt_response
    assert main(["eval", str(run), "--data", str(chat)]) == 0
    cap = capsys.readouterr()
    result = json.loads(cap.out)
    assert result["split"] == str(chat) and result["examples"] == 4
    assert result["reward"] == "exact_match" and result["failed"] == 4  # a random tiny model answers nothing right
    assert result["rows"] == str(run / "eval" / "step-2-test-chat.jsonl")
    assert "each row's generation and score" in cap.err and result["rows"] in cap.err
    rows = _rows(result["rows"])
    assert [r["prompt"] for r in rows] == [r["prompt"] for r in arithmetic_rows(4, start=40)]
    assert [r["reference"] for r in rows] == [r["response"] for r in arithmetic_rows(4, start=40)]
    assert all(r["score"] == 0.0 and isinstance(r["generation"], str) and r["loss"] > 0 for r in rows)
    assert all(r["system"] == "Add the numbers." for r in rows)
    # the per-row losses average (token-weighted) to the reported loss
    assert min(r["loss"] for r in rows) <= result["loss"] <= max(r["loss"] for r in rows)

    # a row whose reference is what the model answers scores 1: the score is per row, by the chosen reward
    data = [{"prompt": r["prompt"], "response": r["generation"] if i == 1 else r["reference"]}
            for i, r in enumerate(rows)]
    mixed = write_rows(tmp_path / "mixed.jsonl", data)
    assert main(["eval", str(run), "--data", str(mixed), "--reward", "exact_match"]) == 0
    rescored = _rows(json.loads(capsys.readouterr().out)["rows"])
    assert [r["score"] for r in rescored] == [0.0, 1.0, 0.0, 0.0]
    assert [r["generation"] for r in rescored] == [r["generation"] for r in rows]
    # neg_loss: each row's score is minus its own loss
    assert main(["eval", str(run), "--data", str(mixed), "--reward", "neg_loss"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["reward"] == "neg_loss" and result["failed"] is None
    assert all(r["score"] == pytest.approx(-r["loss"]) for r in _rows(result["rows"]))


def test_eval_generates_under_the_checkpoints_learned_prompt(run, tmp_path, capsys):
    """The generation is the one answer_examples gives under the prompt the checkpoint holds."""
    state_path = run / "checkpoints" / "step-1" / "state.json"
    state = json.loads(state_path.read_text())
    state["components"]["prompts"]["current"] = "Learned: add both numbers."
    state_path.write_text(json.dumps(state))
    assert main(["eval", str(run), "--checkpoint", "step-1", "--max-new-tokens", "6"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["system_prompt"] == "Learned: add both numbers."
    assert result["rows"].endswith("step-1-eval.jsonl")
    rows = _rows(result["rows"])
    assert all(r["system"] == "Learned: add both numbers." for r in rows)

    from neurosym.cli import _run_config
    from neurosym.data import Renderer, load_examples
    from neurosym.model.generation import answer_examples
    from neurosym.model.load import load_with_adapter
    cfg = _run_config(str(run))
    model, tok, _, _ = load_with_adapter(cfg, run.parent / ".models", run / "checkpoints" / "step-1")
    examples, _ = load_examples(cfg.data.eval, cfg.data)
    renderer = Renderer(tok, cfg.data.max_length, "Learned: add both numbers.", cfg.data.train_on)
    assert "[SYS]Learned: add both numbers." in renderer.prompt_text(examples[0])
    assert [r["generation"] for r in rows] == answer_examples(model, tok, renderer, examples, 6, 16)


def test_eval_out_follows_the_safe_output_rules(run, tmp_path, capsys):
    chat = _chat_file(tmp_path / "c.jsonl", n=2)
    # inside the run directory: refused before the model loads
    assert main(["eval", str(run), "--data", str(chat), "--out", str(run / "mine.jsonl")]) == 2
    assert "reads from; write somewhere else" in capsys.readouterr().err
    out = tmp_path / "results" / "rows.jsonl"
    assert main(["eval", str(run), "--data", str(chat), "--out", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == str(out)
    assert len(_rows(out)) == 2
    before = out.read_text()
    assert main(["eval", str(run), "--data", str(chat), "--out", str(out)]) == 2  # exists: needs --overwrite
    assert "--overwrite" in capsys.readouterr().err and out.read_text() == before
    assert main(["eval", str(run), "--data", str(chat), "--out", str(out), "--overwrite"]) == 0
    # bad inputs say what is wrong
    assert main(["eval", str(run), "--data", str(tmp_path / "none.jsonl")]) == 2
    assert "none.jsonl" in capsys.readouterr().err
    assert main(["eval", str(run), "--reward", "regex"]) == 2
    assert "--pattern" in capsys.readouterr().err


def test_eval_choices_are_the_configs():
    from neurosym.config.schema import DataFormat, RewardConfig
    assert DATA_FORMATS == typing.get_args(DataFormat)
    assert REWARD_KINDS == typing.get_args(RewardConfig.model_fields["kind"].annotation)
