"""What the console says: each symbolic step's outcome in words (new prompt, identical, refused and
why, failed), the run summary's tally of them, and no deprecation warning our own calls trigger."""
import warnings

import pytest

from neurosym.config.schema import load_config
from neurosym.observe.recorder import update_outcome
from neurosym.observe.summary import bought_lines, update_outcome_lines
from neurosym.train import train
from tests.support.hybrid import KEY_ENV, Teacher, hybrid_config


def test_each_outcome_in_words():
    base = {"calls": 7, "cost_usd": 0.0012, "accepted": 0, "rejected": {}}
    assert update_outcome(base, new_version=3) == "new prompt v3 (7 calls, $0.0012)"
    assert update_outcome({**base, "unchanged_reason": "identical"}) == "prompt identical (kept) (7 calls, $0.0012)"
    assert update_outcome({**base, "unchanged_reason": "too_long", "accepted": 2, "rejected": {"answer_leak": 1}}) == \
        "refused: too_long (prompt kept); 2 example(s) rewritten; rewrites refused: answer_leak 1 (7 calls, $0.0012)"
    assert update_outcome({**base, "error_type": "TeacherTimeout", "error": "no answer in 3 s"}) == \
        "failed: TeacherTimeout: no answer in 3 s (7 calls, $0.0012)"
    assert update_outcome({**base, "unchanged_reason": "no_form_errors", "verdicts": {"content": 3, "correct": 5}}) == \
        "nothing a prompt can fix (3 content, 5 correct; prompt kept) (7 calls, $0.0012)"
    assert update_outcome({**base, "unchanged_reason": "no_form_errors"}).startswith("nothing a prompt can fix (every row right")
    assert update_outcome({"submitted_step": 4}) is None  # an asynchronous submission: nothing landed yet
    assert update_outcome({}) is None  # a LoRA step


def test_summary_tallies_the_outcomes():
    events = [{"kind": "train", "step": 1, "route": "lora"},
              {"kind": "train", "step": 2, "route": "symbolic", "symbolic": {"calls": 5}},
              {"kind": "train", "step": 4, "route": "symbolic", "symbolic": {"calls": 4, "unchanged_reason": "identical"}},
              {"kind": "train", "step": 6, "route": "symbolic", "symbolic": {"calls": 4, "unchanged_reason": "answer_leak"}},
              {"kind": "train", "step": 8, "route": "lora", "symbolic": {"calls": 1, "error_type": "TeacherError"}},
              {"kind": "train", "step": 9, "route": "symbolic", "symbolic": {"submitted_step": 9}},
              {"kind": "symbolic", "step": 10, "route": "symbolic", "symbolic": {"calls": 2, "unchanged_reason": "identical"}},
              {"kind": "train", "step": 11, "route": "symbolic", "symbolic": {"calls": 1, "unchanged_reason": "no_form_errors"}}]
    assert update_outcome_lines(events) == [
        "  symbolic     6 update(s): 1 new prompt, 1 with nothing a prompt can fix, 2 identical, 1 refused (answer_leak 1), "
        "1 failed; 17 teacher calls"]


def test_summary_says_what_each_route_bought():
    part = {"rows": 4, "cost": 1.25, "calls": 0}
    events = [{"kind": "train", "step": 1, "route": "symbolic",
               "parts": {"symbolic": {"rows": 2, "cost": 3.5, "calls": 3, "gain_by_kind": {"form": 0.5}, "fixed": 2},
                         "lora": {**part, "fixed": 0, "gain_by_kind": {"content": 0.1}}}},
              {"kind": "train", "step": 2, "route": "lora", "parts": {"lora": part}},
              {"kind": "eval", "step": 2}]
    assert bought_lines(events) == [
        "  bought       lora: 8 rows in 2 step(s), cost 2.5 LoRA-step units, fixed 0 probe row(s) in the 1 step(s) measured",
        "  bought       symbolic: 2 rows in 1 step(s), cost 3.5 LoRA-step units, 3 teacher calls, "
        "fixed 2 probe row(s) in the 1 step(s) measured"]


@pytest.fixture
def teacher(openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    openai_server.set_responder(Teacher())
    return openai_server


def test_the_console_says_what_each_symbolic_step_did(tmp_path, tiny_model_dir, teacher, capsys):
    cfg = load_config(hybrid_config(tmp_path, tiny_model_dir, teacher, train={"max_steps": 4, "save_every": 4,
                                                                              "eval_every": 0, "log_every": 1}))
    out = train(cfg, quiet=True)
    err = capsys.readouterr().err
    lines = [l for l in err.splitlines() if ": symbolic: " in l]
    assert [l.split(":")[0] for l in lines] == ["step 2", "step 4"], err
    assert lines[0].startswith("step 2: symbolic: new prompt v1") and " calls" in lines[0]
    assert "system prompt v1" not in err  # said once, on the update's line
    assert "sym_prompts=" in err and "sym_accepted" not in err
    from neurosym.observe.summary import summary_lines
    summary = "\n".join(summary_lines(out.run_dir, out.state))
    assert "symbolic     2 update(s): 2 new prompt" in summary


def test_gradient_checkpointing_raises_no_deprecation_warning(tmp_path, tiny_model_dir):
    from neurosym.model.load import load_for_training
    from tests.support.jobs import write_config
    cfg = load_config(write_config(tmp_path, tiny_model_dir, train={"gradient_checkpointing": True}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, *_ = load_for_training(cfg, tmp_path / ".models")
    assert not [w for w in caught if "checkpointing" in str(w.message)], [str(w.message) for w in caught]
    base = model.get_base_model()
    assert any(getattr(m, "gradient_checkpointing", False) for m in base.modules())  # it is on


@pytest.mark.slow
def test_the_console_of_a_logged_job_has_no_third_party_noise(tmp_path, tiny_model_dir, teacher):
    """Written to a log (stderr not a terminal), a hybrid job with W&B offline prints our lines only: no
    weight-loading bar, no W&B Weave advert (openai is imported), no FutureWarning."""
    import os
    import subprocess
    import sys

    cfg = hybrid_config(tmp_path, tiny_model_dir, teacher, tracking={"mode": "offline"},
                        train={"max_steps": 2, "save_every": 2, "eval_every": 0, "log_every": 1})
    env = {**os.environ, KEY_ENV: teacher.api_key, "WANDB_MODE": "offline"}
    proc = subprocess.run([sys.executable, "-m", "neurosym", "train", str(cfg)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    console = proc.stdout + proc.stderr
    assert "done: 2 steps" in console
    for noise in ("Loading weights", "Weave", "FutureWarning", "it/s]"):
        assert noise not in console, console


@pytest.mark.slow
def test_the_verbs_that_load_a_run_raise_no_deprecation_warning(tmp_path, tiny_model_dir, capsys):
    """`generate`, `eval`, `compose` and `merge` on a run load its adapter through PEFT, which reads the
    deprecated ``is_gradient_checkpointing``: transformers' FutureWarning, raised by our call, is hidden
    there as it is in training (seen: printed above every `generate` answer)."""
    from neurosym.cli import main
    from tests.support.jobs import write_config

    cfg = write_config(tmp_path, tiny_model_dir, name="w", train={"max_steps": 2, "save_every": 2, "eval_every": 0})
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "runs" / "w"
    verbs = [["generate", str(run), "--prompt", "1+1=", "--max-new-tokens", "2", "--conn", "none"],
             ["eval", str(run)],
             ["compose", "--method", "output_sum", "--adapter", f"a={run}", "--adapter", f"b={run}", "--out",
              str(tmp_path / "comp")],
             ["generate", str(tmp_path / "comp"), "--prompt", "1+1=", "--max-new-tokens", "2", "--conn", "none"],
             ["merge", str(run), "--out", str(tmp_path / "merged")]]
    for argv in verbs:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert main(argv) == 0, (argv, capsys.readouterr().err[-2000:])
        assert not [w for w in caught if "checkpointing" in str(w.message)], (argv, [str(w.message) for w in caught])
