"""`neurosym report` on a run directory it cannot write: a message naming `--out`, exit 2, no traceback."""
from __future__ import annotations

import errno
import os
import tempfile

import pytest

from neurosym.cli import main
from tests.test_inspect import full_events, make_run, png_size, write_checkpoint, write_events


@pytest.fixture
def run(tmp_path):
    run_dir, _ = make_run(tmp_path)
    write_events(run_dir, full_events())
    write_checkpoint(run_dir, 10, [0])
    return run_dir


def _read_only(monkeypatch, folder):
    """Writes into ``folder`` fail as on a read-only mount (root ignores a chmod, so the test says it)."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):
        if dir is not None and os.path.abspath(dir) == os.path.abspath(folder):
            raise OSError(errno.EROFS, "Read-only file system")
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def test_report_on_a_read_only_run_directory_says_to_pass_out(run, tmp_path, monkeypatch, capsys):
    """Was: OSError traceback from tempfile.mkstemp in the run directory."""
    _read_only(monkeypatch, run)
    assert main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot write the report to ") and "Read-only file system" in err
    assert "--out" in err and "Traceback" not in err
    assert not (run / "report.png").exists() and [p for p in run.iterdir() if p.name.startswith(".report")] == []
    out = tmp_path / "elsewhere.png"
    assert main(["report", str(run), "--out", str(out)]) == 0      # the fix the message gives
    assert png_size(out)[0] > 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes anywhere")
def test_report_on_a_chmod_read_only_run_directory(run, capsys):
    run.chmod(0o555)
    try:
        assert main(["report", str(run)]) == 2
        err = capsys.readouterr().err
        assert "permission denied" in err.lower() and "--out" in err and "Traceback" not in err
    finally:
        run.chmod(0o755)


def test_a_per_row_router_is_drawn_per_part_in_gain_per_unit_cost():
    from neurosym.observe.report import _gain_points

    event = {"kind": "train", "step": 3, "route": "symbolic", "gain": 0.5,
             "decision": {"route": "symbolic", "parts": {"symbolic": [0], "lora": [1, 2]},
                          "predicted": {"symbolic": 0.2, "lora": 0.1}},
             "parts": {"symbolic": {"gain": 1.5, "cost": 3.0}, "lora": {"gain": 0.4, "cost": 2.0},
                       "unmeasured": {"gain": None, "cost": 1.0}}}
    points, measured, unpredicted = _gain_points([event])
    assert points == {"symbolic": ([0.2], [0.5]), "lora": ([0.1], [0.2])} and (measured, unpredicted) == (2, 0)
