"""A per-row routed run (``router.kind: bandit``: a prompt edit on some rows and a LoRA step on the
others in the same step) killed with SIGKILL resumes exactly: routes, parts, losses, gains, adapter,
refined rows and the router's state are those of the run that was never interrupted."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from safetensors.torch import load_file

from neurosym.observe.events import read_events
from neurosym.persist.checkpoint import latest_checkpoint
from tests.test_resume import _kill_at, _run

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def _config(tmp_path: Path, name: str) -> Path:
    from experiments.testbed.compare import bundled_config

    cfg = bundled_config()
    cfg["run"].update(name=name, output_dir=str(tmp_path / "runs"))
    cfg["train"].update(max_steps=12, save_every=3, eval_every=0)
    cfg["tracking"] = {"mode": "disabled"}
    cfg["router"] = {"kind": "bandit", "epsilon_min": 0.1}
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _summary(run: Path):
    ev = [e for e in read_events(run / "events.jsonl") if e["kind"] == "train"]
    return ([(e["step"], e["route"], e["prompt_version"], e["decision"].get("parts")) for e in ev],
            [e["loss"] for e in ev], [{r: p["gain"] for r, p in e["parts"].items()} for e in ev])


def test_a_partitioned_run_killed_with_sigkill_resumes_exactly(tmp_path):
    ref_cfg = _config(tmp_path / "a", "ref")
    _run("train", str(ref_cfg), "--quiet", timeout=600)
    ref = tmp_path / "a" / "runs" / "ref"
    run = tmp_path / "b" / "runs" / "killed"
    at, _ = _kill_at(_config(tmp_path / "b", "killed"), run, 7)  # after the step-6 checkpoint
    assert at < 12, "the run finished before it could be killed"
    _run("resume", str(run), "--quiet", timeout=600)

    routes, losses, gains = _summary(run)
    ref_routes, ref_losses, ref_gains = _summary(ref)
    assert any(p and len(p) == 2 for *_, p in ref_routes), "the test must exercise a step with two parts"
    assert routes == ref_routes
    assert [l for l in losses if l is not None] == pytest.approx([l for l in ref_losses if l is not None], abs=1e-6)
    assert gains == ref_gains or json.dumps(gains) == json.dumps(ref_gains)
    w, ref_w = (load_file(str(latest_checkpoint(r) / "adapter_model.safetensors")) for r in (run, ref))
    assert max(float((w[k] - ref_w[k]).abs().max()) for k in w) <= 1e-6
    state = lambda r: json.loads((latest_checkpoint(r) / "state.json").read_text())["components"]
    assert state(run)["router"] == state(ref)["router"]
    assert state(run)["verdicts"] == state(ref)["verdicts"]
    # each part's measured gain is credited only to the kinds of row it was given (the router's reason
    # names them: "3 form -> symbolic (value)")
    credited = 0
    for e in (e for e in read_events(ref / "events.jsonl") if e["kind"] == "train"):
        given: dict = {}
        for n, kind, route in re.findall(r"(\d+) (\w+) -> (\w+)", e["decision"].get("reason", "")):
            given.setdefault(route, set()).add(kind)
        for route, part in e["parts"].items():
            if part.get("gain_by_kind") and route in given:
                assert set(part["gain_by_kind"]) <= given[route], (e["step"], route, part, e["decision"]["reason"])
                credited += 1
    assert credited, "the test must see measured per-kind gains"
