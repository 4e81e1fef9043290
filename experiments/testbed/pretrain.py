"""Pretrain the testbed student: a small Llama (character tokenizer, as ``tiny://`` builds) on the world's
pretraining corpus, until it follows the format instructions and answers questions about known entities.

Deterministic: one CPU thread, a fixed seed, deterministic algorithms, data order from the seed. With the
same torch version, two runs write the same weights bit for bit (``--check`` runs the first steps twice
and compares hashes). Writes ``save_pretrained`` files (safetensors) plus ``testbed_student.json`` (spec,
accuracies reached, weights hash) to ``--out``.

    python experiments/testbed/pretrain.py --out experiments/testbed/student
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import world as W  # noqa: E402

SPEC = {"world_seed": 0, "seed": 0, "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 256,
        "steps": 3000, "batch_size": 32, "lr": 3e-3, "warmup": 100}


def build(spec: dict):
    from transformers import LlamaConfig, LlamaForCausalLM

    from neurosym.model.tiny import build_tokenizer

    tok = build_tokenizer(chat_template=True)
    cfg = LlamaConfig(vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id, tie_word_embeddings=True,
                      **{k: spec[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers",
                                              "num_attention_heads", "num_key_value_heads",
                                              "max_position_embeddings")})
    torch.manual_seed(spec["seed"])
    return LlamaForCausalLM(cfg), tok


def messages(row: dict) -> list[dict]:
    msgs = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    return msgs + [{"role": "user", "content": row["prompt"]}]


def encode(tok, row: dict) -> tuple[list[int], list[int]]:
    """(input ids, labels): the loss is on the response and EOS only, as neurosym trains."""
    prompt = tok.apply_chat_template(messages(row), tokenize=False, add_generation_prompt=True)
    p = tok(prompt, add_special_tokens=False)["input_ids"]
    r = tok(row["response"], add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    return p + r, [-100] * len(p) + r


def collate(items, pad: int):
    n = max(len(i) for i, _ in items)
    ids = torch.full((len(items), n), pad)
    labels = torch.full((len(items), n), -100)
    mask = torch.zeros((len(items), n), dtype=torch.long)
    for k, (i, l) in enumerate(items):
        ids[k, :len(i)] = torch.tensor(i)
        labels[k, :len(l)] = torch.tensor(l)
        mask[k, :len(i)] = 1
    return ids, labels, mask


@torch.no_grad()
def generate(model, tok, rows: list[dict], max_new: int = 24, batch: int = 64) -> list[str]:
    """Greedy answers, left-padded batches with the KV cache."""
    model.eval()
    outs = []
    for s in range(0, len(rows), batch):
        chunk = rows[s:s + batch]
        prompts = [tok(tok.apply_chat_template(messages(r), tokenize=False, add_generation_prompt=True),
                       add_special_tokens=False)["input_ids"] for r in chunk]
        n = max(map(len, prompts))
        ids = torch.tensor([[tok.pad_token_id] * (n - len(p)) + p for p in prompts])
        mask = torch.tensor([[0] * (n - len(p)) + [1] * len(p) for p in prompts])
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new, do_sample=False,
                             pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
        outs += [tok.decode(o[n:], skip_special_tokens=True).strip() for o in out]
    model.train()
    return outs


def accuracy(model, tok, rows: list[dict]) -> float:
    answers = generate(model, tok, rows)
    return sum(a == r["response"] for a, r in zip(answers, rows)) / max(1, len(rows))


def probes(world, seed: int = 1) -> dict[str, list[dict]]:
    """Held-out measurement sets: known entities under each operator set (pairs included), plain
    known facts, and reading a fact given in the prompt about an unseen name."""
    rng = random.Random(seed)
    sets = W.op_sets()
    fmt, plain = [], []
    for _ in range(200):
        e, a, ops = rng.choice(world.known), rng.choice(W.ATTRIBUTES), rng.choice(sets[1:])
        fmt.append({"system": W.system_prompt(ops), "prompt": rng.choice(W.QUESTIONS[a]).format(n=e.name),
                    "response": W.apply_ops(e.value(a), a, ops)})
    for e, a in [(e, a) for e in world.known for a in W.ATTRIBUTES]:  # every known fact once
        plain.append({"system": W.BASE_PROMPT, "prompt": rng.choice(W.QUESTIONS[a]).format(n=e.name),
                      "response": e.value(a)})
    target = [{"system": W.hand_prompt(), "prompt": r["prompt"], "response": W.apply_ops(r["response"], "", W.TARGET_OPS)}
              for r in plain]
    new = [{"system": W.BASE_PROMPT, "prompt": W.QUESTIONS["number"][0].format(n=e.name), "response": e.number}
           for e in world.new]
    return {"format_ops": fmt, "known_plain": plain, "known_target_format": target, "new_entities": new}


def weights_hash(model) -> str:
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()


def train(spec: dict, steps: int | None = None, log_every: int = 100, quiet: bool = False, eval_every: int = 0):
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    world = W.make_world(spec["world_seed"])
    corpus = W.pretraining_corpus(world, spec["seed"])
    model, tok = build(spec)
    data = [encode(tok, r) for r in corpus]
    steps = steps or spec["steps"]
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=0.0)
    lr_at = lambda s: spec["lr"] * min(1.0, (s + 1) / spec["warmup"]) * 0.5 * (1 + math.cos(math.pi * s / spec["steps"]))
    rng = random.Random(spec["seed"])
    order: list[int] = []
    model.train()
    t0 = time.perf_counter()
    for step in range(steps):
        if len(order) < spec["batch_size"]:
            more = list(range(len(data)))
            rng.shuffle(more)
            order += more
        idx, order = order[:spec["batch_size"]], order[spec["batch_size"]:]
        ids, labels, mask = collate([data[i] for i in idx], tok.pad_token_id)
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        if not quiet and (step + 1) % log_every == 0:
            print(f"step {step + 1}/{steps} loss {loss.item():.4f} {time.perf_counter() - t0:.0f}s", flush=True)
        if eval_every and (step + 1) % eval_every == 0:  # greedy generation: no RNG drawn, weights unchanged
            sets = probes(world)
            print(json.dumps({"step": step + 1, **{k: round(accuracy(model, tok, sets[k]), 3)
                                                   for k in ("known_plain", "format_ops")}}), flush=True)
    return model, tok, world


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parent / "student"))
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--eval-every", type=int, default=0, help="print probe accuracies every N steps")
    ap.add_argument("--check", action="store_true", help="train 30 steps twice and compare weight hashes")
    args = ap.parse_args(argv)
    if args.check:
        hashes = [weights_hash(train(SPEC, steps=30, quiet=True)[0]) for _ in range(2)]
        print("deterministic" if hashes[0] == hashes[1] else "NOT deterministic", hashes)
        sys.exit(0 if hashes[0] == hashes[1] else 1)
    spec = dict(SPEC, steps=args.steps or SPEC["steps"])
    t0 = time.perf_counter()
    model, tok, world = train(spec, eval_every=args.eval_every)
    minutes = (time.perf_counter() - t0) / 60
    acc = {name: round(accuracy(model, tok, rows), 3) for name, rows in probes(world).items()}
    print(json.dumps(acc))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "testbed_student.json").write_text(json.dumps(
        {"spec": spec, "accuracy": acc, "sha256": weights_hash(model), "train_minutes": round(minutes, 1),
         "torch": torch.__version__}, indent=1) + "\n")
    print(f"saved {out} ({minutes:.1f} min)")


if __name__ == "__main__":
    main()
