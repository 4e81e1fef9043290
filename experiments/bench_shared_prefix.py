"""Training steps/s with and without the shared prefix (``train.shared_prefix``), side by side.

    python experiments/bench_shared_prefix.py [--steps 20] [--repeats 3] [--system-words 60] [--width 0]

Both settings run neurosym's own `train()` on the same config, alternately in this process (one
warm-up run each first); only `train.shared_prefix` differs. Every row of a step starts with the chat
template and the system prompt (``--system-words`` words of instructions, as a learned or hand-written
prompt is), which the shared path runs once per micro-batch. A step draws the same examples either way,
so the per-step losses agree (printed as a check). Prints, for each: steps/s over the window from the
end of step 1 to the end of the last step, the token positions the model computed per step (the
compute meter's count), and the ratios.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

WORDS = ("answer with the number only and write it in digits without words units or a full stop then check that "
         "the sum is right before you answer and keep the reply on one line").split()


def system_prompt(words: int) -> str:
    return " ".join(WORDS[i % len(WORDS)] for i in range(words)).capitalize() + "."


def write_config(tmp: Path, model: str, args, share: bool, name: str) -> Path:
    cfg = {
        "run": {"name": name, "output_dir": str(tmp / "runs"), "seed": 0},
        "model": {"name_or_path": model},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},  # the shared path needs no dropout in a gradient step
        "data": {"train": str(Path(args.data).resolve()), "max_length": args.max_length,
                 "system_prompt": system_prompt(args.system_words)},
        "train": {"batch_size": args.batch_size, "lr": 1e-3, "max_steps": args.steps, "warmup": 2,
                  "eval_every": 0, "save_every": 0, "shared_prefix": share},
        "tracking": {"mode": "disabled"},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(tmp: Path, model: str, args, share: bool, name: str) -> tuple[float, list, float]:
    from neurosym.config.schema import load_config
    from neurosym.observe.events import read_events
    from neurosym.train import train
    out = train(load_config(write_config(tmp, model, args, share, name)), quiet=True)
    ev = [e for e in read_events(out.run_dir / "events.jsonl") if e["kind"] == "train"]
    rate = (len(ev) - 1) / (ev[-1]["time"] - ev[0]["time"])
    computed = statistics.mean(e["compute"]["train_tokens"] for e in ev)
    return rate, [e["loss"] for e in ev], computed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=1024)
    p.add_argument("--system-words", type=int, default=60, help="length of the system prompt, in words")
    p.add_argument("--model", default="tiny://llama")
    p.add_argument("--width", type=int, default=0, help="instead of --model: a random 4-layer Llama this wide")
    p.add_argument("--data", default=str(HERE / "data" / "arith_train.jsonl"), help="training file to measure on")
    args = p.parse_args()
    import torch

    from experiments.bench_packing import build_wide_model
    wide = tempfile.TemporaryDirectory()
    if args.width:
        args.model = build_wide_model(Path(wide.name) / f"llama-{args.width}", args.width)
    print(f"device: {'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}; "
          f"torch threads {torch.get_num_threads()}; model {args.model}; batch {args.batch_size}; "
          f"system prompt {args.system_words} words ({len(system_prompt(args.system_words))} characters); "
          f"{args.steps} steps x {args.repeats} repeats; data {args.data}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        run(tmp, args.model, args, False, "warm-full")
        run(tmp, args.model, args, True, "warm-shared")
        rates, losses, computed = {False: [], True: []}, {}, {}
        for k in range(args.repeats):
            for share in (False, True):
                rate, loss, tokens = run(tmp, args.model, args, share, f"{'shared' if share else 'full'}-{k}")
                rates[share].append(rate)
                losses[share], computed[share] = loss, tokens
    diff = max(abs(a - b) for a, b in zip(losses[False], losses[True]))
    f, s = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"full rows:      {f:.2f} steps/s (runs: {', '.join(f'{x:.2f}' for x in rates[False])}); "
          f"{computed[False]:,.0f} token positions per step")
    print(f"shared prefix:  {s:.2f} steps/s (runs: {', '.join(f'{x:.2f}' for x in rates[True])}); "
          f"{computed[True]:,.0f} token positions per step")
    print(f"shared / full = {s / f:.3f} steps/s, {computed[True] / computed[False]:.3f} token positions; "
          f"largest per-step loss difference {diff:.2e} (same examples per step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
