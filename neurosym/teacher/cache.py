"""A response cache in a SQLite file inside the run directory.

The key is the sha256 of the canonical JSON of (model, messages, sampling params), so a resumed or
repeated run replays identical answers without paying again. One connection per cache object,
guarded by a lock (safe from several threads); WAL mode and a busy timeout let several engines or
processes share one file. The first answer stored for a key wins.
"""
from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

CACHE_FILENAME = "teacher_cache.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    response TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL DEFAULT 0,
    completion_tokens INTEGER NOT NULL DEFAULT 0,
    created REAL NOT NULL
)
"""


@dataclass(frozen=True)
class CachedResponse:
    text: str
    prompt_tokens: int
    completion_tokens: int


def cache_key(model: str, messages: list[dict], params: dict[str, Any]) -> str:
    """sha256 hex digest of the canonical JSON of the request."""
    blob = json.dumps({"model": model, "messages": messages, "params": params},
                      sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """Teacher answers keyed by :func:`cache_key`, stored in ``path`` (created if missing)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn: Optional[sqlite3.Connection] = sqlite3.connect(
            str(self.path), timeout=30.0, check_same_thread=False, isolation_level=None)
        with self._lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA busy_timeout=30000")
            self._conn.execute(_SCHEMA)

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            raise RuntimeError(f"response cache {self.path} is closed")
        return self._conn

    def get(self, key: str) -> Optional[CachedResponse]:
        """The stored answer for ``key``, or ``None``."""
        with self._lock:
            row = self._db().execute(
                "SELECT response, prompt_tokens, completion_tokens FROM responses WHERE key = ?", (key,)
            ).fetchone()
        return CachedResponse(row[0], int(row[1]), int(row[2])) if row else None

    def put(self, key: str, model: str, text: str, prompt_tokens: int = 0, completion_tokens: int = 0) -> None:
        """Store an answer; an answer already stored under ``key`` is kept."""
        with self._lock:
            self._db().execute(
                "INSERT OR IGNORE INTO responses (key, model, response, prompt_tokens, completion_tokens, created)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (key, model, text, int(prompt_tokens), int(completion_tokens), time.time()))

    def delete(self, key: str) -> bool:
        """Forget the answer under ``key``; True if there was one."""
        with self._lock:
            cur = self._db().execute("DELETE FROM responses WHERE key = ?", (key,))
        return cur.rowcount > 0

    def __len__(self) -> int:
        with self._lock:
            return int(self._db().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __repr__(self) -> str:
        return f"ResponseCache({str(self.path)!r})"
