"""experiments/compose_eval.py end to end in its --quick setting: trains the tiny base, the modules and
the joint baseline through the job path, composes with every method and prints the whole table."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location("compose_eval", ROOT / "experiments" / "compose_eval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.slow
def test_compose_eval_quick_prints_every_method_unbaked_and_baked(tmp_path, capsys):
    mod = _script()
    assert mod.main(["--quick", "--workdir", str(tmp_path), "--samples", "8", "--max-new-tokens", "40"]) == 0
    out = capsys.readouterr().out
    table = [line for line in out.splitlines() if line.startswith("| ")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in table[1:]]
    seen = {(r[0], r[1], r[2]) for r in rows}
    for n in ("1", "2"):
        for method in mod.OUTPUT_METHODS:
            assert (method, n, "") in seen and (method, n, "yes") in seen
        for method in mod.WEIGHT_METHODS:
            assert (method, n, "") in seen
    assert ("joint", "2", "") in seen and ("base", "0", "") in seen
    assert {("single:positive", "1", ""), ("single:sports", "1", "")} <= seen
    for r in rows:                                   # every figure is a number, none missing
        assert all(0.0 <= float(c) <= 1.0 for c in r[3:6] if c) and float(r[6]) < 0 and float(r[7]) > 0
    assert "output_sum N=2: unbaked" in out and "baked/unbaked" in out
    results = json.loads((tmp_path / "lora" / "results.json").read_text())
    assert len(results) == len(rows)
    # the modules were trained by the ordinary job: run directories with PEFT checkpoints
    for name in ("positive", "sports", "joint2"):
        assert list((tmp_path / "lora" / "runs" / name / "checkpoints").glob("step-*/adapter_model.safetensors"))
