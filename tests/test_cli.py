"""The CLI verbs, called through `neurosym.cli.main` as the console script does."""
import json

import pytest
import torch
import yaml

from neurosym.cli import build_parser, main
from tests.support.jobs import write_config

VERBS = ["train", "resume", "eval", "validate", "preview", "merge", "export", "prompts", "report",
         "conn", "generate", "compose"]


@pytest.mark.parametrize("verb", VERBS)
def test_every_verb_has_help_with_an_example(verb, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([verb, "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert ("example:" in out or "examples:" in out) and f"neurosym {verb}" in out


def test_validate_checks_data_without_loading_a_model(tmp_path, capsys):
    cfg = write_config(tmp_path, "org/no-such-model")  # a hub id that is not there: never loaded
    assert main(["validate", str(cfg)]) == 0
    out = capsys.readouterr().out
    assert "config OK" in out and "data.train 24 examples" in out and "0 skipped" in out


def test_bad_config_exits_2_with_a_message(tmp_path, tiny_model_dir, capsys):
    cfg = write_config(tmp_path, tiny_model_dir)
    assert main(["validate", str(cfg), "--set", "train.lr=fast"]) == 2
    assert "--set train.lr=fast" in capsys.readouterr().err
    assert main(["resume", str(tmp_path / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_preview_marks_masked_and_trained_parts(tmp_path, tiny_model_dir, capsys):
    cfg = write_config(tmp_path, tiny_model_dir)
    assert main(["preview", str(cfg), "-n", "2", "--no-color"]) == 0
    out = capsys.readouterr().out
    assert out.count("[[The answer is ") == 2 and "</s>]]" in out
    assert "Add the numbers." in out and "What is 0 plus 0?" in out


def test_train_eval_merge(tmp_path, tiny_model_dir, capsys):
    cfg = write_config(tmp_path, tiny_model_dir, train={"max_steps": 4, "save_every": 2, "eval_every": 2})
    assert main(["train", str(cfg), "--quiet", "--set", "run.name=cli"]) == 0
    run = tmp_path / "runs" / "cli"
    assert "done: 4 steps" in capsys.readouterr().out
    # eval of the final checkpoint reproduces the loop's eval loss
    assert main(["eval", str(run)]) == 0
    result = json.loads(capsys.readouterr().out)
    last_eval = [json.loads(line) for line in open(run / "events.jsonl") if '"eval"' in line][-1]
    assert result["loss"] == pytest.approx(last_eval["eval_loss"], rel=1e-5)
    assert main(["eval", str(run), "--checkpoint", "step-2"]) == 0
    assert json.loads(capsys.readouterr().out)["checkpoint"].endswith("step-2")
    assert main(["eval", str(run), "--checkpoint", "step-3"]) == 2
    assert "complete ones: step-2, step-4" in capsys.readouterr().err
    # merge: the merged model computes what base + adapter computes
    out_dir = tmp_path / "merged"
    assert main(["merge", str(run), "--out", str(out_dir)]) == 0
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    merged = AutoModelForCausalLM.from_pretrained(out_dir)
    peft = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir),
                                     str(run / "checkpoints" / "step-4"))
    ids = torch.tensor([[5, 6, 7, 8, 9]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, peft.eval()(ids).logits, atol=1e-5)


def test_merge_refuses_a_4bit_base_without_dequantize(tmp_path, tiny_model_dir, capsys):
    cfg = write_config(tmp_path, tiny_model_dir, train={"max_steps": 1})
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "runs" / "job"
    saved = yaml.safe_load((run / "config.yaml").read_text())
    saved["model"]["quantization"] = "4bit"
    (run / "config.yaml").write_text(yaml.safe_dump(saved))
    assert main(["merge", str(run), "--out", str(tmp_path / "m")]) == 2
    assert "--dequantize" in capsys.readouterr().err


def test_resume_of_a_finished_run_with_more_steps(tmp_path, tiny_model_dir, capsys):
    cfg = write_config(tmp_path, tiny_model_dir, train={"max_steps": 2, "save_every": 0})
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "runs" / "job"
    assert main(["resume", str(run), "--quiet", "--set", "train.max_steps=3"]) == 0
    captured = capsys.readouterr()
    assert "done: 3 steps" in captured.out and "LR schedule was built for 2 steps and now spans 3" in captured.err
    steps = [json.loads(l)["step"] for l in open(run / "events.jsonl") if '"train"' in l]
    assert steps == [1, 2, 3]


def test_validate_checks_the_teacher_unless_offline(tmp_path, tiny_model_dir, openai_server, monkeypatch, capsys):
    from tests.support.hybrid import KEY_ENV, hybrid_config
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    cfg = str(hybrid_config(tmp_path, tiny_model_dir, openai_server))
    assert main(["validate", cfg]) == 0
    assert "teacher ok" in capsys.readouterr().out and len(openai_server.requests) >= 1
    seen = len(openai_server.requests)
    assert main(["validate", cfg, "--offline"]) == 0
    assert "not checked (--offline)" in capsys.readouterr().out and len(openai_server.requests) == seen
    monkeypatch.setenv(KEY_ENV, "sk-wrong")
    assert main(["validate", cfg]) == 2
    assert "sk-wrong" not in capsys.readouterr().err


def test_version_and_what_the_tool_does(capsys):
    with pytest.raises(SystemExit) as done:
        main(["--version"])
    assert done.value.code == 0 and capsys.readouterr().out.startswith("neurosym 0.")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "LoRA" in capsys.readouterr().out
