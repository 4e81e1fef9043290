"""The layout shows the design: no import circle; imports point down the layers (cli -> train -> run
-> updates -> runtime/teacher -> model/remake -> data/observe -> config -> persist, and neurosym ->
classifiers -> monitors); the root of neurosym/ holds a handful of modules; no function is longer
than a screen; one public name per class; run-directory file names spelled in RunDir alone; each
verb loads only the heavy libraries it uses."""
from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys

import pytest

from tests.support.imports import ROOT, cycles, graph, modules

# higher layers may import lower ones (and their own); never the other way round
LAYERS = [
    ("neurosym.cli", "neurosym.__main__", "neurosym.testing", "neurosym.compose.cli", "neurosym.conn.cli"),
    ("neurosym.train",),
    ("neurosym.run",),
    ("neurosym.updates",),
    ("neurosym.runtime", "neurosym.teacher", "neurosym.compose", "neurosym.conn"),
    ("neurosym.model", "neurosym.remake"),
    ("neurosym.data", "neurosym.observe", "neurosym.reward"),
    ("neurosym.config",),
    ("neurosym.persist", "neurosym.plugins"),
    ("neurosym.errors", "neurosym"),
    ("classifiers",),
    ("monitors",),
]


def layer(module: str) -> int:
    best, rank = -1, None
    for i, names in enumerate(LAYERS):
        for name in names:
            if (module == name or module.startswith(name + ".")) and len(name) > best:
                best, rank = len(name), i
    assert rank is not None, f"{module} is in no layer: add it to LAYERS"
    return rank


def _edges(top_level_only=False):
    # a module's own ancestor packages are imported by Python before it: not a dependency of design
    return {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph(top_level_only).items()}


def test_no_import_circle():
    assert cycles(_edges()) == []


def test_imports_point_down_the_layers():
    upward = sorted(f"{m} -> {t}" for m, ts in _edges().items() for t in ts if layer(t) < layer(m))
    assert upward == []


def test_the_root_of_neurosym_holds_a_handful_of_modules():
    root = sorted(p.name for p in (ROOT / "neurosym").glob("*.py"))
    assert len(root) <= 8, root


def test_no_function_is_longer_than_a_screen():
    long = []
    for name, path in modules().items():
        if not name.startswith("neurosym"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > 80:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({n} lines)")
    assert long == []


def test_no_two_public_classes_share_a_name():
    seen: dict[str, list[str]] = {}
    for name, path in modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                seen.setdefault(node.name, []).append(name)
    assert {k: v for k, v in seen.items() if len(v) > 1} == {}


# a file name of the run directory, or of a checkpoint folder, and the one module allowed to spell it
SPELLED_IN = {**{name: "neurosym.persist.rundir" for name in ("config.yaml", "events.jsonl", "remake.sqlite",
                                                             "wandb_run_id", "mlflow_run_id", "mlflow.db",
                                                             "mlartifacts")},
              **{name: "neurosym.persist.checkpoint" for name in ("state.json", "COMPLETE")}}
OTHER_FILES_OF_THE_SAME_NAME = {("neurosym.data.readers", "state.json")}  # datasets' save_to_disk writes one


def test_run_directory_file_names_are_spelled_in_rundir_alone():
    found = []
    for module, path in modules().items():
        if not module.startswith("neurosym"):
            continue
        for i, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for literal, owner in SPELLED_IN.items():
                if module != owner and (module, literal) not in OTHER_FILES_OF_THE_SAME_NAME and \
                        re.search(r"[\"']" + re.escape(literal) + r"[\"']", code):
                    found.append(f"{path.relative_to(ROOT)}:{i}: {literal}")
    assert found == []


HEAVY = ("torch", "sklearn", "textgrad", "litellm", "wandb", "peft")


def _loaded(args: list[str], cwd, extra_env=None) -> tuple[int, list[str], str]:
    code = ("import sys, json\nfrom neurosym.cli import main\nrc = 0\ntry:\n    rc = main(sys.argv[1:])\n"
            "except SystemExit as e:\n    rc = e.code or 0\n"
            f"print('LOADED', json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\nsys.exit(rc)")
    env = {**os.environ, "PYTHONPATH": str(ROOT), **(extra_env or {})}
    res = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=cwd, env=env,
                         timeout=300)
    line = [x for x in res.stdout.splitlines() if x.startswith("LOADED ")]
    return res.returncode, json.loads(line[-1][7:]) if line else None, res.stdout + res.stderr


@pytest.mark.parametrize("args, none_of", [
    (["--help"], HEAVY),
    (["validate", "experiments/tiny.yaml", "--offline"], HEAVY),
    (["validate", "experiments/testbed/hybrid.yaml", "--offline"], HEAVY),
    (["conn", "run", "add", "12", "30"], ("sklearn", "textgrad", "litellm", "wandb", "peft")),
])
def test_a_light_verb_loads_no_heavy_library(args, none_of):
    rc, loaded, out = _loaded(args, ROOT)
    assert rc == 0, out
    assert not set(loaded) & set(none_of), (args, loaded)


def test_the_prompts_verb_loads_no_heavy_library(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "events.jsonl").write_text(json.dumps({"kind": "prompt", "step": 0, "version": 0, "text": "Answer."}) + "\n")
    rc, loaded, out = _loaded(["prompts", str(run)], tmp_path)
    assert rc == 0, out
    assert loaded == [], loaded


@pytest.mark.slow
def test_a_lora_only_job_loads_no_router_or_teacher_library(tmp_path, tiny_model_dir):
    from tests.support.jobs import write_config
    cfg = write_config(tmp_path, tiny_model_dir, train={"max_steps": 1, "eval_every": 0, "save_every": 0})
    rc, loaded, out = _loaded(["train", str(cfg), "--quiet"], tmp_path)
    assert rc == 0, out
    assert "torch" in loaded and "peft" in loaded
    assert not {"sklearn", "textgrad", "litellm", "wandb"} & set(loaded), loaded


def test_the_public_names_users_import_keep_working():
    code = ("from neurosym.config import load_config, Config, ConfigError\n"
            "from neurosym.train import train, train_step\n"
            "from neurosym.updates import Update, UpdateContext, Outcome, UPDATES\n"
            "from neurosym.data import Example, Renderer, load_examples, collate\n"
            "from neurosym.teacher import make_teacher\n"
            "from neurosym.compose import load, compose\n"
            "from neurosym.conn import register, compile_program, ConnGate\n"
            "from neurosym.run import Run\n"
            "from classifiers import Router, RewardRouter, ROUTERS\n"
            "import neurosym.data.batching as b\n"
            "assert collate is b.collate and callable(collate)\n"
            "print('ok')\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr
    script = ROOT / ".venv" / "bin" / "neurosym"
    if script.exists():  # the console script of an installed checkout
        res = subprocess.run([str(script), "--version"], capture_output=True, text=True, timeout=120)
        assert res.returncode == 0 and "neurosym" in res.stdout, res.stderr
