"""Turning an example into token ids with the loss on the response only.

The prompt part (system prompt, earlier turns, the user's prompt, the assistant header) gets label
-100; the response and the end-of-sequence token are trained. With a chat template the prompt is
rendered by ``apply_chat_template(..., add_generation_prompt=True)``; without one by a plain
"System:/User:/Assistant:" layout. `neurosym preview` prints exactly this split.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from neurosym.data.examples import Example

IGNORE = -100


@dataclass(frozen=True)
class Encoded:
    input_ids: list
    labels: list
    truncated: bool = False

    @property
    def n_target(self) -> int:
        return sum(1 for t in self.labels if t != IGNORE)


class Renderer:
    """Renders examples under the current task system prompt; caches encodings per prompt."""

    def __init__(self, tokenizer, max_length: int, system_prompt: Optional[str] = None):
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self._system = system_prompt
        self._cache: dict = {}

    @property
    def system_prompt(self) -> Optional[str]:
        return self._system

    @system_prompt.setter
    def system_prompt(self, value: Optional[str]) -> None:
        if value != self._system:
            self._system = value
            self._cache.clear()

    def messages(self, ex: Example) -> list[dict]:
        msgs = [{"role": r, "content": c} for r, c in ex.messages]
        if self._system and not ex.system:
            msgs.insert(0, {"role": "system", "content": self._system})
        return msgs

    def prompt_text(self, ex: Example) -> str:
        msgs = self.messages(ex)
        if self.has_template:
            return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
        names = {"system": "System", "user": "User", "assistant": "Assistant"}
        return "".join(f"{names[m['role']]}: {m['content']}\n" for m in msgs) + "Assistant: "

    def _prompt_ids(self, text: str) -> list:
        # A chat template writes its own special tokens; the plain layout takes the tokenizer's BOS.
        return self.tokenizer(text, add_special_tokens=not self.has_template)["input_ids"]

    def encode(self, ex: Example) -> Encoded:
        hit = self._cache.get(ex)
        if hit is not None:
            return hit
        tok = self.tokenizer
        prompt_ids = self._prompt_ids(self.prompt_text(ex))
        response_ids = tok(ex.response, add_special_tokens=False)["input_ids"]
        if tok.eos_token_id is not None:
            response_ids = response_ids + [tok.eos_token_id]
        truncated = False
        room = self.max_length - len(response_ids)
        if room < 1:  # keep one prompt token; cut the response's tail
            response_ids = response_ids[: self.max_length - 1]
            room, truncated = 1, True
        if len(prompt_ids) > room:  # keep the end of the prompt (closest to the answer)
            prompt_ids, truncated = prompt_ids[-room:], True
        enc = Encoded(prompt_ids + response_ids, [IGNORE] * len(prompt_ids) + response_ids, truncated)
        self._cache[ex] = enc
        return enc

    def generation_ids(self, ex: Example) -> list:
        """Token ids of the prompt alone, for generating the student's answer."""
        ids = self._prompt_ids(self.prompt_text(ex))
        return ids[-(self.max_length - 1):]
