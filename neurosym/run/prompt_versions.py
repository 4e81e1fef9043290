"""The task's system prompt and its numbered versions in a run (what the symbolic route optimises).
Saved in every checkpoint (``components.prompts``)."""
from __future__ import annotations

from typing import Optional


class PromptVersions:
    """Version 0 is the config's ``data.system_prompt``; each accepted rewrite is the next version."""

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
