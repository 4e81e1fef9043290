"""``events.jsonl``: one JSON record per step (and per eval), appended as the run goes.

On resume from step N the log is cut back to the records of steps <= N (a SIGKILL can leave
records past the checkpoint and a half-written last line), so every step appears exactly once; a
start from step 0 (no checkpoint) keeps nothing of a killed attempt (``keep_through=-1``).
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from neurosym.persist.atomic import atomic_write_text


def _clean(v):
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class EventLog:
    def __init__(self, path: Path, keep_through: int = -1):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._truncate(keep_through)
        self._f = open(self.path, "a", encoding="utf-8")

    def _truncate(self, keep_through: int) -> None:
        if not self.path.exists():
            return
        kept = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # the torn last line of a killed run
            if rec.get("step", 0) <= keep_through:
                kept.append(line)
        atomic_write_text(self.path, "".join(k + "\n" for k in kept))

    def write(self, record: dict) -> None:
        self._f.write(json.dumps({k: _clean(v) for k, v in record.items()}) + "\n")
        self._f.flush()

    def close(self) -> None:
        self._f.close()


def read_events(path: Path) -> list[dict]:
    out = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            pass
    return out
