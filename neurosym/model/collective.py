"""Forward passes outside the gradient step, run by every process that holds a part of the model.

Evaluation, batched generation (the symbolic update's student answers, prompt validation, the eval
reward) and the gain probe are asked for by the main process alone: it is the one that talks to the
teacher and decides. With one process, or with every process holding the whole model (DDP), the
main process could run them by itself; a sharded model (FSDP) cannot: each forward pass gathers
the parameters from all processes at once. So every such pass goes through :func:`spread`:

* not bound to a process group (one process, ``neurosym generate``/``eval``): the task runs here on
  all its rows;
* bound (:func:`bind`, done by the multi-process runtime once the model is prepared): the main
  process hands the task to every process; each runs a contiguous part of the rows, padded to the
  same number of rows everywhere (copies of the first row, results dropped), so every process makes
  the same number of forward calls, and generation runs in lockstep (``synced_gpus``: the same
  number of decoding steps on every process); the results come back to the main process in order.

Under DDP the same path is taken (there it spreads the work; under FSDP it is required), so there is
one code path. Rows and results are JSON-able (token ids, numbers): nothing is pickled.
A task is ``fn(model, rows, params) -> list`` (one result per row), registered by name with
:func:`task`; the processes look it up by that name.
"""
from __future__ import annotations

import weakref
from typing import Callable, Protocol, Sequence


TASKS: dict[str, Callable] = {}
_BOUND: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


class Spreader(Protocol):
    """What :func:`bind` binds a model to (the multi-process runtime)."""

    def spread(self, name: str, rows: list, params: dict) -> list: ...


def task(name: str) -> Callable[[Callable], Callable]:
    """Register ``fn(model, rows, params) -> list`` as the task ``name``."""
    def register(fn: Callable) -> Callable:
        TASKS[name] = fn
        return fn
    return register


def bind(model, spreader: Spreader) -> None:
    """From now on, forward passes on ``model`` requested through :func:`spread` run on ``spreader``'s
    processes (called on every process with that process's model)."""
    _BOUND[model] = spreader


def run_task(model, name: str, rows: list, params: dict) -> list:
    """``name`` on ``rows`` in this process, on its own (the part of a spread task that is ours)."""
    if name not in TASKS:
        raise KeyError(f"no collective task {name!r} (known: {', '.join(sorted(TASKS))})")
    out = TASKS[name](model, rows, params)
    if len(out) != len(rows):
        raise RuntimeError(f"collective task {name!r} gave {len(out)} results for {len(rows)} rows")
    return out


def spread(model, name: str, rows: Sequence, params: dict) -> list:
    """The results of task ``name`` on ``rows``, one per row, in order (see the module's docstring)."""
    rows = list(rows)
    if not rows:
        return []
    spreader = _BOUND.get(model)
    if spreader is None:
        return run_task(model, name, rows, params)
    return spreader.spread(name, rows, params)


def part(n: int, world_size: int, rank: int) -> tuple[int, int, int]:
    """(start, stop, padded length) of ``rank``'s contiguous share of ``n`` rows: the shares differ
    by at most one row; every process runs ``ceil(n / world_size)`` rows (padded with copies of row 0)."""
    start, stop = rank * n // world_size, (rank + 1) * n // world_size
    return start, stop, max(1, -(-n // world_size))


def padded_part(rows: list, world_size: int, rank: int) -> tuple[list, int]:
    """This process's rows, padded to the common length, and how many of them are real."""
    start, stop, width = part(len(rows), world_size, rank)
    mine = rows[start:stop]
    return mine + [rows[0]] * (width - len(mine)), len(mine)
