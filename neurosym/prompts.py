"""The task's system prompt and its numbered versions (what the symbolic route optimises)."""
from __future__ import annotations

import re
from typing import Optional

# C0 controls but tab and newline, DEL, C1 controls (ESC starts ANSI sequences; CSI is U+009B), and the
# bidi overrides that can make printed text read differently from what it is
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


def terminal_safe(text: Optional[str]) -> str:
    """``text`` as it may be printed to a terminal: control characters (ANSI escape sequences, bell,
    carriage return, ...) shown as ``\\x1b``-style escapes instead of acting on the terminal.

    Teacher-written prompts are untrusted text: print them through this (``neurosym prompts``,
    ``report``, progress lines)."""
    if text is None:
        return ""
    return _UNSAFE.sub(lambda m: m.group(0).encode("unicode_escape").decode("ascii"), str(text))


class PromptHistory:
    def __init__(self, initial: Optional[str]):
        self.versions = [{"version": 0, "text": initial, "step": 0}]

    @property
    def current(self) -> Optional[str]:
        return self.versions[-1]["text"]

    @property
    def version(self) -> int:
        return self.versions[-1]["version"]

    def propose(self, text: str, step: int) -> Optional[int]:
        """Record a new version (None when the text is unchanged)."""
        if text is None or text.strip() == (self.current or "").strip():
            return None
        self.versions.append({"version": self.version + 1, "text": text, "step": step})
        return self.version

    def state_dict(self) -> dict:
        return {"current": self.current, "versions": [dict(v) for v in self.versions]}

    def load_state_dict(self, state: dict) -> None:
        self.versions = [dict(v) for v in state["versions"]]
