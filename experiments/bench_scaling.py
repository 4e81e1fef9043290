"""Scaling: the same job on the same global batch under 1 process, N processes with DDP and N with FSDP2.

    python experiments/bench_scaling.py [--nproc 2] [--steps 12] [--global-batch 8] [--micro-batch 2]
                                        [--model DIR] [--preset llama] [--hidden 512] [--layers 8]
                                        [--max-length 128] [--engines one,ddp,fsdp]

Every run is a real CLI run, one after the other on this machine: ``neurosym train CONFIG``,
``neurosym train CONFIG --nproc N`` (torchrun, DDP) and the same with accelerate's FSDP2 config in the
environment (``ACCELERATE_USE_FSDP=true FSDP_VERSION=2``, wrapping each decoder layer: what
``accelerate launch --config_file`` exports). For each it prints:

* tokens/s: tokens of all processes over the main process's wall time, from the end of the warm-up
  steps to the end of the run (loading, process start and the first steps excluded);
* memory per process (the largest process of the run, launcher agent excluded), sampled from
  ``/proc/PID/status`` every 0.2 s: ``peak`` (VmHWM, loading included: without
  ``fsdp_cpu_ram_efficient_loading`` every process reads the whole base before it is sharded) and
  ``training`` (median resident memory over the timed steps: the sharded base plus one gathered layer);
* the largest adapter difference from the 1-process run (they take the same steps).

On a CPU box the N processes share the cores the 1-process run had to itself, so the tokens/s ratio
is poor; the memory columns are what this measures there. On N GPUs it reports real scaling (read
GPU memory with the run's own logging: the figures here are host memory).
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
WARMUP = 3
FSDP_ENV = {"ACCELERATE_USE_FSDP": "true", "FSDP_VERSION": "2", "FSDP_AUTO_WRAP_POLICY": "TRANSFORMER_BASED_WRAP",
            "FSDP_TRANSFORMER_CLS_TO_WRAP": "LlamaDecoderLayer", "FSDP_RESHARD_AFTER_FORWARD": "true"}


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


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            kids = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            kids = []
        out.extend(int(k) for k in kids)
        todo.extend(int(k) for k in kids)
    return out


def _status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _is_worker(pid: int) -> bool:
    """A training process (``-m neurosym``), not torchrun's agent (``-m neurosym.runtime.launch``)."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return b"neurosym" in argv and b"neurosym.runtime.launch" not in argv


def run(cfg: Path, nproc: int, env: dict) -> tuple[Path, dict]:
    """The run directory and, per training process, (peak KB, [(time, resident KB)])."""
    cmd = [sys.executable, "-m", "neurosym", "train", str(cfg), "--quiet"] + (["--nproc", str(nproc)] if nproc > 1 else [])
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    mem: dict = {}
    while proc.poll() is None:
        for pid in [proc.pid] + _descendants(proc.pid):
            if not _is_worker(pid):
                continue
            rss, hwm = _status_kb(pid, "VmRSS"), _status_kb(pid, "VmHWM")
            if rss is not None:
                peak, series = mem.setdefault(pid, (0, []))
                series.append((time.time(), rss))
                mem[pid] = (max(peak, hwm or rss), series)
        time.sleep(0.2)
    _, err = proc.communicate()
    if proc.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{err[-3000:]}")
    return cfg.parent / "runs" / cfg.stem, mem


def throughput(run_dir: Path) -> tuple[float, float, int, float, float]:
    """tokens/s, steps/s, tokens per step, and the (start, end) time of the timed steps."""
    from neurosym.observe.events import read_events
    ev = [e for e in read_events(run_dir / "events.jsonl") if e["kind"] == "train"]
    window = ev[WARMUP:]
    tokens = sum(e["tokens"] for e in window[1:])  # the steps that end inside (t_start, t_end]
    seconds = window[-1]["time"] - window[0]["time"]
    return tokens / seconds, (len(window) - 1) / seconds, ev[0]["tokens"], window[0]["time"], window[-1]["time"]


def memory(mem: dict, start: float, end: float) -> tuple[float, float]:
    """(peak MiB, training MiB) of the largest process."""
    peak = max(p for p, _ in mem.values()) / 1024
    training = max(statistics.median([kb for t, kb in s if start <= t <= end] or [s[-1][1]]) for _, s in mem.values())
    return peak, training / 1024


def adapter_diff(a: Path, b: Path) -> float:
    from safetensors.torch import load_file

    from neurosym.persist.checkpoint import latest_checkpoint
    x = load_file(str(latest_checkpoint(a) / "adapter_model.safetensors"))
    y = load_file(str(latest_checkpoint(b) / "adapter_model.safetensors"))
    return max(float((x[k] - y[k]).abs().max()) for k in x)


def build_model(tmp: Path, args) -> str:
    from neurosym.model import tiny
    preset = args.preset
    if args.hidden:
        preset = f"{args.preset}-{args.hidden}x{args.layers}"
        tiny.PRESETS[preset] = {**tiny.PRESETS[args.preset], "hidden_size": args.hidden,
                                "intermediate_size": int(2.75 * args.hidden), "num_hidden_layers": args.layers,
                                "num_attention_heads": 8, "num_key_value_heads": 4}
    return str(tiny.build_tiny_model(tmp / "model", preset=preset))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nproc", type=int, default=2)
    ap.add_argument("--steps", type=int, default=12)
    ap.add_argument("--global-batch", type=int, default=8)
    ap.add_argument("--micro-batch", type=int, default=2)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--model", help="a local model folder (default: a random Llama built here)")
    ap.add_argument("--preset", default="llama", help="tiny model preset (see neurosym/model/tiny.py)")
    ap.add_argument("--hidden", type=int, default=512, help="width of the random model built here; 0: the preset")
    ap.add_argument("--layers", type=int, default=8, help="decoder layers of the random model built here")
    ap.add_argument("--engines", default="one,ddp,fsdp", help="which runs, comma-separated: one, ddp, fsdp")
    args = ap.parse_args()
    if args.steps <= WARMUP + 2:
        sys.exit(f"--steps must be more than {WARMUP + 2}")
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("FSDP_", "ACCELERATE_USE_"))}
    base_env.setdefault("OMP_NUM_THREADS", "1")
    plans = {"one": (1, base_env), "ddp": (args.nproc, base_env), "fsdp": (args.nproc, {**base_env, **FSDP_ENV})}
    engines = [e for e in args.engines.split(",") if e]
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = args.model or build_model(tmp, args)
        rows = {}
        for name in engines:
            nproc, env = plans[name]
            rows[name] = run(write_config(tmp, model, name, args), nproc, env)
        import torch
        where = (f"{torch.cuda.device_count()} x {torch.cuda.get_device_name(0)}" if torch.cuda.is_available()
                 else f"CPU, {os.cpu_count()} cores")
        first = next(iter(rows.values()))[0]
        tok = throughput(first)[2]
        print(f"model {model if args.model else f'random Llama, hidden {args.hidden}, {args.layers} layers'}; global "
              f"batch {args.global_batch} examples ({tok} tokens) per step, micro-batch {args.micro_batch}, "
              f"{args.steps} steps ({WARMUP} warm-up steps not timed); {where}")
        print(f"{'run':>12} {'tokens/s':>10} {'steps/s':>8} {'peak MiB/proc':>14} {'training MiB/proc':>18} "
              f"{'|adapter - 1 proc|':>19}")
        ref = rows.get("one", (None,))[0]
        for name, (run_dir, mem) in rows.items():
            tps, sps, _, start, end = throughput(run_dir)
            peak, training = memory(mem, start, end)
            diff = f"{adapter_diff(ref, run_dir):.3g}" if ref is not None and name != "one" else "-"
            label = "1 process" if name == "one" else f"{plans[name][0]} x {name.upper()}"
            print(f"{label:>12} {tps:>10.1f} {sps:>8.3f} {peak:>14.0f} {training:>18.0f} {diff:>19}")


if __name__ == "__main__":
    main()
