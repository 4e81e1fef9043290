"""Fail loudly when a fresh install resolved another major version of a key dependency than the
one the tests ran on (``.ci/expected-majors.txt``).

    .venv/bin/python .ci/check_majors.py                      # the versions installed for this python
    python .ci/check_majors.py --pip-list pip-list.json       # those of `pip list --format=json` output

Exit 0 when every package is installed with its expected major (each is printed), 1 otherwise with
one line per package that differs or is missing. Standard library only.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Callable, Optional

EXPECTED = Path(__file__).with_name("expected-majors.txt")


def read_expected(path: Path) -> dict[str, str]:
    """``{name: version prefix}`` from lines ``name prefix`` (``#`` starts a comment)."""
    expected = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts[1].split(".")):
            raise SystemExit(f"{path}:{lineno}: expected 'name major' (e.g. 'torch 2'), got {line!r}")
        expected[_norm(parts[0])] = parts[1]
    return expected


def _norm(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _release(version: str) -> list[str]:
    """The leading numeric components of ``version`` (``2.13.0+cpu`` -> ``['2', '13', '0']``)."""
    out = []
    for part in version.split("+", 1)[0].split("."):
        digits = ""
        for ch in part:
            if not ch.isdigit():
                break
            digits += ch
        if not digits:
            break
        out.append(str(int(digits)))
        if digits != part:
            break
    return out


def check(expected: dict[str, str], installed: Callable[[str], Optional[str]]) -> list[str]:
    """One problem line per package whose installed version does not start with its expected prefix."""
    problems = []
    for name, prefix in expected.items():
        version = installed(name)
        want = prefix.split(".")
        if version is None:
            problems.append(f"{name}: not installed (expected major {prefix})")
        elif _release(version)[:len(want)] != want:
            problems.append(f"{name}: a fresh install resolved {version}, not the tested major {prefix}")
    return problems


def _from_metadata(name: str) -> Optional[str]:
    from importlib import metadata
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _from_pip_list(path: Path) -> Callable[[str], Optional[str]]:
    versions = {_norm(row["name"]): row["version"] for row in json.loads(path.read_text(encoding="utf-8"))}
    return lambda name: versions.get(_norm(name))


def main(argv: Optional[list] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--expected", type=Path, default=EXPECTED)
    parser.add_argument("--pip-list", type=Path, help="`pip list --format=json` output to check instead")
    args = parser.parse_args(argv)
    expected = read_expected(args.expected)
    installed = _from_pip_list(args.pip_list) if args.pip_list else _from_metadata
    problems = check(expected, installed)
    if problems:
        for line in problems:
            print(f"DEPENDENCY MAJOR CHANGED: {line}", file=sys.stderr)
        print(f"The install is no longer the tested one. Run the tests on it, then update {args.expected} and the "
              "bound in pyproject.toml together (or keep the tested major with a tighter bound).", file=sys.stderr)
        return 1
    print("dependency majors as tested: " + ", ".join(f"{n} {installed(n)}" for n in expected))
    return 0


if __name__ == "__main__":
    sys.exit(main())
