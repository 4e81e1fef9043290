"""Importing a user's ``"module:function"`` (``reward.function``, ``teacher.callable``): one loader,
each caller naming its config key, its error class and an example."""
from __future__ import annotations

import importlib
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence


@contextmanager
def extra_sys_path(paths: Sequence[str | Path]) -> Iterator[None]:
    """``paths`` on ``sys.path`` for the block only."""
    added = [str(p) for p in paths if str(p) not in sys.path]
    sys.path[:0] = added
    try:
        yield
    finally:
        for p in added:
            if p in sys.path:
                sys.path.remove(p)


def load_object(spec: Any, key: str, error: type[Exception], search_paths: Sequence[str | Path] = (),
                example: str = "") -> Callable[..., Any]:
    """Import ``"module:function"`` (``function`` may be dotted: ``module:Class.method``); ``search_paths``
    and the current directory are tried for the module. Raises ``error`` naming ``key``, what failed
    and how to fix it."""
    if not isinstance(spec, str) or spec.count(":") != 1 or not all(spec.split(":")):
        raise error(f"{key} must be 'module:function' (got {spec!r}){example}")
    module_name, attr = spec.split(":")
    paths = [*search_paths, Path.cwd()]
    try:
        with extra_sys_path(paths):
            module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        where = ", ".join(str(p) for p in paths)
        raise error(f"{key} {spec!r}: cannot import module {module_name!r} ({exc}). "
                    f"Put {module_name.replace('.', '/')}.py on PYTHONPATH or in one of: {where}") from None
    except Exception as exc:  # the module itself failed while importing
        raise error(f"{key} {spec!r}: importing {module_name!r} failed: {type(exc).__name__}: {exc}") from exc
    fn: Any = module
    for part in attr.split("."):
        fn = getattr(fn, part, None)
        if fn is None:
            raise error(f"{key} {spec!r}: module {module_name!r} ({getattr(module, '__file__', '?')}) "
                        f"has no attribute {attr!r}")
    if not callable(fn):
        raise error(f"{key} {spec!r}: {attr!r} is not callable")
    return fn
