"""A training job's state and the pieces of a step: the ``Run`` (``run``), where batches come from
(``batches``), the gain probe (``gain``), the LR schedule (``schedule``), the system prompt's versions
(``prompt_versions``), and ``neurosym eval`` (``evaluate``).

``from neurosym.run import Run`` loads the ``Run`` (and torch) on first use only, so the light
modules here (``schedule``, ``prompt_versions``) import without it."""
from __future__ import annotations


def __getattr__(name: str):
    if name in ("Run", "examples_per_step", "total_steps", "model_card"):
        from neurosym.run import run
        return getattr(run, name)
    raise AttributeError(f"module 'neurosym.run' has no attribute {name!r}")
