"""Helpers to write small job configs and datasets for the tests."""
from __future__ import annotations

import json
from pathlib import Path

import yaml


def arithmetic_rows(n: int, start: int = 0) -> list[dict]:
    return [{"prompt": f"What is {i} plus {i % 7}?", "response": f"The answer is {i + i % 7}."}
            for i in range(start, start + n)]


def write_rows(path: Path, rows) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def write_config(tmp_path: Path, model_dir, name: str = "job", n_train: int = 24, **sections) -> Path:
    """A complete small config; ``sections`` override keys, e.g. train={"max_steps": 5}."""
    train = write_rows(tmp_path / "data" / "train.jsonl", arithmetic_rows(n_train))
    evals = write_rows(tmp_path / "data" / "eval.jsonl", arithmetic_rows(6, start=500))
    cfg = {
        "run": {"name": name, "output_dir": str(tmp_path / "runs"), "seed": 3},
        "model": {"name_or_path": str(model_dir)},
        "lora": {"r": 4, "alpha": 8, "dropout": 0.1},
        "data": {"train": str(train), "eval": str(evals), "max_length": 64, "system_prompt": "Add the numbers."},
        "train": {"batch_size": 4, "grad_accum": 1, "lr": 5e-3, "max_steps": 6, "warmup": 1,
                  "eval_every": 3, "save_every": 3, "keep_last_n": 10},
        "tracking": {"mode": "disabled"},
    }
    for section, values in sections.items():
        cfg.setdefault(section, {}).update(values)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
