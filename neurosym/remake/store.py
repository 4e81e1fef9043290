"""The refined-example store: rewritten prompts that became training examples, in one SQLite file.

Every :meth:`RemakeStore.add` is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``): a crash or an
exception half-way leaves the file as it was before the call. Rows get increasing ids; an example's
``source`` is ``remake:<id>``. A checkpoint records :meth:`RemakeStore.position` (the largest
committed id); on resume :meth:`RemakeStore.truncate_after` deletes the rows written after it and
rewinds the id counter, so the resumed run writes the same ids an uninterrupted run would have, and
no refined example is stored twice.

Standard library only (``sqlite3``); the connection may be used from several threads (calls are
serialised by a lock) and waits ``busy_timeout_s`` for another process's lock before failing.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from neurosym.data.examples import Example

SOURCE_PREFIX = "remake:"
COLUMNS = ("id", "parent_source", "parent_prompt", "prompt", "response", "system", "messages_json",
           "step", "prompt_version", "teacher_model", "feedback", "created")
PROVENANCE = ("parent_source", "parent_prompt", "step", "prompt_version", "teacher_model", "feedback", "created")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS refined (
    id             INTEGER PRIMARY KEY AUTOINCREMENT,
    parent_source  TEXT    NOT NULL,
    parent_prompt  TEXT    NOT NULL,
    prompt         TEXT    NOT NULL,
    response       TEXT    NOT NULL,
    system         TEXT,
    messages_json  TEXT    NOT NULL,
    step           INTEGER NOT NULL,
    prompt_version INTEGER,
    teacher_model  TEXT,
    feedback       TEXT,
    created        REAL    NOT NULL
)
"""


class RemakeStore:
    """Refined examples in SQLite at ``path`` (created with its parent folder if missing).

    :param path: the database file (e.g. ``<run_dir>/remake.sqlite``).
    :param busy_timeout_s: how long to wait for another connection's write lock.
    """

    def __init__(self, path: str | Path, busy_timeout_s: float = 30.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.RLock()
        # isolation_level=None: no implicit transactions; every write is inside an explicit one.
        self._conn = sqlite3.connect(str(self.path), timeout=busy_timeout_s, isolation_level=None,
                                     check_same_thread=False)
        self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_s * 1000)}")
        self._conn.execute("PRAGMA synchronous = FULL")
        with self._transaction() as cur:
            cur.execute(_SCHEMA)

    # -- transactions -------------------------------------------------------------------------------
    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Cursor]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; any exception rolls back and propagates."""
        with self._lock:
            if self._conn is None:
                raise RuntimeError(f"remake store {self.path} is closed")
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE")
            try:
                yield cur
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            else:
                self._conn.execute("COMMIT")
            finally:
                cur.close()

    def _query(self, sql: str, args: tuple = ()) -> list[tuple]:
        with self._lock:
            if self._conn is None:
                raise RuntimeError(f"remake store {self.path} is closed")
            return self._conn.execute(sql, args).fetchall()

    # -- writing ------------------------------------------------------------------------------------
    def _insert(self, cur: sqlite3.Cursor, rewrite: Any, step: int, prompt_version: Optional[int],
                teacher_model: Optional[str], created: float) -> int:
        ex: Example = rewrite.example
        parent: Example = rewrite.parent
        for name, value in (("prompt", ex.prompt), ("response", ex.response), ("parent prompt", parent.prompt)):
            if not isinstance(value, str):
                raise TypeError(f"refined example {name} must be a string, got {type(value).__name__}")
        messages = json.dumps([[r, c] for r, c in ex.messages], ensure_ascii=False)
        cur.execute(
            "INSERT INTO refined (parent_source, parent_prompt, prompt, response, system, messages_json, step, "
            "prompt_version, teacher_model, feedback, created) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (parent.source or "", parent.prompt, ex.prompt, ex.response, ex.system, messages, int(step),
             None if prompt_version is None else int(prompt_version), teacher_model,
             getattr(rewrite, "feedback", None), created))
        return int(cur.lastrowid)

    def add(self, rewrites: Iterable[Any], step: int, prompt_version: Optional[int] = None,
            teacher_model: Optional[str] = None) -> list[Example]:
        """Store ``rewrites`` (objects with ``.example``, ``.parent``, ``.feedback``, e.g.
        :class:`~neurosym.updates.symbolic.textgrad_step.Rewrite`) in one transaction; returns the stored examples,
        each with ``source="remake:<id>"`` and provenance in ``meta``. All or nothing."""
        rewrites = list(rewrites)
        if not rewrites:
            return []
        created = time.time()
        with self._transaction() as cur:
            ids = [self._insert(cur, rw, step, prompt_version, teacher_model, created) for rw in rewrites]
        out = []
        for row_id, rw in zip(ids, rewrites):
            meta = {**rw.example.meta, "parent_source": rw.parent.source or "", "parent_prompt": rw.parent.prompt,
                    "step": int(step), "prompt_version": prompt_version, "teacher_model": teacher_model,
                    "feedback": getattr(rw, "feedback", None), "created": created, "id": row_id}
            out.append(Example(tuple(rw.example.messages), rw.example.response, f"{SOURCE_PREFIX}{row_id}", meta))
        return out

    def truncate_after(self, position: int) -> int:
        """Delete rows with ``id > position`` (written after a checkpoint) and rewind the id counter
        to ``position``; returns how many rows were deleted."""
        position = int(position)
        if position < 0:
            raise ValueError(f"position must be >= 0, got {position}")
        with self._transaction() as cur:
            cur.execute("DELETE FROM refined WHERE id > ?", (position,))
            deleted = cur.rowcount
            cur.execute("UPDATE sqlite_sequence SET seq = ? WHERE name = 'refined' AND seq > ?",
                        (position, position))
        return int(deleted)

    # -- reading ------------------------------------------------------------------------------------
    def position(self) -> int:
        """The largest committed id (0 for an empty store): what a checkpoint records."""
        return int(self._query("SELECT COALESCE(MAX(id), 0) FROM refined")[0][0])

    def count(self) -> int:
        return int(self._query("SELECT COUNT(*) FROM refined")[0][0])

    def rows(self, max_id: Optional[int] = None, max_step: Optional[int] = None) -> list[dict]:
        """Every row as a dict of :data:`COLUMNS`, by id; only ids up to ``max_id`` / steps up to
        ``max_step`` when given (what a checkpoint recorded). One query: one consistent read."""
        cols = ", ".join(COLUMNS)
        where, args = [], []
        if max_id is not None:
            where.append("id <= ?")
            args.append(int(max_id))
        if max_step is not None:
            where.append("step <= ?")
            args.append(int(max_step))
        cond = f" WHERE {' AND '.join(where)}" if where else ""
        return [dict(zip(COLUMNS, r)) for r in self._query(f"SELECT {cols} FROM refined{cond} ORDER BY id",
                                                           tuple(args))]

    def examples(self, max_id: Optional[int] = None, max_step: Optional[int] = None) -> list[Example]:
        """Every stored example (``source="remake:<id>"``, provenance in ``meta``), by id; limits as
        :meth:`rows`."""
        return [row_to_example(r) for r in self.rows(max_id, max_step)]

    def prompts(self) -> list[str]:
        """The stored prompts (to seed the duplicate guard's ``seen`` set on resume)."""
        return [r[0] for r in self._query("SELECT prompt FROM refined ORDER BY id")]

    # -- lifecycle ----------------------------------------------------------------------------------
    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def __enter__(self) -> "RemakeStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __len__(self) -> int:
        return self.count()

    def __repr__(self) -> str:
        return f"RemakeStore({str(self.path)!r})"


def row_to_example(row: dict) -> Example:
    """A stored row back to an :class:`Example` (``source="remake:<id>"``)."""
    messages = tuple((str(r), str(c)) for r, c in json.loads(row["messages_json"]))
    meta = {k: row[k] for k in PROVENANCE}
    meta["id"] = row["id"]
    return Example(messages, row["response"], f"{SOURCE_PREFIX}{row['id']}", meta)


__all__ = ["RemakeStore", "row_to_example", "COLUMNS", "PROVENANCE", "SOURCE_PREFIX"]
