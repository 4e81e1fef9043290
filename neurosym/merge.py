"""`neurosym merge`: fold the LoRA adapter into the base weights (``merge_and_unload``)."""
from __future__ import annotations

from pathlib import Path

from neurosym.checkpoint import find_checkpoint
from neurosym.config import Config
from neurosym.model import ModelError


def merge_run(cfg: Config, run_dir: Path, out: Path, checkpoint: str | None = None,
              dequantize: bool = False) -> Path:
    ckpt = find_checkpoint(run_dir, checkpoint)
    if cfg.model.quantization == "4bit" and not dequantize:
        raise ModelError(
            "this run trained on a 4-bit (QLoRA) base: merging into 4-bit weights rounds the adapter away. "
            "Pass --dequantize to merge into a bf16 copy of the base instead (needs memory for the full model).")
    model_cfg = cfg.model.model_copy(update={"quantization": "none"}) if dequantize else cfg.model
    merge_cfg = cfg.model_copy(update={"model": model_cfg})
    from neurosym.model import load_with_adapter
    model, tokenizer, _, _ = load_with_adapter(merge_cfg, run_dir.parent / ".models", ckpt)
    merged = model.merge_and_unload()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    merged.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out
