"""What a per-row router sees of each row before it decides (``RowStats``), and the probe rows'
per-row values that measure, per row kind, what each part of a step bought.

The features are generic, not world-specific: the reference answer's loss, whether the student's
greedy answer earns the reward, whether it matches the reference once case, whitespace, punctuation
and separators are normalised away (right in value, wrong in form), the answer's length over the
reference's, and the teacher's last structured verdict on the row (``correct | form | content``,
from a symbolic update's batched evaluation; :class:`RowVerdicts`, saved in the checkpoint). The
student's answers are kept with the statistics: a symbolic update on those rows reuses them.
"""
from __future__ import annotations

import collections
import re
from typing import Optional

from classifiers import BatchStats, RowStats
from neurosym.data.render import IGNORE
from neurosym.model.generation import answer_examples

_NOISE = re.compile(r"[\s\W_]+", re.UNICODE)  # whitespace, punctuation, separators (_ - . , : ; ...)


def normalise(text: str) -> str:
    """``text`` without case, whitespace, punctuation and separators."""
    return _NOISE.sub("", text).casefold()


class RowVerdicts:
    """The teacher's latest verdict per row (by prompt), at most ``limit`` rows (the oldest go first)."""

    def __init__(self, limit: int = 20_000):
        self.limit, self.by_prompt = limit, collections.OrderedDict()

    def get(self, prompt: str) -> Optional[str]:
        return self.by_prompt.get(prompt)

    def note(self, prompts: list[str], verdicts: list[str]) -> None:
        for prompt, verdict in zip(prompts, verdicts):
            if verdict in ("correct", "form", "content"):
                self.by_prompt.pop(prompt, None)
                self.by_prompt[prompt] = verdict
        while len(self.by_prompt) > self.limit:
            self.by_prompt.popitem(last=False)

    def state_dict(self) -> dict:
        return {"by_prompt": list(self.by_prompt.items())}

    def load_state_dict(self, state: Optional[dict]) -> None:
        self.by_prompt = collections.OrderedDict((p, v) for p, v in (state or {}).get("by_prompt", []))


def row_stats(examples, answers: list[str], losses: list, reward, verdicts: RowVerdicts) -> list[RowStats]:
    rows = []
    for ex, answer, loss in zip(examples, answers, losses):
        ref = ex.response
        correct = (reward(answer, ref) >= 1.0) if reward.needs_generation else answer.strip() == ref.strip()
        rows.append(RowStats(loss=loss, correct=bool(correct), form_match=normalise(answer) == normalise(ref),
                             len_ratio=len(answer.strip()) / max(len(ref.strip()), 1),
                             verdict=verdicts.get(ex.prompt)))
    return rows


class Inspector:
    """Per-row statistics of a batch and of the probe rows under the current model and prompt.

    A row whose reference answer is the model's argmax at every one of its tokens under teacher forcing
    (and ends in EOS within ``max_new_tokens``) is one the greedy answer reproduces exactly: its answer
    is taken from the reference-loss forward pass and only the other rows are generated. Whenever the
    loss is wanted (the probe rows; the batch's rows for a router that asks for their loss) this saves
    the generation of every row the student already gets right; without the loss, generating every row
    costs less than a forward pass over the whole rows first."""

    def __init__(self, probe, ctx, forward, max_new_tokens: int, by_loss: bool, verdicts: RowVerdicts):
        """``forward(examples) -> (per-row reference loss, per-row teacher-forced exact)`` (the gain
        probe's :meth:`~neurosym.run.gain.GainProbe.row_forward`, one forward pass)."""
        self.probe, self.ctx, self.forward, self.max_new_tokens = list(probe), ctx, forward, max_new_tokens
        self.by_loss, self.verdicts = by_loss, verdicts
        self._probe_cache: tuple = (None, None)  # (version, (rows, values))

    def losses(self, examples) -> list[float]:
        return self.forward(examples)[0] if examples else []

    def answers(self, examples) -> list[str]:
        ctx = self.ctx
        return answer_examples(ctx.model, ctx.tokenizer, ctx.renderer, examples, self.max_new_tokens,
                               ctx.cfg.train.batch_size * 4) if examples else []

    def reproduced(self, ex) -> Optional[str]:
        """The greedy answer to ``ex`` if the model reproduces its reference exactly (the reference's
        decoded tokens), given that its argmax matched every reference token; None when that does not
        settle it (no EOS, an answer longer than the generation budget, a truncated or multi-piece row)."""
        renderer, tok = self.ctx.renderer, self.ctx.tokenizer
        enc = renderer.encode(ex)
        n = 0
        while n < len(enc.labels) and enc.labels[len(enc.labels) - 1 - n] != IGNORE:
            n += 1
        if (enc.truncated or not n or n > self.max_new_tokens or tok.eos_token_id is None
                or enc.input_ids[-1] != tok.eos_token_id or enc.input_ids[:-n] != list(renderer.generation_ids(ex))):
            return None
        return tok.decode(enc.input_ids[-n:], skip_special_tokens=True).strip()

    def answers_and_losses(self, examples) -> tuple[list[str], list[float]]:
        """Every row's greedy answer and reference loss: one forward pass, then a generation for the rows
        it does not settle."""
        if not examples:
            return [], []
        losses, exact = self.forward(examples)
        answers = [self.reproduced(ex) if hit else None for ex, hit in zip(examples, exact)]
        rest = [i for i, a in enumerate(answers) if a is None]
        for i, a in zip(rest, self.answers([examples[i] for i in rest])):
            answers[i] = a
        return answers, losses

    def batch(self, batch, with_losses: bool = True) -> BatchStats:
        """The batch's rows, and their answers (kept for a symbolic update on them); ``with_losses=False``
        skips the reference-loss forward pass (rows' ``loss`` and the batch's mean loss are then None)."""
        answers, losses = self.answers_and_losses(batch) if with_losses else (self.answers(batch), [None] * len(batch))
        rows = row_stats(batch, answers, losses, self.ctx.reward, self.verdicts)
        known = [x for x in losses if x is not None]
        return BatchStats(mean_loss=sum(known) / len(known) if known else None, max_loss=max(known, default=None),
                          reward_before=None, prompts=tuple(ex.prompt for ex in batch), rows=tuple(rows),
                          answers=tuple(answers))

    def values(self, examples, answers=None) -> list[float]:
        """Each row's value: -loss (``by_loss``), else its reward."""
        if self.by_loss or not self.ctx.reward.needs_generation:
            return [-x for x in self.losses(examples)]
        answers = self.answers_and_losses(examples)[0] if answers is None else answers
        return [float(self.ctx.reward(a, ex.response)) for a, ex in zip(answers, examples)]

    def probe_rows(self, version) -> tuple[list[RowStats], list[float]]:
        """The probe rows' statistics and values under ``version`` (cached per version)."""
        if self._probe_cache[0] != version:
            answers, losses = self.answers_and_losses(self.probe)
            rows = row_stats(self.probe, answers, losses, self.ctx.reward, self.verdicts)
            values = [-x for x in losses] if (self.by_loss or not self.ctx.reward.needs_generation) \
                else [float(self.ctx.reward(a, ex.response)) for a, ex in zip(answers, self.probe)]
            self._probe_cache = (version, (rows, values))
        return self._probe_cache[1]

    def probe_values(self, version) -> list[float]:
        if self._probe_cache[0] == version:
            return self._probe_cache[1][1]
        return self.values(self.probe)


def gain_by_kind(kinds: list[str], before: list[float], after: list[float]) -> dict[str, float]:
    """Mean value change per row kind (rows of kind ``correct`` included: a route may break them)."""
    out: dict[str, list[float]] = {}
    for k, b, a in zip(kinds, before, after):
        out.setdefault(k, []).append(a - b)
    return {k: sum(v) / len(v) for k, v in out.items()}
