"""The training job in-process: run directory, checkpoints, W&B offline files, atomic saves."""
import json

import pytest
import torch

from neurosym.persist.checkpoint import complete_checkpoints, latest_checkpoint
from neurosym.config.schema import load_config
from neurosym.observe.events import read_events
from neurosym.errors import RunDirError
from neurosym.train import train
from tests.support.jobs import write_config
from tests.support.wandb_reader import summarize


def test_run_directory_events_and_peft_checkpoints(tmp_path, tiny_model_dir):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, train={"keep_last_n": 1}))
    out = train(cfg, quiet=True)
    run = out.run_dir
    assert (run / "config.yaml").exists()
    events = read_events(run / "events.jsonl")
    steps = [e["step"] for e in events if e["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert events[0] == {"kind": "prompt", "step": 0, "version": 0, "text": "Add the numbers."}
    rec = next(e for e in events if e["kind"] == "train")
    assert {"loss", "grad_norm", "lr", "tokens", "wall_s", "route"} <= set(rec) and rec["route"] == "lora"
    assert [e["step"] for e in events if e["kind"] == "eval"] == [0, 3, 6]  # step 0: the "before"
    assert all(e["grad_norm"] > 0 for e in events if e["kind"] == "train")
    # keep_last_n=1: only the final checkpoint is left, complete and loadable by PEFT as is
    ckpts = complete_checkpoints(run)
    assert [c.name for c in ckpts] == ["step-6"]
    state = json.loads((ckpts[0] / "state.json").read_text())
    assert state["step"] == 6 and state["components"]["batches"]["sampler"] == {"n": 24, "seed": 3, "epoch": 0, "position": 24}
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), str(ckpts[0]))
    assert any("lora_A" in n for n, _ in model.named_parameters())
    assert not list(run.glob("checkpoints/.tmp*"))
    # the learned system prompt travels with the adapter: model card and system_prompt.txt
    assert (ckpts[0] / "system_prompt.txt").read_text() == "Add the numbers."
    card = (ckpts[0] / "README.md").read_text()
    assert "base_model:" in card and "## System prompt" in card and "Add the numbers." in card
    assert out.final_eval["eval_loss"] < rec["loss"]


def test_no_pickle_in_checkpoints(tmp_path, tiny_model_dir):
    out = train(load_config(write_config(tmp_path, tiny_model_dir, train={"max_steps": 2, "save_every": 0})), quiet=True)
    for f in latest_checkpoint(out.run_dir).iterdir():
        head = f.read_bytes()[:2]
        assert head != b"\x80\x04" and head != b"PK", f"{f.name} looks like a pickle/zip-pickle"
        assert f.suffix in {".json", ".safetensors", ".md", ".txt", ""}, f.name


def test_existing_run_is_not_overwritten(tmp_path, tiny_model_dir):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, train={"max_steps": 1}))
    train(cfg, quiet=True)
    with pytest.raises(RunDirError, match="neurosym resume"):
        train(cfg, quiet=True)


def test_grad_accumulation_matches_a_large_batch(tmp_path, tiny_model_dir):
    """Loss is normalised over all response tokens of the step, so 2x2 == 4x1."""
    results = []
    for name, bs, acc in (("big", 4, 1), ("acc", 2, 2)):
        cfg = load_config(write_config(tmp_path, tiny_model_dir, name=name, lora={"dropout": 0.0},
                                       train={"batch_size": bs, "grad_accum": acc, "max_steps": 3,
                                              "eval_every": 0, "save_every": 0}))
        out = train(cfg, quiet=True)
        results.append([(e["loss"], e["grad_norm"]) for e in read_events(out.run_dir / "events.jsonl")
                        if e["kind"] == "train"])
    for (l1, g1), (l2, g2) in zip(*results):
        assert l1 == pytest.approx(l2, rel=1e-5) and g1 == pytest.approx(g2, rel=1e-4)


def test_wandb_offline_files(tmp_path, tiny_model_dir, monkeypatch):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, tracking={"mode": "offline", "project": "p"},
                                   train={"max_steps": 4, "save_every": 2, "eval_every": 2}))
    run = train(cfg, quiet=True).run_dir
    s = summarize(run / "wandb")
    assert s["run_ids"] == {(run / "wandb_run_id").read_text().strip()}
    losses = {h["train/step"]: h["train/loss"] for h in s["history"] if "train/loss" in h}
    events = {e["step"]: e["loss"] for e in read_events(run / "events.jsonl") if e["kind"] == "train"}
    assert losses == events
    assert all({"train/grad_norm", "train/lr", "train/tokens_per_s"} <= set(h) for h in s["history"] if "train/loss" in h)
    assert [h["train/step"] for h in s["history"] if "eval/loss" in h] == [0, 2, 4]
    assert ("job-adapter", "lora-adapter") in s["artifacts"]
    assert s["config"]["train"]["max_steps"] == 4
    # a resumed run (more steps) logs into the same W&B run id
    cfg2 = load_config(write_config(tmp_path, tiny_model_dir, tracking={"mode": "offline", "project": "p"},
                                    train={"max_steps": 6, "save_every": 2, "eval_every": 2}))
    train(cfg2, resume=True, quiet=True)
    assert summarize(run / "wandb")["run_ids"] == s["run_ids"]


def test_crash_during_save_leaves_previous_checkpoint(tmp_path, tiny_model_dir, monkeypatch):
    import neurosym.persist.serialization as ck  # the checkpoint writes its trees with it
    cfg = load_config(write_config(tmp_path, tiny_model_dir, train={"max_steps": 6, "save_every": 2}))
    real, calls = ck.save_tree, {"n": 0}

    def failing(obj, stem):
        calls["n"] += 1
        if calls["n"] == 3:  # second checkpoint (optimizer then rng per save), mid-write
            raise OSError("disk full")
        return real(obj, stem)

    monkeypatch.setattr(ck, "save_tree", failing)
    from neurosym.errors import CheckpointSaveFailed
    with pytest.raises(CheckpointSaveFailed, match="could not save the checkpoint of step 4"):
        train(cfg, quiet=True)
    assert [c.name for c in complete_checkpoints(cfg.run_dir)] == ["step-2"]
    assert not (cfg.run_dir / "checkpoints" / "step-4").exists()
    monkeypatch.setattr(ck, "save_tree", real)
    out = train(cfg, resume=True, quiet=True)
    assert out.state.step == 6
    steps = [e["step"] for e in read_events(cfg.run_dir / "events.jsonl") if e["kind"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    assert not list((cfg.run_dir / "checkpoints").glob(".tmp*"))


def test_incomplete_checkpoint_folder_is_ignored(tmp_path, tiny_model_dir):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, train={"max_steps": 2, "save_every": 1}))
    run = train(cfg, quiet=True).run_dir
    (run / "checkpoints" / "step-2" / "COMPLETE").unlink()
    assert latest_checkpoint(run).name == "step-1"


def test_resume_detects_lr_mismatch(tmp_path, tiny_model_dir):
    from neurosym.errors import ResumeMismatch
    cfg = load_config(write_config(tmp_path, tiny_model_dir, train={"max_steps": 2, "save_every": 1}))
    run = train(cfg, quiet=True).run_dir
    state_path = run / "checkpoints" / "step-2" / "state.json"
    state = json.loads(state_path.read_text())
    state["lr"] = 123.0
    state_path.write_text(json.dumps(state))
    with pytest.raises(ResumeMismatch, match="state.json says 123.0"):
        train(cfg, resume=True, quiet=True)


def test_qlora_without_cuda_fails_clearly(tmp_path, tiny_model_dir):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    from neurosym.model.load import ModelError
    cfg = load_config(write_config(tmp_path, tiny_model_dir, model={"quantization": "4bit"}))
    with pytest.raises(ModelError, match="needs a CUDA GPU"):
        train(cfg, quiet=True)
