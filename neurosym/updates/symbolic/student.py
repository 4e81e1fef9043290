"""The model being trained, as a TextGrad engine (``StudentEngine``), for the symbolic route.

``engine.generate(prompt, system_prompt=None)`` renders a single-turn example (user = ``prompt``,
system = ``system_prompt``) with the job's :class:`~neurosym.data.render.Renderer` (so the student
sees exactly the training layout) and decodes greedily, ``max_new_tokens`` new tokens, on the
model's device; ``engine.answer_batch(examples, system_prompt)`` answers a whole batch in one
batched greedy generation (left padded), with the same answers. Measuring must not change
training, so each call:

* runs under ``torch.no_grad()`` in eval mode and restores every module's train/eval flag after;
* leaves the python, numpy, torch CPU (and the model's CUDA device) RNG states as they were;
* is serialised by a lock (one generation at a time on the shared model).

Inside ``with engine.session(examples, max_new_tokens=...)`` (per thread), a prompt equal to one of
``examples``' prompts is rendered as that whole example (its earlier turns and own system message),
so multi-turn examples are answered in their context. No network, no files.

Importing this module is cheap: TextGrad (~6 s) is imported when the class is first needed
(:func:`make_student_engine`, or the ``StudentEngine`` attribute).
"""
from __future__ import annotations

import random
import threading
from contextlib import contextmanager
from typing import Any, Iterable, Iterator, Optional, Union

from neurosym.data.examples import Example

_class_lock = threading.Lock()
_engine_class: Optional[type] = None


class _StudentBase:
    """The engine's logic; :func:`student_engine_class` mixes it into TextGrad's ``EngineLM``."""

    is_multimodal = False

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 512, max_new_tokens: int = 32,
                 model_string: str = "student"):
        from neurosym.data.render import Renderer

        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
        self.model = model
        self.tokenizer = tokenizer
        self.max_new_tokens = int(max_new_tokens)
        self.model_string = model_string
        self.system_prompt = None  # no default system prompt: None means none, as in training
        self.renderer = Renderer(tokenizer, max_length)  # our own: never touches the training renderer's cache
        self._lock = threading.RLock()
        self._local = threading.local()

    # -- per-thread context ---------------------------------------------------------------------------
    @contextmanager
    def session(self, examples: Iterable[Example] = (), max_new_tokens: Optional[int] = None) -> Iterator[Any]:
        """Within the block (this thread only): answer a prompt equal to one of ``examples``' prompts
        in that example's context, and generate ``max_new_tokens`` tokens (default: the engine's)."""
        prev = (getattr(self._local, "examples", None), getattr(self._local, "max_new_tokens", None))
        self._local.examples = {ex.prompt: ex for ex in examples}
        self._local.max_new_tokens = max_new_tokens
        try:
            yield self
        finally:
            self._local.examples, self._local.max_new_tokens = prev

    def _example_for(self, prompt: str) -> Example:
        known = getattr(self._local, "examples", None) or {}
        return known.get(prompt) or Example((("user", prompt),), "", "student")

    # -- TextGrad's interface -------------------------------------------------------------------------
    def generate(self, prompt: Union[str, list], system_prompt: Optional[str] = None, **kwargs: Any) -> str:
        """The student's greedy answer to ``prompt`` under ``system_prompt`` (``max_new_tokens=`` may
        override the length)."""
        if isinstance(prompt, list):
            if not all(isinstance(p, str) for p in prompt):
                raise NotImplementedError("the student engine takes text only")
            prompt = "\n".join(prompt)
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
        return self.answer(self._example_for(prompt), system_prompt, kwargs.get("max_new_tokens"))

    def __call__(self, prompt: Union[str, list], **kwargs: Any) -> str:
        return self.generate(prompt, **kwargs)

    # -- generation -------------------------------------------------------------------------------------
    def answer(self, example: Example, system_prompt: Optional[str] = None,
               max_new_tokens: Optional[int] = None) -> str:
        """Greedy answer to ``example`` rendered under the task ``system_prompt`` (length:
        ``max_new_tokens``, else the session's, else the engine's): :meth:`answer_batch` of one row,
        so that a model trained by several processes answers on all of them."""
        return self.answer_batch([example], system_prompt, max_new_tokens)[0]

    def answer_batch(self, examples: list[Example], system_prompt: Optional[str] = None,
                     max_new_tokens: Optional[int] = None, batch_size: Optional[int] = None) -> list[str]:
        """Greedy answers to ``examples`` under ``system_prompt``, in order: one left-padded
        ``model.generate`` over the whole batch (chunks of ``batch_size``, default all of them) with
        :func:`neurosym.model.generation.greedy_generate`, which a model trained by several processes
        runs on all of them (a share of the rows each, in lockstep; the answers come back here). An
        over-long prompt keeps its end; at most ``max_position_embeddings - 1`` new tokens."""
        from neurosym.model.generation import greedy_generate

        if not examples:
            return []
        max_new = int(max_new_tokens or getattr(self._local, "max_new_tokens", None) or self.max_new_tokens)
        with self._lock:
            self.renderer.system_prompt = system_prompt
            prompts = [self.renderer.generation_ids(ex) for ex in examples]
            ctx = getattr(getattr(self.model, "config", None), "max_position_embeddings", None)
            if ctx:
                max_new = max(1, min(max_new, ctx - 1))
            with _preserved_rng(_device_of(self.model)):  # the CUDA RNG too
                return greedy_generate(self.model, self.tokenizer, prompts, max_new,
                                       batch_size=int(batch_size or len(prompts)))

    def __repr__(self) -> str:
        return f"StudentEngine(model={type(self.model).__name__}, max_new_tokens={self.max_new_tokens})"


def _device_of(model: Any):
    import torch

    try:
        return next(model.parameters()).device
    except (StopIteration, AttributeError):
        return torch.device("cpu")


@contextmanager
def _preserved_rng(device) -> Iterator[None]:
    """Python, numpy and torch RNG states (CPU and the CUDA device in use) are restored on exit."""
    import numpy as np
    import torch

    py_state = random.getstate()
    np_state = np.random.get_state()
    devices = []
    if getattr(device, "type", "cpu") == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    try:
        with torch.random.fork_rng(devices=devices):
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def student_engine_class() -> type:
    """``StudentEngine``: :class:`_StudentBase` on top of ``textgrad.engine.EngineLM`` (built once)."""
    global _engine_class
    with _class_lock:
        if _engine_class is None:
            from neurosym.teacher.tg import load_textgrad

            engine_lm = load_textgrad().engine.EngineLM
            _engine_class = type("StudentEngine", (_StudentBase, engine_lm), {
                "__module__": __name__, "__qualname__": "StudentEngine", "__doc__": _StudentBase.__doc__})
            _engine_class.__doc__ = ("The model being trained as a TextGrad engine: greedy, no grad, eval "
                                     "mode, RNG and train/eval flags untouched. See the module docstring.")
        return _engine_class


def make_student_engine(model: Any, tokenizer: Any, *, max_length: int = 512, max_new_tokens: int = 32,
                        model_string: str = "student"):
    """A ``StudentEngine`` over ``model``/``tokenizer`` (``max_length``: ``data.max_length``,
    ``max_new_tokens``: ``symbolic.max_new_tokens``)."""
    return student_engine_class()(model, tokenizer, max_length=max_length, max_new_tokens=max_new_tokens,
                                  model_string=model_string)


def __getattr__(name: str) -> Any:
    if name == "StudentEngine":
        return student_engine_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["make_student_engine", "student_engine_class", "StudentEngine"]
