"""``testbed://student``: the student pretrained in the routing testbed's world (``experiments/testbed/``).

The weights ship in ``experiments/testbed/student/`` (safetensors, written by
``experiments/testbed/pretrain.py``, which reproduces them bit for bit on CPU); this maps the name to
that folder so the model loads through the ordinary ``from_pretrained`` path.
"""
from __future__ import annotations

from pathlib import Path

TESTBED_SCHEME = "testbed://"
MODELS = {"student": Path("experiments") / "testbed" / "student"}
MARKER = "testbed_student.json"


def resolve_testbed(name: str) -> str:
    """The folder of ``testbed://<model>``; raises FileNotFoundError saying how to build it."""
    key = name[len(TESTBED_SCHEME):] or "student"
    if key not in MODELS:
        raise FileNotFoundError(f"unknown testbed model {name!r}; choose one of "
                                f"{', '.join(TESTBED_SCHEME + k for k in MODELS)}")
    roots = [Path(__file__).resolve().parents[2], Path.cwd()]
    for root in roots:
        folder = root / MODELS[key]
        if (folder / MARKER).exists():
            return str(folder)
    raise FileNotFoundError(
        f"{name}: no pretrained testbed student in {', '.join(str(r / MODELS[key]) for r in roots)}; "
        f"build it with: python experiments/testbed/pretrain.py (from the repository root)")
