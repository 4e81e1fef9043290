"""Where an arm's cost goes, from a comparison's run directories (``compare.py --work DIR``).

Each setting's cost is the one ``compare.py`` charges, in LoRA-step units of that setting's pure-LoRA
arm (3 x training tokens + every other forward token + generated tokens, over a pure-LoRA step's),
plus one unit per teacher call (c = 1). It is split into:

- ``LoRA steps``: the steps with a LoRA part (what the same steps would cost at the pure-LoRA arm's size);
- ``longer rows``: the rest of the training tokens: rows grown by the learned system prompt, rows
  the remake mix added to a batch (below 0 when the LoRA parts are smaller than a whole batch);
- ``update forwards``: forward passes inside the updates (a symbolic update's student answers, the
  prompt validation, the gain measured inside a part);
- ``router``: forward passes outside the parts (a per-row router's inspection of the batch, the probe
  rows measured before and after);
- ``calls``: teacher calls.

    python experiments/testbed/cost_breakdown.py runs/compare --arm bandit
"""
from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.testbed.compare import cost, ledger, lora_unit  # noqa: E402
from neurosym.observe.events import read_events  # noqa: E402

PARTS = ("lora_steps", "longer_rows", "update_forwards", "router", "calls")


def _passes(compute: dict) -> int:
    return compute.get("forward_tokens", 0) + compute.get("generated_tokens", 0)


def lora_run(setting: Path) -> Path:
    """The setting's pure-LoRA run: its own, or, for a noisy teacher, the one compare.py ran once for
    the same alpha and seed (teacher-free arms run in the noise-0 setting only)."""
    own = setting / "runs" / "lora"
    if (own / "events.jsonl").exists():
        return own
    alpha, _, seed = setting.name.split("-")  # a0.5-n0.3-s0
    return setting.parent / f"{alpha}-n0.0-{seed}" / "runs" / "lora"


def breakdown(setting: Path, arm: str) -> dict[str, float]:
    """The arm's cost in ``setting`` (a folder with ``runs/<arm>``; the pure-LoRA run: :func:`lora_run`),
    split by ``PARTS``, and ``total``: compare.py's own cost at c = 1 (its ledger and unit), which the
    parts add up to."""
    run = setting / "runs" / arm
    last = {**ledger(run)[-1], "unit": lora_unit({"ledger": ledger(lora_run(setting))})}
    unit, steps = last["unit"], float(last["lora_steps"])
    events = [e for e in read_events(run / "events.jsonl") if e.get("kind") == "train"]
    train = sum(3 * e["compute"]["train_tokens"] for e in events) / unit
    inside = sum(_passes(p.get("compute") or {}) for e in events for p in (e.get("parts") or {}).values()) / unit
    total = cost(last, 1)
    return {"lora_steps": steps, "longer_rows": train - steps, "update_forwards": inside,
            "router": total - last["teacher_calls"] - train - inside, "calls": float(last["teacher_calls"]),
            "total": total}


def table(work: Path, arm: str, noise: str | None = None) -> str:
    """One line per (alpha, noise): each part's mean over the seeds."""
    by: dict[tuple[str, str], list[dict]] = {}
    for setting in sorted((work / "settings").iterdir()):
        if not all((run / "events.jsonl").exists() for run in (lora_run(setting), setting / "runs" / arm)):
            continue
        alpha, n = (part[1:] for part in setting.name.split("-")[:2])  # a0.5-n0.0-s0
        if noise is None or n == noise:
            by.setdefault((alpha, n), []).append(breakdown(setting, arm))
    lines = ["| α | noise | seeds | LoRA steps | + longer rows (prompt, mix) | update forwards | router's inspection + probes "
             "| teacher calls | total (c = 1) |", "|---|---|---|---|---|---|---|---|---|"]
    for (alpha, n), rows in sorted(by.items(), key=lambda kv: (float(kv[0][0]), float(kv[0][1]))):
        mean = {k: statistics.mean(r[k] for r in rows) for k in (*PARTS, "total")}
        lines.append(f"| {alpha} | {n} | {len(rows)} | " + " | ".join(f"{mean[k]:.1f}" for k in (*PARTS, "total")) + " |")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("work", type=Path, help="compare.py's --work folder")
    ap.add_argument("--arm", default="bandit")
    ap.add_argument("--noise", default=None, help="one noise level only (as in the folder names: 0.0, 0.3)")
    args = ap.parse_args(argv)
    print(table(args.work, args.arm, args.noise))


if __name__ == "__main__":
    main()
