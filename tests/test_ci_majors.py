"""CI's check that a fresh install is still the tested one (.ci/check_majors.py), run against fake
`pip list --format=json` outputs, and its agreement with the bounds in pyproject.toml."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "check_majors.py"
EXPECTED = ROOT / ".ci" / "expected-majors.txt"
TESTED = {"torch": "2.13.0+cpu", "transformers": "5.24.0", "peft": "0.21.2", "textgrad": "0.1.8",
          "openai": "3.57.0", "accelerate": "1.16.0", "datasets": "5.2.0", "wandb": "0.31.0"}


def _check(tmp_path, versions: dict, expected: Path = EXPECTED) -> subprocess.CompletedProcess:
    pip_list = tmp_path / "pip-list.json"
    pip_list.write_text(json.dumps([{"name": n, "version": v} for n, v in versions.items()]))
    return subprocess.run([sys.executable, str(SCRIPT), "--pip-list", str(pip_list), "--expected", str(expected)],
                          capture_output=True, text=True, timeout=60)


def test_the_tested_versions_pass(tmp_path):
    proc = _check(tmp_path, {**TESTED, "Unrelated_Pkg": "9.9"})
    assert proc.returncode == 0, proc.stderr
    assert "openai 3.57.0" in proc.stdout and "torch 2.13.0+cpu" in proc.stdout


def test_a_new_major_or_a_missing_package_fails_naming_each(tmp_path):
    proc = _check(tmp_path, {**TESTED, "openai": "4.0.1", "torch": "3.0.0"})
    assert proc.returncode == 1
    assert "openai: a fresh install resolved 4.0.1, not the tested major 3" in proc.stderr
    assert "torch: a fresh install resolved 3.0.0, not the tested major 2" in proc.stderr
    assert "transformers" not in proc.stderr and "pyproject.toml" in proc.stderr
    missing = dict(TESTED)
    del missing["peft"]
    proc = _check(tmp_path, missing)
    assert proc.returncode == 1 and "peft: not installed (expected major 0)" in proc.stderr


def test_a_series_prefix_pins_a_0x_minor(tmp_path):
    expected = tmp_path / "expected.txt"
    expected.write_text("peft 0.21  # a 0.x whose minors break\n")
    assert _check(tmp_path, {"peft": "0.21.9"}, expected).returncode == 0
    proc = _check(tmp_path, {"peft": "0.22.0"}, expected)
    assert proc.returncode == 1 and "peft: a fresh install resolved 0.22.0, not the tested major 0.21" in proc.stderr
    expected.write_text("peft zero\n")
    proc = _check(tmp_path, {"peft": "0.22.0"}, expected)
    assert proc.returncode != 0 and "expected.txt:1: expected 'name major'" in proc.stderr


def test_every_expected_major_is_admitted_by_pyproject_and_ci_checks_it():
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = {Requirement(r).name.lower(): Requirement(r) for r in deps["dependencies"]}
    for extra in deps["optional-dependencies"].values():
        reqs.update({Requirement(r).name.lower(): Requirement(r) for r in extra})
    for req in reqs.values():  # every dependency has an upper bound (a pin counts)
        assert any(s.operator in ("<", "==", "<=", "~=") for s in req.specifier), f"{req} has no upper bound"
    for line in EXPECTED.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, _ = line.split()
            assert TESTED[name] in reqs[name].specifier or TESTED[name].split("+")[0] in reqs[name].specifier, \
                f"{name} {TESTED[name]} is outside pyproject's {reqs[name]}"
    run = (ROOT / ".ci" / "run").read_text()
    assert run.index("pip install") < run.index(".ci/check_majors.py") < run.index("-m pytest")
