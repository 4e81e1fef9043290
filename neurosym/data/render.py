"""Turning an example into token ids with the loss on the response only.

The prompt part (system prompt, earlier turns, the user's prompt, the assistant header) gets label
-100; the response and the end-of-sequence token are trained. With a chat template the prompt is
rendered by ``apply_chat_template(..., add_generation_prompt=True)``; without one by a plain
"System:/User:/Assistant:" layout. `neurosym preview` prints exactly this split.

A text is cut to ``max_length`` (the prompt keeps its end, the response its start) without being
tokenized whole: a long one is tokenized by windows from the kept end, so one 50 MB line costs
what its kept tokens cost (``Renderer._ids``).

``train_on`` (``data.train_on``) picks what the loss sees in a conversation:
- ``last_turn`` (default): the final assistant response and EOS;
- ``assistant``: every assistant turn (earlier ones as the template renders them, end-of-turn
  tokens included) plus the final response and EOS;
- ``all``: every token (train on inputs).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from neurosym.data.errors import DataError
from neurosym.data.examples import Example

IGNORE = -100
TRAIN_ON = ("last_turn", "assistant", "all")
# Tokenizing a long text by windows (Renderer._ids): the first window holds CHARS_PER_TOKEN characters
# per token truncation can keep (tokens average ~4 characters in English BPE, 1 in a character-level
# tokenizer), and MARGIN tokens at each cut are dropped.
CHARS_PER_TOKEN = 8
MARGIN = 32


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

    def __init__(self, tokenizer, max_length: int, system_prompt: Optional[str] = None,
                 train_on: str = "last_turn"):
        if train_on not in TRAIN_ON:
            raise ValueError(f"train_on must be one of {TRAIN_ON}, got {train_on!r}")
        self.train_on = train_on
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.has_template = bool(getattr(tokenizer, "chat_template", None))
        self._system = system_prompt
        self._cache: dict = {}
        if train_on == "assistant" and self.has_template:
            self._check_template_is_incremental()

    def _check_template_is_incremental(self) -> None:
        """`train_on: assistant` places each turn's loss by rendering the conversation turn by turn; a
        template that renders earlier turns differently once later ones follow cannot be split that way.
        Found here, before training starts, rather than at the first multi-turn batch."""
        msgs = [{"role": "system", "content": "s"}, {"role": "user", "content": "u1"},
                {"role": "assistant", "content": "a1"}, {"role": "user", "content": "u2"}]
        render = self.tokenizer.apply_chat_template
        try:
            full = render(msgs, tokenize=False, add_generation_prompt=True)
            before = render(msgs[:2], tokenize=False, add_generation_prompt=True)
            after = render(msgs[:3], tokenize=False)
        except Exception as exc:  # noqa: BLE001 - jinja errors of the model's own template
            raise DataError(f"data.train_on: assistant: the chat template failed on a plain conversation: {exc}") from None
        if not (after.startswith(before) and full.startswith(after)):
            raise DataError("data.train_on: assistant needs a chat template that renders a conversation turn by "
                            "turn (earlier turns unchanged when later ones follow); this one does not. Use "
                            "data.train_on: last_turn or all")

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
            try:
                return self.tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
            except Exception as exc:  # noqa: BLE001 - a template raising on this conversation (roles, system)
                raise DataError(f"{ex.source}: the tokenizer's chat template refuses this example: {exc}") from None
        names = {"system": "System", "user": "User", "assistant": "Assistant"}
        return "".join(f"{names[m['role']]}: {m['content']}\n" for m in msgs) + "Assistant: "

    def _prompt_ids(self, text: str, need: int) -> list:
        # A chat template writes its own special tokens; the plain layout takes the tokenizer's BOS.
        return self._ids(text, not self.has_template, need, keep_end=True)

    def _ids(self, text: str, special: bool, need: int, keep_end: bool) -> list:
        """The token ids of ``text`` that truncation to ``need`` tokens can keep (its end, or its start),
        without tokenizing all of a long text: a 50 MB line would take tens of GB in the tokenizer
        before being cut to max_length. A text longer than :data:`CHARS_PER_TOKEN` characters per needed
        token is tokenized by windows from the kept end (x4 until they hold ``need`` tokens and a margin
        of :data:`MARGIN` tokens on each side, dropped at the cut: a cut inside a word changes only the
        tokens next to it); the result is the full text's ids less part of the far end, so what is kept
        is what tokenizing everything would keep. A shorter text is tokenized whole, as ever."""
        window = CHARS_PER_TOKEN * (need + 2 * MARGIN)
        while len(text) > window:
            piece = text[-window:] if keep_end else text[:window]
            ids = self.tokenizer(piece, add_special_tokens=special)["input_ids"]
            if len(ids) >= need + 2 * MARGIN:
                return ids[MARGIN:] if keep_end else ids[:-MARGIN]
            window *= 4
        return self.tokenizer(text, add_special_tokens=special)["input_ids"]

    def encode(self, ex: Example) -> Encoded:
        hit = self._cache.get(ex)
        if hit is not None:
            return hit
        tok = self.tokenizer
        if self.train_on == "assistant" and any(r == "assistant" for r, _ in ex.messages):
            pieces = self._prompt_pieces(ex)
        else:
            pieces = [(self._prompt_ids(self.prompt_text(ex), self.max_length), False)]
        response_ids = self._ids(ex.response, False, self.max_length, keep_end=False)  # its start is kept
        if tok.eos_token_id is not None:
            response_ids = response_ids + [tok.eos_token_id]
        truncated = False
        if len(response_ids) > self.max_length - 1:  # keep one prompt token; cut the response's tail
            response_ids, truncated = response_ids[: self.max_length - 1], True
        ids = [t for piece, _ in pieces for t in piece]
        labels = [t if trained else IGNORE for piece, trained in pieces for t in piece]
        ids, labels = ids + response_ids, labels + response_ids
        if len(ids) > self.max_length:  # keep the end of the prompt (closest to the answer)
            ids, labels, truncated = ids[-self.max_length:], labels[-self.max_length:], True
        if self.train_on == "all":
            labels = list(ids)
        enc = Encoded(ids, labels, truncated)
        self._cache[ex] = enc
        return enc

    def _prompt_pieces(self, ex: Example) -> list:
        """The prompt as (token ids, trained) pieces: earlier assistant turns trained, the rest masked."""
        msgs = self.messages(ex)
        if not self.has_template:
            names = {"system": "System", "user": "User", "assistant": "Assistant"}
            spans, text = [], ""
            for m in msgs:
                head = f"{names[m['role']]}: "
                if m["role"] == "assistant":
                    spans.append((len(text) + len(head), len(text) + len(head) + len(m["content"]) + 1))
                text += f"{head}{m['content']}\n"
            text += "Assistant: "
        else:
            text = self.prompt_text(ex)
            spans = []
            for j, m in enumerate(msgs):
                if m["role"] != "assistant":
                    continue
                render = self.tokenizer.apply_chat_template
                try:
                    before = render(msgs[:j], tokenize=False, add_generation_prompt=True)
                    after = render(msgs[:j + 1], tokenize=False)
                except Exception as exc:  # noqa: BLE001 - the template refuses a partial conversation
                    raise DataError(f"{ex.source}: the chat template refuses part of this conversation ({exc}); "
                                    f"use data.train_on: last_turn") from None
                if not (after.startswith(before) and text.startswith(after)):
                    raise DataError(
                        f"{ex.source}: this tokenizer's chat template renders earlier turns differently once "
                        f"later turns follow, so the loss of each assistant turn cannot be placed; use "
                        f"data.train_on: last_turn (or all)")
                spans.append((len(before), len(after)))
        pieces, pos = [], 0
        for a, b in spans:
            pieces += [(text[pos:a], False), (text[a:b], True)]
            pos = b
        pieces.append((text[pos:], False))
        out = []
        for i, (chunk, trained) in enumerate(pieces):
            if chunk or (i == 0 and not self.has_template):
                special = i == 0 and not self.has_template  # the plain layout takes the tokenizer's BOS
                out.append((self._ids(chunk, special, self.max_length, keep_end=True), trained))
        return out

    def check(self, examples: list, on_error: str = "raise") -> tuple[list, list]:
        """Encode every example once, before training (this also fills the cache). An example the
        template refuses, or whose response is cut away entirely, is refused with its file:line, or
        skipped and reported with ``on_error="skip"``. Returns (kept examples, "file:line: reason" list);
        a ``TrainSet`` keeps its per-source ``parts`` in step with what was kept."""
        kept, errors = [], []
        counts = []
        parts = getattr(examples, "parts", None) or [(0, len(examples), 1.0, "")]
        for start, stop, *_ in parts:
            n = 0
            for ex in examples[start:stop]:
                try:
                    if self.encode(ex).n_target == 0:
                        raise DataError(f"{ex.source}: nothing left to train on after truncation to "
                                        f"max_length {self.max_length}")
                except DataError as exc:
                    if on_error == "raise":
                        raise DataError(f"{exc}\n  (set data.on_error: skip to skip such examples and count "
                                        f"them)") from None
                    errors.append(str(exc))
                    continue
                kept.append(ex)
                n += 1
            counts.append(n)
        if hasattr(examples, "parts"):
            from neurosym.data.examples import TrainSet
            new_parts, at = [], 0
            for (start, stop, weight, name), n in zip(parts, counts):
                if n == 0:
                    raise DataError(f"{name}: no example survives rendering ({stop - start} skipped); "
                                    f"first: {errors[0] if errors else '?'}")
                new_parts.append((at, at + n, weight, name))
                at += n
            kept = TrainSet(kept, new_parts)
        if not kept:
            raise DataError(f"no example survives rendering; first: {errors[0] if errors else '?'}")
        return kept, errors

    def generation_ids(self, ex: Example) -> list:
        """Token ids of the prompt alone, for generating the student's answer."""
        ids = self._prompt_ids(self.prompt_text(ex), self.max_length - 1)
        return ids[-(self.max_length - 1):]
