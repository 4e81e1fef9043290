"""`neurosym eval`: loss and perplexity of a saved checkpoint on the eval split."""
from __future__ import annotations

import math
from pathlib import Path

from neurosym.persist.checkpoint import STATE_FILE, find_checkpoint
from neurosym.config.schema import Config
from neurosym.data import Renderer, load_examples
from neurosym.model.load import load_with_adapter
from neurosym.runtime import make_runtime
from neurosym.model.losses import encode_batches, eval_loss


def evaluate_checkpoint(cfg: Config, run_dir: Path, checkpoint: str | None = None) -> dict:
    ckpt = find_checkpoint(run_dir, checkpoint)
    split = cfg.data.eval or cfg.data.train
    examples, report = load_examples(split, cfg.data)
    model, tokenizer, device, dtype = load_with_adapter(cfg, run_dir.parent / ".models", ckpt)
    from neurosym.persist.state import TrainState
    state = TrainState.load(ckpt / STATE_FILE)
    prompt = state.components.get("prompts", {}).get("current", cfg.data.system_prompt)
    renderer = Renderer(tokenizer, cfg.data.max_length, prompt, cfg.data.train_on)
    runtime = make_runtime(device, dtype)
    batches = encode_batches(examples, renderer, cfg.train.batch_size, tokenizer.pad_token_id, runtime,
                             cfg.data.packing, cfg.data.max_length)
    loss, n = eval_loss(model, batches, runtime)
    return {"checkpoint": str(ckpt), "split": report.path, "examples": len(examples), "tokens": n,
            "loss": loss, "ppl": math.exp(min(loss, 50))}
