"""Training tokens/s with and without packing, side by side, on the bundled arithmetic data.

    python experiments/bench_packing.py [--steps 30] [--repeats 3] [--batch-size 8] [--max-length 256]

Both settings run neurosym's own `train()` on the same config, alternately in this process (one
warm-up run each first); only `data.packing` differs. A step draws the same examples either way, so
the per-step losses agree (printed as a check) and the only difference is how the step's examples are
laid out: padded rows of `batch_size` examples, or packed rows of up to `max_length` tokens
(`batch_size` rows per micro-batch). Tokens are real tokens (no padding); the window runs from the end
of step 1 to the end of the last step. Prints tokens/s of each, the ratio, and the padding share.
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


def write_config(tmp: Path, model: str, args, packing: bool, name: str) -> Path:
    cfg = {
        "run": {"name": name, "output_dir": str(tmp / "runs"), "seed": 0},
        "model": {"name_or_path": model},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},  # no dropout: the loss check compares like with like
        "data": {"train": str(Path(args.data).resolve()), "max_length": args.max_length,
                 "system_prompt": "Solve the word problem. End with: The answer is N.", "packing": packing},
        "train": {"batch_size": args.batch_size, "grad_accum": args.grad_accum, "lr": 1e-3,
                  "max_steps": args.steps, "warmup": 2, "eval_every": 0, "save_every": 0},
        "tracking": {"mode": "disabled"},
    }
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def run(tmp: Path, model: str, args, packing: bool, name: str) -> tuple[float, list, int]:
    from neurosym.config.schema import load_config
    from neurosym.observe.events import read_events
    from neurosym.train import train
    out = train(load_config(write_config(tmp, model, args, packing, name)), quiet=True)
    ev = [e for e in read_events(out.run_dir / "events.jsonl") if e["kind"] == "train"]
    tokens = sum(e["tokens"] for e in ev[1:])
    return tokens / (ev[-1]["time"] - ev[0]["time"]), [e["loss"] for e in ev], tokens


def padding_share(model: str, args) -> tuple[float, float]:
    """Share of padded positions per step, padded vs packed layouts (same examples)."""
    from neurosym.config.schema import load_config
    from neurosym.data import Renderer, load_examples, make_micro_batches
    from neurosym.run.batches import BatchSource
    from neurosym.model.load import load_tokenizer
    with tempfile.TemporaryDirectory() as d:
        cfg = load_config(write_config(Path(d), model, args, False, "pad"))
        tok = load_tokenizer(cfg.model, Path(d) / ".models")
    train, _ = load_examples(cfg.data.train, cfg.data)
    r = Renderer(tok, args.max_length, cfg.data.system_prompt)
    src = BatchSource(train, 0, args.batch_size * args.grad_accum, 0.0)
    out = []
    for packing in (False, True):
        real = total = 0
        for _ in range(args.steps):
            encs = [r.encode(ex) for ex in src.next()]
            for b in make_micro_batches(encs, args.batch_size, tok.pad_token_id, packing, args.max_length):
                real += int(b["attention_mask"].sum())
                total += b["input_ids"].numel()
        out.append(1 - real / total)
    return out[0], out[1]


def build_wide_model(out: Path, width: int) -> str:
    """A random Llama of the given width with the tiny char tokenizer: at realistic widths the linear
    layers dominate the cost, as in real models (tiny://llama is so narrow that attention dominates)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    from neurosym.model.tiny import build_tokenizer
    tok = build_tokenizer()
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True, hidden_size=width,
                      intermediate_size=width * 4, num_hidden_layers=4, num_attention_heads=max(1, width // 64),
                      num_key_value_heads=max(1, width // 128), max_position_embeddings=1024)
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1)
    p.add_argument("--max-length", type=int, default=256)
    p.add_argument("--model", default="tiny://llama")
    p.add_argument("--width", type=int, default=0, help="instead of --model: a random 4-layer Llama this wide")
    p.add_argument("--data", default=str(HERE / "data" / "arith_train.jsonl"), help="training file to measure on")
    args = p.parse_args()
    import torch
    wide = tempfile.TemporaryDirectory()
    if args.width:
        args.model = build_wide_model(Path(wide.name) / f"llama-{args.width}", args.width)
    print(f"device: {'cuda ' + torch.cuda.get_device_name() if torch.cuda.is_available() else 'cpu'}; "
          f"torch threads {torch.get_num_threads()}; model {args.model}; batch {args.batch_size} x accum "
          f"{args.grad_accum}; max_length {args.max_length}; {args.steps} steps x {args.repeats} repeats; "
          f"data {args.data}")
    pad_unpacked, pad_packed = padding_share(args.model, args)
    print(f"padding share of the positions computed: unpacked {pad_unpacked:.1%}, packed {pad_packed:.1%}")
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        run(tmp, args.model, args, False, "warm-unpacked")
        run(tmp, args.model, args, True, "warm-packed")
        rates = {False: [], True: []}
        losses = {}
        for k in range(args.repeats):
            for packing in (False, True):
                rate, loss, _ = run(tmp, args.model, args, packing, f"{'packed' if packing else 'unpacked'}-{k}")
                rates[packing].append(rate)
                losses[packing] = loss
    diff = max(abs(a - b) for a, b in zip(losses[False], losses[True]))
    u, q = statistics.median(rates[False]), statistics.median(rates[True])
    print(f"unpacked: {u:,.0f} tokens/s (runs: {', '.join(f'{x:,.0f}' for x in rates[False])})")
    print(f"packed:   {q:,.0f} tokens/s (runs: {', '.join(f'{x:,.0f}' for x in rates[True])})")
    print(f"packed / unpacked = {q / u:.3f}; largest per-step loss difference {diff:.2e} (same examples per step)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
