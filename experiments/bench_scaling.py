"""Data-parallel scaling: the same job on the same global batch under 1 process and under N.

    python experiments/bench_scaling.py [--nproc 2] [--steps 30] [--global-batch 16] [--micro-batch 4]
                                        [--model DIR] [--preset llama] [--hidden 256] [--max-length 256]

Both runs are real CLI runs (``neurosym train CONFIG`` and ``neurosym train CONFIG --nproc N``, i.e.
torchrun), one after the other on this machine. Throughput is read from each run's events.jsonl:
tokens of all processes over the main process's wall time, from the end of the warm-up steps to the
end of the run (model loading, process start and the first steps excluded). Prints both side by side
with the ratio N-process/1-process (ideal: N) and the scaling efficiency (ratio / N), and the
largest adapter difference between the two runs (they take the same steps).

On a CPU box the N processes share the cores the 1-process run had to itself, so expect a poor ratio;
on a machine with N GPUs (one process per GPU) this reports real scaling.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
WARMUP = 3


def write_config(tmp: Path, model: str, name: str, args) -> Path:
    cfg = {
        "run": {"name": name, "output_dir": str(tmp / "runs"), "seed": 0},
        "model": {"name_or_path": model},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "data": {"train": str(HERE / "data" / "arith_train.jsonl"), "max_length": args.max_length,
                 "system_prompt": "Solve the word problem. End with: The answer is N."},
        "train": {"batch_size": args.micro_batch, "global_batch_size": args.global_batch, "lr": 1e-3,
                  "max_steps": args.steps, "warmup": 2, "eval_every": 0, "save_every": 0},
        "tracking": {"mode": "disabled"},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(cfg: Path, nproc: int) -> Path:
    cmd = [sys.executable, "-m", "neurosym", "train", str(cfg), "--quiet"] + (["--nproc", str(nproc)] if nproc > 1 else [])
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{proc.stderr[-3000:]}")
    return cfg.parent / "runs" / cfg.stem


def throughput(run_dir: Path) -> tuple[float, float, int]:
    from neurosym.observe.events import read_events
    ev = [e for e in read_events(run_dir / "events.jsonl") if e["kind"] == "train"]
    window = ev[WARMUP:]
    tokens = sum(e["tokens"] for e in window[1:])  # the steps that end inside (t_start, t_end]
    seconds = window[-1]["time"] - window[0]["time"]
    return tokens / seconds, (len(window) - 1) / seconds, ev[0]["tokens"]


def adapter_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    from neurosym.persist.checkpoint import latest_checkpoint
    x = load_file(str(latest_checkpoint(a) / "adapter_model.safetensors"))
    y = load_file(str(latest_checkpoint(b) / "adapter_model.safetensors"))
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--global-batch", type=int, default=16)
    ap.add_argument("--micro-batch", type=int, default=4)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--model", help="a local model folder (default: a tiny random model built here)")
    ap.add_argument("--preset", default="llama", help="tiny model preset (see neurosym/model/tiny.py)")
    ap.add_argument("--hidden", type=int, default=256,
                    help="width of the random model built here (the 64-wide tiny preset is so small that a "
                         "step is mostly overhead); 0: the preset as it is")
    args = ap.parse_args()
    if args.steps <= WARMUP + 2:
        sys.exit(f"--steps must be more than {WARMUP + 2}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = args.model
        if model is None:
            from neurosym import tiny
            preset = args.preset
            if args.hidden:
                preset = f"{args.preset}-{args.hidden}"
                tiny.PRESETS[preset] = {**tiny.PRESETS[args.preset], "hidden_size": args.hidden,
                                        "intermediate_size": 2 * args.hidden, "num_attention_heads": 8,
                                        "num_key_value_heads": 4}
            model = str(tiny.build_tiny_model(tmp / "model", preset=preset))
        rows = {}
        for nproc in (1, args.nproc):
            rows[nproc] = run(write_config(tmp, model, f"p{nproc}", args), nproc)
        t1, s1, tok = throughput(rows[1])
        tn, sn, _ = throughput(rows[args.nproc])
        import torch
        where = (f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
                 else f"CPU, {os.cpu_count()} cores")
        print(f"global batch {args.global_batch} examples ({tok} tokens) per step, micro-batch {args.micro_batch}, "
              f"{args.steps} steps ({WARMUP} warm-up steps not timed); {where}")
        print(f"{'processes':>10} {'tokens/s':>12} {'steps/s':>9}")
        print(f"{1:>10} {t1:>12.1f} {s1:>9.3f}")
        print(f"{args.nproc:>10} {tn:>12.1f} {sn:>9.3f}")
        ratio = tn / t1
        print(f"ratio {args.nproc}/1: {ratio:.2f}x (ideal {args.nproc}x; efficiency {ratio / args.nproc:.0%})")
        print(f"max |adapter difference| between the two runs: {adapter_diff(rows[1], rows[args.nproc]):.3g}")


if __name__ == "__main__":
    main()
