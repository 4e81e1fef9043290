"""``LocalTeacher``: ``teacher.provider: local`` runs a Hugging Face causal LM in-process.

``teacher.model`` is a hub id (from the local HF cache when offline), a local directory, or
``tiny://<preset>`` (a tiny random model built under the run directory). Prompts use the tokenizer's
chat template when it has one, else a plain ``"system\\n\\nuser\\n"`` rendering; decoding is greedy
with up to ``max_tokens`` new tokens. The whole prompt is always given: the answer gets what the
model's context (``max_position_embeddings``) leaves after it, and a prompt that leaves fewer than
``MIN_NEW_TOKENS`` is refused with ``TeacherUnavailable(kind="context")`` naming both sizes (never
cut: TextGrad's instructions are at the start of its prompts). No key, no server; same cache,
accounting and budget as :class:`~neurosym.teacher.engine.OpenAITeacher`.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

from neurosym.config.schema import TeacherConfig

from .base import CachedTeacher, Completion, teacher_dir
from .errors import TeacherConfigError, TeacherUnavailable


def render_messages(tokenizer: Any, messages: list[dict]) -> tuple[str, bool]:
    """(prompt text, whether it came from a chat template)."""
    if getattr(tokenizer, "chat_template", None):
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return str(text), True
    system = "\n".join(m["content"] for m in messages if m["role"] == "system")
    user = "\n".join(m["content"] for m in messages if m["role"] != "system")
    return (f"{system}\n\n{user}\n" if system else f"{user}\n"), False


def resolve_model_path(model: str, run_dir: str | Path) -> str:
    """Map ``tiny://<preset>`` to a model built under ``<run_dir>/teacher/models``; others pass through."""
    from neurosym.model.tiny import TINY_SCHEME, resolve_tiny

    if model.startswith(TINY_SCHEME):
        return resolve_tiny(model, teacher_dir(run_dir) / "models")
    return model


class LocalTeacher(CachedTeacher):
    """TextGrad engine over an in-process Hugging Face causal LM (greedy decoding).

    :param device: torch device (default: ``cuda`` when available, else ``cpu``).
    """

    MIN_NEW_TOKENS = 16

    def __init__(self, cfg: TeacherConfig, run_dir: str | Path, *, device: Optional[str] = None, **kw: Any):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        super().__init__(cfg, run_dir, **kw)
        path = resolve_model_path(cfg.model, run_dir)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype="auto")
        except (OSError, ValueError) as exc:
            raise TeacherConfigError(
                f"teacher.model {cfg.model!r} could not be loaded for teacher.provider: local ({exc}); "
                "set teacher.model to a local model directory or a hub id present in the local cache") from exc
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.model.to(self.device).eval()
        self._torch = torch
        self._gen_lock = threading.Lock()  # one generate() at a time on the shared model

    def _request(self, messages: list[dict], params: dict[str, Any]) -> Completion:
        text, templated = render_messages(self.tokenizer, messages)
        ids = self.tokenizer(text, add_special_tokens=not templated, return_tensors="pt")["input_ids"]
        max_new = int(params.get("max_tokens") or self.cfg.max_tokens)
        ctx = self.context_length
        if ctx:
            room = ctx - int(ids.shape[1])
            if room < min(self.MIN_NEW_TOKENS, max_new):
                self.usage.record_failure("context")
                raise TeacherUnavailable(
                    f"the local teacher {self.model_string!r} has a context of {ctx} tokens; this prompt takes "
                    f"{int(ids.shape[1])}, leaving {max(room, 0)} for the answer (at least "
                    f"{min(self.MIN_NEW_TOKENS, max_new)} needed). TextGrad's prompts run to thousands of tokens: "
                    "use a teacher model with a longer context (teacher.model), or shorter examples "
                    "(fewer per symbolic batch, data.max_length)", kind="context")
            max_new = min(max_new, room)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.eos_token_id
        with self._gen_lock, self._torch.inference_mode():
            out = self.model.generate(
                input_ids=ids.to(self.device), attention_mask=self._torch.ones_like(ids).to(self.device),
                max_new_tokens=max_new, do_sample=False, pad_token_id=pad,
                temperature=None, top_p=None, top_k=None)
        new = out[0, ids.shape[1]:]
        answer = self.tokenizer.decode(new, skip_special_tokens=True)
        return Completion(answer, int(ids.shape[1]), int(new.shape[0]))

    @property
    def context_length(self) -> Optional[int]:
        """Tokens the model can attend to (prompt + answer), from its config; None if it has none."""
        ctx = getattr(self.model.config, "max_position_embeddings", None)
        return int(ctx) if ctx else None

    def __repr__(self) -> str:
        return f"LocalTeacher(model={self.model_string!r}, device={self.device!r})"
