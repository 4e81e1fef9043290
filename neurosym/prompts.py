"""The task's system prompt and its numbered versions (what the symbolic route optimises)."""
from __future__ import annotations

import re
from typing import Optional

# C0/C1 controls (ESC, CR, BEL, backspace...), DEL, and the Unicode format characters that reorder or
# hide text on a terminal (bidi overrides and isolates, zero-width joiners, BOM). Newline and tab stay.
_UNSAFE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb]")


def terminal_safe(text: Optional[str]) -> str:
    """``text`` as it may be printed to a terminal: every control or invisible formatting character
    shown as an escape (``\\x1b``, ``\\u202e``), so what a teacher wrote cannot move the cursor,
    recolour or hide text. Teacher-written prompts are untrusted: print them through this."""
    if text is None:
        return ""

    def esc(m: re.Match) -> str:
        c = ord(m.group())
        return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"

    out = _UNSAFE.sub(esc, str(text))
    # a lone surrogate (possible in JSON text) cannot be encoded for the terminal: escaped too
    return "".join(f"\\u{ord(ch):04x}" if 0xD800 <= ord(ch) <= 0xDFFF else ch for ch in out)


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
