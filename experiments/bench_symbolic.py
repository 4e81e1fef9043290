"""What a slow teacher costs the training loop: LoRA-only vs symbolic sync vs symbolic async.

    python experiments/bench_symbolic.py [--steps 24] [--every 6] [--latency 0.5] [--inflight 2]
    python experiments/bench_symbolic.py --steps 60 --every 4 --batch-size 8   # bigger (~6 min)

One process: a tiny Llama built locally, the scripted teacher on 127.0.0.1 answering every call
after ``--latency`` seconds, and the same config (router ``alternate``: a symbolic update every
``--every`` batches) trained three ways: ``always_lora``, ``symbolic.async: false`` and
``symbolic.async: true``. Wall time is the training loop's (first step's start to the last event,
the last async landing included; model load excluded). Target: async <= 1.15x LoRA-only.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _teacher_server import local_teacher, summarize, warm_imports  # noqa: E402

TARGET = 1.15


def write_config(tmp: Path, model_dir: Path, args) -> Path:
    cfg = {
        "run": {"name": "bench", "output_dir": str(tmp / "runs"), "seed": 0},
        "model": {"name_or_path": str(model_dir)},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.05},
        "data": {"train": str(HERE / "data" / "arith_train.jsonl"), "max_length": 256,
                 "system_prompt": "Solve the word problem. End with: The answer is N."},
        "train": {"batch_size": args.batch_size, "lr": 1e-3, "max_steps": args.steps, "warmup": 2,
                  "eval_every": 0, "save_every": 0},
        "tracking": {"mode": "disabled"},
        "teacher": {"timeout_s": 30.0, "max_retries": 1, "max_concurrency": args.concurrency,
                    "price_per_1k_tokens": {"input": 0.001, "output": 0.002}},
        "symbolic": {"max_inflight": args.inflight, "max_new_tokens": 4, "max_rewrites_per_batch": 2},
        "router": {"kind": "alternate", "every": args.every},
        "reward": {"kind": "numeric_match"},
    }
    path = tmp / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(config: Path, teacher: list[str], name: str, *extra: str) -> dict:
    from neurosym.config.schema import load_config
    from neurosym.train import train

    out = train(load_config(config, [*teacher, f"run.name={name}", *extra]), quiet=True)
    return {**summarize(out.run_dir), **time_breakdown(out.run_dir),
            "pending_lora": lora_steps_while_pending(out.run_dir)}


def time_breakdown(run_dir: Path) -> dict:
    """Where the loop's time went: LoRA steps, symbolic steps (inline updates, or async submissions:
    the student's answers are generated on the loop thread), and the wait after the last step for
    async updates still in flight."""
    from neurosym.observe.events import read_events

    train = [e for e in read_events(run_dir / "events.jsonl") if e["kind"] == "train"]
    lora = [e["wall_s"] for e in train if e["route"] == "lora"]
    return {"lora_step_s": sum(lora) / max(1, len(lora)),
            "symbolic_steps_s": sum(e["wall_s"] for e in train if e["route"] == "symbolic"),
            "tail_s": summarize(run_dir)["wall_s"] - (train[-1]["time"] - train[0]["time"] + train[0]["wall_s"])}


def lora_steps_while_pending(run_dir: Path) -> int:
    """LoRA steps taken while at least one async update was in flight: a LoRA train event whose
    step lies in (submission step, landing step] of some update (it lands before step landing+1)."""
    from neurosym.observe.events import read_events

    events = read_events(run_dir / "events.jsonl")
    windows = [(e["symbolic"]["submitted_step"], e["step"]) for e in events if e["kind"] == "symbolic"]
    return sum(any(s < e["step"] <= land for s, land in windows)
               for e in events if e["kind"] == "train" and e["route"] == "lora")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=24)
    ap.add_argument("--every", type=int, default=6, help="router alternate: a symbolic update every N batches")
    ap.add_argument("--latency", type=float, default=0.5, help="seconds the teacher takes per call")
    ap.add_argument("--inflight", type=int, default=2, help="symbolic.max_inflight (async run)")
    ap.add_argument("--concurrency", type=int, default=4, help="teacher.max_concurrency")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--preset", default="llama", help="tiny model preset (see neurosym/model/tiny.py)")
    args = ap.parse_args()

    from neurosym.model.tiny import build_tiny_model
    with tempfile.TemporaryDirectory() as tmp, local_teacher(args.latency) as teacher:
        tmp = Path(tmp)
        config = write_config(tmp, build_tiny_model(tmp / "model", preset=args.preset), args)
        warm_imports()
        run(config, teacher, "warmup", "train.max_steps=3", "router.kind=always_lora")
        results = {}
        for label, extra in (("LoRA-only", ["router.kind=always_lora"]),
                             ("sync", ["symbolic.async=false"]),
                             ("async", ["symbolic.async=true"])):
            results[label] = run(config, teacher, label.lower(), *extra)
            r = results[label]
            print(f"{label}: {r['wall_s']:.1f} s, {r['symbolic_ok']} symbolic updates", file=sys.stderr)

    base = results["LoRA-only"]["wall_s"]
    print(f"\n{args.steps} steps, alternate every {args.every}, teacher latency {args.latency} s/call, "
          f"max_inflight {args.inflight}, teacher.max_concurrency {args.concurrency}")
    print(f"{'run':<10}{'loop wall s':>12}{'x LoRA-only':>13}{'LoRA steps':>12}{'symbolic':>10}"
          f"{'failed':>8}{'teacher calls':>15}{'LoRA while pending':>20}"
          f"{'s/LoRA step':>13}{'symbolic steps s':>18}{'tail wait s':>13}")
    for label, r in results.items():
        pending = r["pending_lora"] if label == "async" else "-"
        print(f"{label:<10}{r['wall_s']:>12.2f}{r['wall_s'] / base:>13.3f}{r['lora_steps']:>12}"
              f"{r['symbolic_ok']:>10}{r['symbolic_failed']:>8}{r['teacher_calls']:>15}{pending:>20}"
              f"{r['lora_step_s']:>13.3f}{r['symbolic_steps_s']:>18.2f}{r['tail_s']:>13.2f}")
    ratio = results["async"]["wall_s"] / base
    verdict = "met" if ratio <= TARGET else f"MISSED by {ratio - TARGET:.3f}x ({(ratio / TARGET - 1) * 100:.0f}%)"
    print(f"ratio sync/LoRA-only = {results['sync']['wall_s'] / base:.3f}")
    print(f"ratio async/LoRA-only = {ratio:.3f} (target <= {TARGET}): {verdict}")


if __name__ == "__main__":
    main()
