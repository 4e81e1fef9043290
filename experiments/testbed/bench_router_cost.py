"""Cost of the learned router itself on the testbed: a LoRA step under the learned router (which measures
the gain of an update before and after it: by generation and the reward, or by the reference answers'
loss, every step or every N steps) against a LoRA step of a LoRA-only job, same config, same steps,
measured side by side in one run. Means, not medians: a gain measured every N steps is paid on one
step in N, and the mean is what the run pays.

A LoRA step's own cost depends on the prompt it trains under, and the routed job's prompt grows
(`Answer.` becomes `Answer. Use upper case. Use underscores for spaces.`: 2x the tokens with this
character tokenizer), so raw step times compare unequal steps. The ratio reported is therefore per
step: (step wall time / the update's own time) in the routed job over the same in the LoRA-only job,
i.e. what the router adds around a LoRA step, relative to what the loop adds in a LoRA-only job.

Also times, on the same batch + probe, the loop's per-example greedy generation against batched greedy
generation (left padding, KV cache: ``accuracy.answers``), the proposed cheaper measurement.

    python experiments/testbed/bench_router_cost.py --steps 40 --every 6
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.testbed import accuracy as A  # noqa: E402


def run(kind: str, steps: int, out: Path, gain_from: str = "reward", gain_every: int = 1) -> list[dict]:
    from neurosym.config.schema import load_config
    from neurosym.train import train

    from experiments.testbed.compare import bundled_config

    cfg = bundled_config()
    cfg["run"].update(name=kind, output_dir=str(out))
    cfg["train"].update(max_steps=steps, save_every=0)
    cfg["tracking"] = {"mode": "disabled"}
    cfg["router"]["kind"] = kind
    cfg["reward"].update(gain_from=gain_from, gain_every=gain_every)
    kind = f"{kind}-{gain_from}-{gain_every}"
    cfg["run"]["name"] = kind
    path = out / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    train(load_config(path), quiet=True)
    return [json.loads(l) for l in (out / kind / "events.jsonl").read_text().splitlines()]


def lora_step_times(events: list[dict]) -> tuple[list[float], list[float]]:
    """(wall time of each LoRA step, the LoRA update's own time in it)."""
    steps = [e for e in events if e.get("kind") == "train" and e["route"] == "lora"]
    return [e["wall_s"] for e in steps], [e["update_s"] for e in steps]


def generation_times(n_rounds: int = 3) -> tuple[float, float]:
    """(per-example greedy, batched greedy) seconds for the routed batch + probe (16 examples)."""
    from neurosym.data import Example
    from neurosym.updates.symbolic.student import make_student_engine

    model, tok = A.load_base()
    rows = A.read_rows(HERE / "data" / "train.jsonl")[:8] + A.read_rows(HERE / "data" / "probe.jsonl")
    engine = make_student_engine(model, tok, max_length=128, max_new_tokens=16)
    one, batched = [], []
    for _ in range(n_rounds):
        t0 = time.perf_counter()
        for r in rows:
            engine.answer(Example((("user", r["prompt"]),), r["response"]), "Answer.")
        one.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        A.answers(model, tok, rows, "Answer.", 128, max_new_tokens=16)
        batched.append(time.perf_counter() - t0)
    return statistics.median(one), statistics.median(batched)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--every", type=int, default=6, help="the gain_every setting measured beside every step "
                                                         "(hybrid.yaml's)")
    args = ap.parse_args(argv)
    settings = [("reward", 1), ("loss", 1), ("reward", args.every), ("loss", args.every)]
    with tempfile.TemporaryDirectory() as tmp:
        base = lora_step_times(run("always_lora", args.steps, Path(tmp)))
        routed = {s: lora_step_times(run("reward_classifier", args.steps, Path(tmp), *s)) for s in settings}
    walls, updates = base
    b = statistics.fmean(walls) / statistics.fmean(updates)
    print(f"LoRA-only job: LoRA step {statistics.fmean(walls) * 1000:.1f} ms, of which the update "
          f"{statistics.fmean(updates) * 1000:.1f} ms (step/update {b:.2f}; mean of {len(walls)})")
    for (gain_from, every), (walls, updates) in routed.items():
        r = statistics.fmean(walls) / statistics.fmean(updates)
        print(f"learned router, gain_from={gain_from:<6} gain_every={every}: LoRA step {statistics.fmean(walls) * 1000:6.1f} ms, "
              f"update {statistics.fmean(updates) * 1000:5.1f} ms (step/update {r:.2f}; mean of {len(walls)}); "
              f"router overhead {r / b:.2f}x (target <= 1.3x)")
    one, batched = generation_times()
    print(f"gain measurement generation (batch + probe, 16 examples): per-example {one * 1000:.0f} ms, "
          f"batched {batched * 1000:.0f} ms ({one / batched:.1f}x faster batched)")


if __name__ == "__main__":
    main()
