"""neurosym's training loop vs a minimal hand-written PEFT + torch loop: same model, data, steps.

    python experiments/bench_overhead.py [--steps 60] [--repeats 3] [--preset llama]

Both loops run in this process, alternately, after one warm-up each; model loading and the
first step are excluded from both. Prints steps/s of each and the ratio (target >= 0.97).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

HERE = Path(__file__).resolve().parent


def write_config(tmp: Path, model_dir: Path, steps: int, name: str) -> Path:
    cfg = {
        "run": {"name": name, "output_dir": str(tmp / "runs"), "seed": 0},
        "model": {"name_or_path": str(model_dir)},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.05},
        "data": {"train": str(HERE / "data" / "arith_train.jsonl"), "max_length": 256,
                 "system_prompt": "Solve the word problem. End with: The answer is N."},
        "train": {"batch_size": 8, "lr": 1e-3, "max_steps": steps, "warmup": 2, "eval_every": 0,
                  "save_every": 0},
        "tracking": {"mode": "disabled"},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def neurosym_steps_per_s(tmp: Path, model_dir: Path, steps: int, name: str) -> float:
    from neurosym.config.schema import load_config
    from neurosym.observe.events import read_events
    from neurosym.train import train
    out = train(load_config(write_config(tmp, model_dir, steps, name)), quiet=True)
    ev = [e for e in read_events(out.run_dir / "events.jsonl") if e["kind"] == "train"]
    # from the end of step 1 to the end of the last step (same window as the hand loop)
    return (len(ev) - 1) / (ev[-1]["time"] - ev[0]["time"])


def hand_loop_steps_per_s(model_dir: Path, steps: int) -> float:
    """What a careful engineer writes by hand: pre-tokenized data, PEFT, AdamW, cosine, clipping."""
    import json
    import numpy as np
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, get_scheduler

    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(model_dir),
                           LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear",
                                      task_type="CAUSAL_LM"))
    rows = [json.loads(l) for l in open(HERE / "data" / "arith_train.jsonl")]
    system = "Solve the word problem. End with: The answer is N."
    data = []
    for r in rows:
        p = tok.apply_chat_template([{"role": "system", "content": system}, {"role": "user", "content": r["prompt"]}],
                                    tokenize=False, add_generation_prompt=True)
        p_ids = tok(p, add_special_tokens=False)["input_ids"]
        r_ids = tok(r["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        data.append((p_ids + r_ids, [-100] * len(p_ids) + r_ids))
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    sched = get_scheduler("cosine", opt, num_warmup_steps=2, num_training_steps=steps)
    order = np.random.default_rng(0).permutation(len(data))
    model.train()
    t_first = None
    for step in range(steps):
        idx = [order[(step * 8 + i) % len(data)] for i in range(8)]
        width = max(len(data[i][0]) for i in idx)
        ids = torch.full((8, width), tok.pad_token_id)
        labels = torch.full((8, width), -100)
        mask = torch.zeros((8, width), dtype=torch.long)
        for j, i in enumerate(idx):
            n = len(data[i][0])
            ids[j, :n], labels[j, :n], mask[j, :n] = torch.tensor(data[i][0]), torch.tensor(data[i][1]), 1
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        float(loss)  # a real loop logs the loss
        if step == 0:
            t_first = time.perf_counter()
    return (steps - 1) / (time.perf_counter() - t_first)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--preset", default="llama", help="tiny model preset (see neurosym/model/tiny.py)")
    args = ap.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    from neurosym.model.tiny import build_tiny_model
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        model_dir = build_tiny_model(tmp / "model", preset=args.preset)
        neurosym_steps_per_s(tmp, model_dir, 5, "warmup")  # warm-up: imports, allocator
        hand_loop_steps_per_s(model_dir, 5)
        ours, hand = [], []
        for i in range(args.repeats):
            hand.append(hand_loop_steps_per_s(model_dir, args.steps))
            ours.append(neurosym_steps_per_s(tmp, model_dir, args.steps, f"r{i}"))
            print(f"repeat {i}: hand {hand[-1]:.2f} steps/s, neurosym {ours[-1]:.2f} steps/s", file=sys.stderr)
    h, o = statistics.median(hand), statistics.median(ours)
    print(f"{'loop':<12}{'steps/s (median of ' + str(args.repeats) + ')':>28}")
    print(f"{'hand PEFT':<12}{h:>28.2f}")
    print(f"{'neurosym':<12}{o:>28.2f}")
    print(f"ratio neurosym/hand = {o / h:.3f} (target >= 0.97)")


if __name__ == "__main__":
    main()
