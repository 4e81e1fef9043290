"""Composing trained modules (LoRA, QLoRA, (IA)3) at inference, without training again.

``compose(...)`` writes a composition folder; ``load(path)`` gives a ready (model, tokenizer) for a
composition, a run, a checkpoint, an adapter folder or a plain model. Methods: ``registry.METHODS``.
Imports are lazy so ``neurosym --help`` does not pay for torch/PEFT.
"""
from __future__ import annotations


def compose(*args, **kwargs):
    from neurosym.compose.core import compose as _compose
    return _compose(*args, **kwargs)


def load(path, device=None, quantization=None, trust_remote_code=False):
    """(model, tokenizer) from a composition folder/manifest, run dir, checkpoint, adapter folder or model.
    ``trust_remote_code``: let the base model's own code run (a manifest or run config asking for it is
    refused without it)."""
    from neurosym.compose.core import load as _load
    return _load(path, device=device, quantization=quantization, trust_remote_code=trust_remote_code)


__all__ = ["compose", "load"]
