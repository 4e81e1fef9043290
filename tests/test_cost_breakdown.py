"""experiments/testbed/cost_breakdown.py splits an arm's cost into its parts, which add up to the cost
compare.py charges that arm (c = 1)."""
import json
from pathlib import Path

import pytest

from experiments.testbed import compare
from experiments.testbed.cost_breakdown import breakdown, table


def _write(run: Path, events: list[dict]) -> None:
    run.mkdir(parents=True)
    (run / "events.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))


def _step(step, route, compute, parts):
    return {"kind": "train", "step": step, "route": route, "compute": compute, "parts": parts, "wall_s": 0.1}


def test_the_parts_add_up_to_compare_costs(tmp_path):
    setting = tmp_path / "settings" / "a0.5-n0.0-s0"
    lora = [_step(s, "lora", {"train_tokens": 100, "forward_tokens": 0, "generated_tokens": 0},
                  {"lora": {"rows": 8, "calls": 0, "compute": {"train_tokens": 100}}}) for s in (1, 2)]
    _write(setting / "runs" / "lora", lora)
    bandit = [
        # a symbolic part (2 calls, 60 forward tokens of student answers) and a LoRA part on longer rows (150
        # tokens), plus 90 forward + 10 generated tokens of the router's inspection outside the parts
        _step(1, "symbolic", {"train_tokens": 150, "forward_tokens": 150, "generated_tokens": 10},
              {"symbolic": {"rows": 3, "calls": 2, "compute": {"forward_tokens": 60}},
               "lora": {"rows": 5, "calls": 0, "compute": {"train_tokens": 150}}}),
        _step(2, "lora", {"train_tokens": 120, "forward_tokens": 0, "generated_tokens": 0},
              {"lora": {"rows": 8, "calls": 0, "compute": {"train_tokens": 120}}}),
        {"kind": "eval", "step": 2, "loss": 1.0}]
    _write(setting / "runs" / "bandit", bandit)
    got = breakdown(setting, "bandit")
    unit = 300.0  # 3 x 100 training tokens per pure-LoRA step
    assert got["lora_steps"] == 2
    assert got["longer_rows"] == pytest.approx(3 * 270 / unit - 2)
    assert got["update_forwards"] == pytest.approx(60 / unit)
    assert got["router"] == pytest.approx(100 / unit)
    assert got["calls"] == 2
    row = {**compare.ledger(setting / "runs" / "bandit")[-1], "unit": compare.lora_unit(
        {"ledger": compare.ledger(setting / "runs" / "lora")})}
    assert got["total"] == pytest.approx(compare.cost(row, 1))
    lines = table(tmp_path, "bandit").splitlines()
    assert lines[2].startswith("| 0.5 | 0.0 | 1 | 2.0 |") and lines[2].endswith(f"| {got['total']:.1f} |")
    # a noisy teacher's setting: compare.py ran the teacher-free arms once, in the noise-0 setting
    noisy = tmp_path / "settings" / "a0.5-n0.3-s0"
    _write(noisy / "runs" / "bandit", bandit)
    assert breakdown(noisy, "bandit") == got
    assert table(tmp_path, "bandit").splitlines()[3].startswith("| 0.5 | 0.3 | 1 | 2.0 |")
