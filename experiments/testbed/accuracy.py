"""Exact-match accuracy of the testbed student on a split: overall and by hidden kind (knowledge, format,
retention), under a given system prompt, for the base model or a run's checkpoint.

Batched greedy generation (left padding, KV cache) through the job's own Renderer, so the student sees
exactly the training layout. The hidden kind (``meta.kind`` of each row) is only read here, to score.

    python experiments/testbed/accuracy.py runs/testbed-hybrid --split experiments/testbed/data/eval.jsonl
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

import torch


def read_rows(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


@torch.no_grad()
def answers(model, tokenizer, rows: list[dict], system_prompt: Optional[str], max_length: int = 256,
            max_new_tokens: int = 24, batch_size: int = 64) -> list[str]:
    from neurosym.data import Example
    from neurosym.data.render import Renderer

    renderer = Renderer(tokenizer, max_length, system_prompt)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    out: list[str] = []
    try:
        for s in range(0, len(rows), batch_size):
            chunk = rows[s:s + batch_size]
            ids = [renderer.generation_ids(Example((("user", r["prompt"]),), r["response"])) for r in chunk]
            n = max(map(len, ids))
            input_ids = torch.tensor([[pad] * (n - len(i)) + i for i in ids], device=device)
            mask = torch.tensor([[0] * (n - len(i)) + [1] * len(i) for i in ids], device=device)
            gen = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 do_sample=False, num_beams=1, temperature=None, top_p=None, top_k=None,
                                 pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            out += [tokenizer.decode(g[n:], skip_special_tokens=True).strip() for g in gen]
    finally:
        model.train(was_training)
    return out


def score(rows: list[dict], outputs: list[str]) -> dict[str, float]:
    """{"overall": acc, "<kind>": acc per hidden kind, "n": count}."""
    hits: dict[str, list[int]] = {"overall": []}
    for r, o in zip(rows, outputs):
        ok = int(o.strip() == r["response"].strip())
        hits["overall"].append(ok)
        hits.setdefault((r.get("meta") or {}).get("kind", "other"), []).append(ok)
    out = {k: sum(v) / len(v) for k, v in hits.items() if v}
    out["n"] = len(rows)
    return out


def load_base(name_or_path: str = "testbed://student"):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from neurosym.model.tiny import resolve_tiny

    path = resolve_tiny(name_or_path, Path(".models"))
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_pretrained(path), AutoTokenizer.from_pretrained(path)


def prompt_at(run_dir: Path, step: int) -> Optional[str]:
    """The system prompt in force after ``step`` (from events.jsonl's prompt records)."""
    text = None
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "prompt" and rec["step"] <= step:
            text = rec["text"]
    return text


def load_run(run_dir: Path, checkpoint: Optional[str] = None):
    """(model with the checkpoint's adapter, tokenizer, system prompt at that step, config)."""
    from neurosym.persist.checkpoint import find_checkpoint
    from neurosym.config.schema import load_config
    from neurosym.model.load import load_with_adapter

    cfg = load_config(run_dir / "config.yaml", check_files=False)
    ckpt = find_checkpoint(run_dir, checkpoint)
    model, tok, _, _ = load_with_adapter(cfg, run_dir.parent / ".models", ckpt)
    step = json.loads((ckpt / "state.json").read_text())["step"]
    return model, tok, prompt_at(run_dir, step), cfg


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", nargs="?", help="a run directory (default: the base student, no adapter)")
    ap.add_argument("--split", required=True)
    ap.add_argument("--checkpoint")
    ap.add_argument("--system-prompt", help="with no run_dir: the system prompt to answer under")
    args = ap.parse_args(argv)
    rows = read_rows(args.split)
    if args.run_dir:
        model, tok, prompt, cfg = load_run(Path(args.run_dir), args.checkpoint)
        max_length = cfg.data.max_length
    else:
        (model, tok), prompt, max_length = load_base(), args.system_prompt, 256
    print(json.dumps({"system_prompt": prompt, **score(rows, answers(model, tok, rows, prompt, max_length))}))


if __name__ == "__main__":
    main()
