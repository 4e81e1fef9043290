"""Per-example rewards: how good the student's output is against the reference.

``make_reward(cfg)`` returns a :class:`Reward`: ``reward(output, reference) -> float`` and
``reward.needs_generation`` (False only for ``neg_loss``, whose value is ``-loss``, computed by the
caller through ``reward.from_loss(loss)``). Pure functions; no model, no I/O.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Callable, Sequence

from neurosym.config.schema import ConfigError, RewardConfig
from neurosym.plugins import load_object

# Integers (optionally with thousands separators), decimals, scientific notation; sign optional.
# A sign counts only when it doesn't follow a word character ("3-4" ends with 4, not -4).
_NUMBER = re.compile(r"(?:(?<![\w.])[-+])?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)(?:[eE][-+]?\d+)?")
_WS = re.compile(r"\s+")


def normalize_text(text: str) -> str:
    """Strip the ends and collapse every run of whitespace to one space."""
    return _WS.sub(" ", str(text)).strip()


def last_number(text: str) -> float | None:
    """The last number written in ``text`` ("1,234.5" -> 1234.5), or None if there is none."""
    matches = _NUMBER.findall(str(text))
    if not matches:
        return None
    try:
        return float(matches[-1].replace(",", ""))
    except ValueError:  # pragma: no cover - the pattern only matches float-parsable text
        return None


class Reward:
    """A reward function. Subclasses set ``name`` and ``needs_generation`` and implement ``__call__``."""

    name: str = ""
    needs_generation: bool = True

    def __call__(self, output: str, reference: str) -> float:
        raise NotImplementedError

    def batch(self, outputs: Sequence[str], references: Sequence[str]) -> list[float]:
        """One reward per (output, reference) pair."""
        if len(outputs) != len(references):
            raise ValueError(f"{len(outputs)} outputs for {len(references)} references")
        return [self(o, r) for o, r in zip(outputs, references)]

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ExactMatch(Reward):
    """1.0 when output and reference are equal after whitespace normalisation, else 0.0."""

    name = "exact_match"

    def __call__(self, output: str, reference: str) -> float:
        return float(normalize_text(output) == normalize_text(reference))


class NumericMatch(Reward):
    """1.0 when the last number in the output equals the last number in the reference.

    Equality is ``math.isclose`` with ``rel_tol`` (default 1e-6) and ``abs_tol`` (1e-9); 0.0 when
    either side has no number.
    """

    name = "numeric_match"

    def __init__(self, rel_tol: float = 1e-6, abs_tol: float = 1e-9) -> None:
        self.rel_tol = rel_tol
        self.abs_tol = abs_tol

    def __call__(self, output: str, reference: str) -> float:
        got, want = last_number(output), last_number(reference)
        if got is None or want is None:
            return 0.0
        return float(math.isclose(got, want, rel_tol=self.rel_tol, abs_tol=self.abs_tol))


class RegexMatch(Reward):
    """Regex reward.

    With a capturing group: the first group of the first match in the output must equal (after
    whitespace normalisation) the first group of the first match in the reference; a reference the
    pattern doesn't match is compared whole. Without a group: 1.0 when the whole stripped output
    matches the pattern (``re.fullmatch``); the reference is not used.
    """

    name = "regex"

    def __init__(self, pattern: str) -> None:
        try:
            self.regex = re.compile(pattern)
        except re.error as exc:
            raise ConfigError(f"reward.pattern {pattern!r} is not a valid regular expression: {exc}") from None
        self.pattern = pattern

    def _extract(self, text: str) -> str | None:
        m = self.regex.search(text)
        return None if m is None or m.group(1) is None else normalize_text(m.group(1))

    def __call__(self, output: str, reference: str) -> float:
        if self.regex.groups == 0:
            return float(self.regex.fullmatch(str(output).strip()) is not None)
        got = self._extract(str(output))
        if got is None:
            return 0.0
        want = self._extract(str(reference))
        return float(got == (want if want is not None else normalize_text(reference)))

    def __repr__(self) -> str:
        return f"RegexMatch({self.pattern!r})"


class FunctionReward(Reward):
    """A user function ``fn(output, reference) -> float`` named as ``"module:function"``."""

    name = "function"

    def __init__(self, spec: str, search_paths: Sequence[str | Path] = ()) -> None:
        self.spec = spec
        self.fn = load_function(spec, search_paths)

    def __call__(self, output: str, reference: str) -> float:
        value = self.fn(output, reference)
        try:
            value = float(value)
        except (TypeError, ValueError):
            raise TypeError(f"reward function {self.spec} returned {value!r}; it must return a float") from None
        return value

    def __repr__(self) -> str:
        return f"FunctionReward({self.spec!r})"


class NegLoss(Reward):
    """reward = -loss. Needs no generation: the caller computes the loss and calls ``from_loss``."""

    name = "neg_loss"
    needs_generation = False

    def from_loss(self, loss: float) -> float:
        return -float(loss)

    def __call__(self, output: str, reference: str) -> float:
        raise TypeError("reward.kind=neg_loss is computed from the loss, not from generated text: "
                        "call reward.from_loss(loss) (reward.needs_generation is False)")


def load_function(spec: str, search_paths: Sequence[str | Path] = ()) -> Callable[[str, str], float]:
    """Import ``reward.function`` (``"module:function"``); :class:`ConfigError` says what failed."""
    return load_object(spec, "reward.function", ConfigError, search_paths)


def make_reward(cfg: RewardConfig, search_paths: Sequence[str | Path] = ()) -> Reward:
    """The reward named by ``cfg.kind``. ``search_paths`` (e.g. the config file's folder) are
    searched, with the cwd, for a ``function`` reward's module."""
    if cfg.kind == "exact_match":
        return ExactMatch()
    if cfg.kind == "numeric_match":
        return NumericMatch()
    if cfg.kind == "regex":
        if not cfg.pattern:
            raise ConfigError("reward.kind=regex needs reward.pattern")
        return RegexMatch(cfg.pattern)
    if cfg.kind == "function":
        if not cfg.function:
            raise ConfigError("reward.kind=function needs reward.function as 'module:function'")
        return FunctionReward(cfg.function, search_paths)
    if cfg.kind == "neg_loss":
        return NegLoss()
    raise ConfigError(f"unknown reward.kind {cfg.kind!r}")
