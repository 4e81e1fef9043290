"""experiments/gpu_check.py --dry-run: every part of the GPU check runs on CPU with tiny shapes, so
nothing is first exercised on a lent device; and what the dry run found."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from neurosym.conn.expr import Refused, evaluate, parse_expression

ROOT = Path(__file__).resolve().parent.parent
# parts that need a CUDA-only library (bitsandbytes NF4, flash-attn) or a CUDA kernel (flex_attention's
# compiled block mask): on CPU they run what they can and say so
NEEDS_CUDA = {"qlora-nf4 0.5B", "qlora-nf4 1.5B", "packing flex_attention", "packing flash_attention_2",
              "resume nf4", "merge nf4"}


@pytest.mark.slow
def test_dry_run_reports_every_part(tmp_path):
    sys.path.insert(0, str(ROOT))
    from experiments.gpu_check import PARTS
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1",
               CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(ROOT / "experiments" / "gpu_check.py"), "--dry-run", "--out",
                           str(tmp_path / "out"), "--work", str(tmp_path / "work")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((tmp_path / "out" / "gpu_check.json").read_text())
    rows = {r["part"]: r for r in report["rows"]}
    assert list(rows) == [name for name, _, _ in PARTS], "every part has its row, in order"
    for name, row in rows.items():
        if name in NEEDS_CUDA:
            assert row["status"].startswith("skipped: needs CUDA"), (name, row["status"], row.get("trace"))
        else:
            assert row["status"] == "ok", (name, row["status"], row.get("trace"))
        assert row.get("summary"), name
    md = (tmp_path / "out" / "gpu_check.md").read_text()
    assert md in proc.stdout, "the table is printed"
    for name in rows:
        assert f"| {name} |" in md
    # the code path of the CUDA-only parts ran as far as CPU allows
    assert rows["qlora-nf4 0.5B"]["value"]["neurosym"]["tokens_per_s"] > 0
    assert rows["merge nf4"]["value"]["plain"]["rc"] != 0, "merging a 4-bit run without --dequantize refuses"
    assert rows["merge nf4"]["value"]["dequantize"]["rc"] == 0
    assert rows["resume bf16"]["value"]["killed_at"] < report["shapes"]["resume_steps"]
    assert rows["imports"]["value"]["imported"] == []


def test_gate_subtracts_zero_with_only_subtract_gated():
    """Found by the dry run's conn_eval part: with only subtract gated, `5-0=` went to the LM ("this chain
    needs add"): negate("0") is "0", so a - 0 looked like a sum of two non-negative numbers."""
    calls = []

    def call(name, a, b):
        calls.append(name)
        return str(int(a) - int(b)) if name == "subtract" else str(int(a) + int(b))

    for text, want in (("5-0", "5"), ("0-0", "0"), ("12-3-0", "9"), ("0-5-0", "-5")):
        calls.clear()
        assert evaluate(parse_expression(text), {"-": "subtract"}, call) == want
        assert set(calls) == {"subtract"}
    with pytest.raises(Refused):
        evaluate(parse_expression("5+0"), {"-": "subtract"}, call)  # a sum still needs add
    assert evaluate(parse_expression("7-0+2"), {"-": "subtract", "+": "add"}, call) == "9"


def _ok_part(ctx, deadline):
    return {"status": "ok", "summary": "fine", "value": {"device": "cpu"}}


def _failing_part(ctx, deadline):
    raise ValueError("broken on purpose")


def _hanging_part(ctx, deadline):
    """Forks a measurement that hangs, as a stuck CUDA call would; the part's box must end both."""
    import time as _time

    from experiments.gpu_check import fork_start
    pid, _ = fork_start(_time.sleep, {"secs": 600})
    Path(os.environ["GPU_CHECK_TEST_PID_FILE"]).write_text(str(pid))
    _time.sleep(600)


@pytest.mark.slow  # main() imports torch, transformers and peft before it forks the parts
def test_a_failing_or_hanging_part_is_reported_and_the_next_part_runs(tmp_path, monkeypatch):
    import time

    sys.path.insert(0, str(ROOT))
    import experiments.gpu_check as gc
    pid_file = tmp_path / "leaf.pid"
    monkeypatch.setenv("GPU_CHECK_TEST_PID_FILE", str(pid_file))
    monkeypatch.setattr(gc, "PARTS", [("env", _ok_part, 30), ("boom", _failing_part, 30),
                                      ("hang", _hanging_part, 3), ("after", _ok_part, 30)])
    monkeypatch.setattr(gc, "part_box", lambda name, box, dry: box)  # the boxes above, not the dry run's
    assert gc.main(["--dry-run", "--out", str(tmp_path / "out"), "--work", str(tmp_path / "work")]) == 0
    rows = {r["part"]: r for r in json.loads((tmp_path / "out" / "gpu_check.json").read_text())["rows"]}
    assert rows["env"]["status"] == "ok"
    assert rows["boom"]["status"].startswith("error: ValueError: broken on purpose")
    assert "Traceback" in rows["boom"]["trace"]
    assert rows["hang"]["status"].startswith("timeout")
    assert rows["after"]["status"] == "ok"
    leaf = int(pid_file.read_text())
    for _ in range(200):  # the hung measurement died with its part (reaped by init once orphaned)
        try:
            os.kill(leaf, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the hung measurement {leaf} outlived its part's box")
