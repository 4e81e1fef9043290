"""A run directory written before the layout change (tests/fixtures/run-0.1.0, neurosym 0.1.0 at
c7202a9) resumes unchanged: its refined rows (whose store position the symbolic update's entry
held then) and prompt versions are kept, and it continues exactly as today's code continues the
same run from the same checkpoint."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file

from neurosym.persist.checkpoint import latest_checkpoint
from neurosym.cli import main
from neurosym.observe.events import read_events
from neurosym.remake.store import RemakeStore
from tests.support.hybrid import KEY_ENV, Teacher, hybrid_config

FIXTURE = Path(__file__).parent / "fixtures" / "run-0.1.0"
WRITTEN_AT = "/tmp/fx"  # where the fixture's paths point


def _copy_fixture(dest: Path) -> Path:
    shutil.copytree(FIXTURE / "model", dest / "model")
    shutil.copytree(FIXTURE / "data", dest / "data")
    run = dest / "runs" / "old"
    shutil.copytree(FIXTURE / "run", run)
    cfg = run / "config.yaml"
    cfg.write_text(cfg.read_text().replace(WRITTEN_AT, str(dest)))
    return run


def _train(run: Path) -> list[tuple]:
    return [(e["step"], e["route"], e["prompt_version"], e["loss"])
            for e in read_events(run / "events.jsonl") if e["kind"] == "train"]


@pytest.mark.slow
def test_an_old_run_directory_resumes_unchanged(tmp_path, openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    openai_server.set_responder(Teacher())
    old = _copy_fixture(tmp_path / "old")
    state = json.loads((old / "checkpoints" / "step-2" / "state.json").read_text())
    assert "remake" not in state["components"] and state["components"]["symbolic"]["store_position"] == 2
    url = f"--set=teacher.base_url={openai_server.base_url}"
    assert main(["resume", str(old), "--set", "train.max_steps=4", url, "--quiet"]) == 0

    # the same job, from step 0 with today's code, stopped at 2 and continued the same way
    new_root = tmp_path / "new"
    shutil.copytree(FIXTURE / "model", new_root / "model")
    cfg = hybrid_config(new_root, new_root / "model", openai_server, name="old",
                        router={"kind": "alternate", "every": 2}, train={"max_steps": 2, "save_every": 2, "eval_every": 0})
    assert main(["train", str(cfg), "--quiet"]) == 0
    new = new_root / "runs" / "old"
    assert main(["resume", str(new), "--set", "train.max_steps=4", "--quiet"]) == 0

    a, b = _train(old), _train(new)
    assert [s[:3] for s in a] == [s[:3] for s in b] and [s[0] for s in a] == [1, 2, 3, 4]
    assert [s[3] for s in a if s[3] is not None] == pytest.approx([s[3] for s in b if s[3] is not None], abs=1e-6)
    w_old, w_new = (load_file(str(latest_checkpoint(r) / "adapter_model.safetensors")) for r in (old, new))
    assert latest_checkpoint(old).name == "step-4"
    assert max(float((w_old[k] - w_new[k]).abs().max()) for k in w_old) <= 1e-6
    with RemakeStore(old / "remake.sqlite") as s_old, RemakeStore(new / "remake.sqlite") as s_new:
        rows_old, rows_new = s_old.rows(), s_new.rows()
    assert [r["id"] for r in rows_old][:2] == [1, 2]  # the rows the old checkpoint counted are kept
    assert [(r["id"], r["prompt"], r["step"]) for r in rows_old] == [(r["id"], r["prompt"], r["step"]) for r in rows_new]
    state4 = json.loads((latest_checkpoint(old) / "state.json").read_text())
    assert state4["components"]["remake"]["position"] == len(rows_old)
    assert state4["components"]["prompts"] == json.loads((latest_checkpoint(new) / "state.json").read_text())["components"]["prompts"]
