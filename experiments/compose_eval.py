"""Compose trained modules and measure it: attribute control, fluency and speed, every method, N = 1, 2, 4.

1. One attribute classifier per attribute (scikit-learn: character TF-IDF + logistic regression), trained
   on a held-out split of the attribute data (experiments/compose/make_attribute_data.py).
2. A base model. With ``tiny://<preset>`` (default) a tiny Llama is first pretrained (full fine-tune) on
   the whole dataset, so it writes this world's sentences with random attributes; a real model
   (``--base Qwen/...``) is used as it is.
3. One adapter per target attribute value (positive, sports, today, home), each trained through the
   ordinary job path (``neurosym.train.train(cfg)``) on the rows with that value; plus the joint-training
   baseline per N: one adapter on the N datasets together, from the config alone (``data.train`` lists
   the N per-attribute files with equal mixing weights).
4. Every composition method at N = 1 (positive), 2 (+ sports), 4 (+ today, home), unbaked and baked,
   sampled from a fixed prompt set with a fixed seed; each generation is classified.

Columns: accuracy per targeted attribute (share of samples the classifier puts in the target value) and
on all targets at once; fluency = mean log-prob per generated token under the base model; tok/s of
greedy generation of a fixed length (CPU time of the process on CPU, wall time on CUDA), and its ratio to
one module (the N=1 single module, timed in the same alternating pass).

  python experiments/compose_eval.py                 # tiny model on CPU, a few minutes
  python experiments/compose_eval.py --quick         # the CI setting (N = 1, 2; short training)
  python experiments/compose_eval.py --base Qwen/Qwen2.5-0.5B --device cuda --adapter-steps 300
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

import torch  # noqa: E402
import yaml  # noqa: E402

from neurosym.data import Example, Renderer, collate  # noqa: E402

TARGETS = [("sentiment", "positive"), ("topic", "sports"), ("time", "today"), ("place", "home")]
OUTPUT_METHODS = ["output_sum", "output_avg", "output_weighted"]
WEIGHT_METHODS = ["weight_avg", "weight_sum", "weight_linear", "cat", "svd", "ties", "dare_linear", "dare_ties"]
LAMBDA = 1.5            # lambda_i for output_weighted / weight_linear


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"prompt": r["prompt"], "response": r["response"]}) + "\n" for r in rows))
    return path


# ------------------------------------------------------------------------------ classifiers

def train_classifiers(rows: list[dict], attributes: list[str], seed: int):
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    cut = int(len(rows) * 0.8)
    out, held = {}, {}
    for attr in attributes:
        clf = make_pipeline(TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), sublinear_tf=True),
                            LogisticRegression(max_iter=2000, random_state=seed))
        clf.fit([r["response"] for r in rows[:cut]], [r[attr] for r in rows[:cut]])
        held[attr] = clf.score([r["response"] for r in rows[cut:]], [r[attr] for r in rows[cut:]])
        out[attr] = clf
    return out, held


# ------------------------------------------------------------------------------ base model

def pretrain_tiny(preset: str, rows: list[dict], out: Path, steps: int, seed: int, device) -> Path:
    """Full fine-tune of a tiny random Llama on all rows, so the base speaks the dataset's language."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from neurosym.model.tiny import build_tiny_model

    if (out / "PRETRAINED").exists():
        return out
    src = build_tiny_model(out.parent / f"tiny-{preset}-init", preset=preset, seed=seed)
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModelForCausalLM.from_pretrained(src).to(device).train()
    render = Renderer(tok, max_length=128)
    encoded = [render.encode(Example((("user", r["prompt"]),), r["response"])) for r in rows]
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for g in opt.param_groups:
            g["lr"] = 3e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(len(encoded), (32,), generator=gen).tolist()
        batch = {k: v.to(device) for k, v in collate([encoded[i] for i in idx], tok.pad_token_id).items()}
        loss = model(**batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    print(f"pretrained tiny base: {steps} steps, last loss {loss.item():.3f}", flush=True)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    (out / "PRETRAINED").write_text(str(steps))
    return out


# ------------------------------------------------------------------------------ adapters

def train_adapter(name: str, parts: dict[str, list[dict]], base: str, work: Path, steps: int, seed: int, lr: float,
                  kind: str = "lora") -> Path:
    """One adapter through the ordinary job path (config -> neurosym.train.train), on one dataset per
    entry of ``parts`` (several: a weighted mixture, equal weights, as a user would configure it)."""
    from neurosym.persist.checkpoint import latest_checkpoint
    from neurosym.config.schema import load_config
    from neurosym.train import train

    run_dir = work / "runs" / name
    if latest_checkpoint(run_dir) is not None:
        return run_dir
    files = {part: str(write_jsonl(work / "data" / f"{part}.jsonl", rows)) for part, rows in parts.items()}
    data = (next(iter(files.values())) if len(files) == 1
            else [{"path": path, "weight": 1.0} for path in files.values()])
    cfg = {"run": {"name": name, "output_dir": str(work / "runs"), "seed": seed},
           "model": {"name_or_path": base},
           "lora": ({"r": 8, "alpha": 16, "dropout": 0.0, "target_modules": "all-linear"} if kind == "lora"
                    else {"method": "ia3"}),
           "data": {"train": data, "max_length": 128},
           "train": {"batch_size": 16, "lr": lr, "max_steps": steps, "warmup": max(1, steps // 20),
                     "scheduler": "cosine", "eval_every": 0, "save_every": 0, "keep_last_n": 1},
           "tracking": {"mode": "disabled"}}
    path = work / "configs" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    out = train(load_config(path), quiet=True)
    print(f"trained {name}: {sum(map(len, parts.values()))} rows from {len(parts)} dataset(s), {steps} steps",
          flush=True)
    return out.run_dir


# ------------------------------------------------------------------------------ measuring

class Bench:
    def __init__(self, tokenizer, base_model, classifiers, prompts, samples, max_new, seed, device, reps):
        self.tok, self.base, self.clf = tokenizer, base_model, classifiers
        self.device, self.max_new, self.seed, self.reps = device, max_new, seed, reps
        render = Renderer(tokenizer, max_length=128)
        texts = [render.prompt_text(Example((("user", p),), "")) for p in prompts]
        self.prompt_ids = [render._prompt_ids(t, render.max_length) for t in texts]
        self.sample_prompts = [self.prompt_ids[i % len(self.prompt_ids)] for i in range(samples)]

    def _batch(self, prompts):
        width = max(map(len, prompts))
        pad = self.tok.pad_token_id
        ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts])          # left padding
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts])
        return ids.to(self.device), mask.to(self.device)

    @torch.no_grad()
    def generate(self, model) -> list[list[int]]:
        ids, mask = self._batch(self.sample_prompts)
        torch.manual_seed(self.seed)
        out = model.generate(input_ids=ids, attention_mask=mask, do_sample=True, temperature=0.7, top_k=0,
                             max_new_tokens=self.max_new, pad_token_id=self.tok.pad_token_id)
        gen = []
        for row in out[:, ids.shape[1]:].tolist():
            if self.tok.eos_token_id in row:
                row = row[: row.index(self.tok.eos_token_id) + 1]
            gen.append([t for t in row if t != self.tok.pad_token_id])
        return gen

    @torch.no_grad()
    def fluency(self, generations) -> float:
        """Mean log-prob per generated token under the base model."""
        total, count = 0.0, 0
        for prompt, gen in zip(self.sample_prompts, generations):
            if not gen:
                continue
            ids = torch.tensor([prompt + gen], device=self.device)
            logp = torch.log_softmax(self.base(ids).logits[0, len(prompt) - 1:-1].float(), -1)
            total += logp.gather(1, ids[0, len(prompt):, None]).sum().item()
            count += len(gen)
        return total / max(count, 1)

    @torch.no_grad()
    def side_by_side(self, models: dict, reps: int) -> dict:
        """Greedy tokens/s of a fixed length for each model, timed in alternation (best of ``reps``),
        so that load on the machine hits every model alike. On CPU the clock is this process's CPU time
        (``time.process_time``): on a shared machine wall time mostly measures the neighbours; on CUDA it is
        wall time after synchronising."""
        clock = time.perf_counter if self.device.type == "cuda" else time.process_time
        ids, mask = self._batch(self.prompt_ids)
        kw = dict(input_ids=ids, attention_mask=mask, do_sample=False, max_new_tokens=self.max_new,
                  min_new_tokens=self.max_new, pad_token_id=self.tok.pad_token_id)
        for model in models.values():
            model.generate(**{**kw, "max_new_tokens": 4, "min_new_tokens": 4})          # warm-up
        best = {k: float("inf") for k in models}
        for _ in range(reps):
            for key, model in models.items():
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = clock()
                model.generate(**kw)
                if self.device.type == "cuda":
                    torch.cuda.synchronize()
                best[key] = min(best[key], clock() - t0)
        return {k: ids.shape[0] * self.max_new / t for k, t in best.items()}

    def measure(self, model, targets) -> dict:
        model.eval()
        gens = self.generate(model)
        texts = [self.tok.decode(g, skip_special_tokens=True) for g in gens]
        acc, hit_all = {}, [True] * len(texts)
        for attr, value in targets:
            pred = self.clf[attr].predict(texts)
            ok = [p == value for p in pred]
            acc[attr] = sum(ok) / len(ok)
            hit_all = [a and b for a, b in zip(hit_all, ok)]
        return {"acc": acc, "all": sum(hit_all) / len(hit_all), "fluency": self.fluency(gens),
                "example": texts[0]}


# ------------------------------------------------------------------------------ main

def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="CI setting: N = 1, 2, short training, few samples")
    ap.add_argument("--base", default="tiny://llama", help="tiny://<preset> (pretrained here) or a model")
    ap.add_argument("--data", default=str(HERE / "compose" / "data"))
    ap.add_argument("--workdir", default="runs/compose_eval", help="runs, data subsets and the table go here")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--pretrain-steps", type=int, default=None)
    ap.add_argument("--adapter-steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None, help="adapter learning rate (default 3e-3 tiny, 2e-4 real)")
    ap.add_argument("--samples", type=int, default=None)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--kind", choices=("lora", "ia3"), default="lora", help="train LoRA or (IA)3 modules")
    args = ap.parse_args(argv)
    q = args.quick
    pretrain_steps = args.pretrain_steps or (150 if q else 600)
    adapter_steps = args.adapter_steps or (30 if q else 150)
    samples = args.samples or (16 if q else 96)
    ns = (1, 2) if q else (1, 2, 4)
    reps = 1 if q else 5
    device = torch.device(args.device)
    tiny = args.base.startswith("tiny://")
    lr = args.lr or {("lora", True): 3e-3, ("lora", False): 2e-4, ("ia3", True): 3e-2, ("ia3", False): 3e-3}[
        (args.kind, tiny)]
    work = Path(args.workdir) / args.kind
    work.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)

    data = Path(args.data)
    train_rows = read_jsonl(data / "attributes_train.jsonl")
    clf_rows = read_jsonl(data / "attributes_classifier.jsonl")
    attributes = [a for a, _ in TARGETS]
    classifiers, held = train_classifiers(clf_rows, attributes, args.seed)
    print("classifier held-out accuracy: " + ", ".join(f"{a} {v:.2f}" for a, v in held.items()), flush=True)

    base = str(pretrain_tiny(args.base[len("tiny://"):] or "llama", train_rows, Path(args.workdir) / "base", pretrain_steps,
                             args.seed, device)) if tiny else args.base
    singles = {}
    for attr, value in TARGETS[:max(ns)]:
        singles[value] = train_adapter(value, {value: [r for r in train_rows if r[attr] == value]}, base, work,
                                       adapter_steps, args.seed, lr, args.kind)
    joints = {}
    for n in ns:
        if n == 1:
            continue
        parts = {v: [r for r in train_rows if r[a] == v] for a, v in TARGETS[:n]}  # the N attribute datasets
        joints[n] = train_adapter(f"joint{n}", parts, base, work, adapter_steps, args.seed, lr, args.kind)

    from neurosym.compose import compose, load
    from neurosym.compose.registry import METHODS
    methods = [m for m in OUTPUT_METHODS + WEIGHT_METHODS if args.kind in METHODS[m].kinds]

    base_model, tok = load(base, device=device)
    tok.padding_side = "left"
    prompts = sorted({r["prompt"] for r in train_rows})
    bench = Bench(tok, base_model, classifiers, prompts, samples, args.max_new_tokens, args.seed, device, reps)

    rows, models = [], {}

    def add(label, n, baked, model, targets):
        r = bench.measure(model, targets)
        r.update(method=label, n=n, baked=baked)
        models[len(rows)] = model
        rows.append(r)
        print(f"  {label:<16} N={n} {'baked' if baked else '':<5} all={r['all']:.2f}  e.g. {r['example']!r}",
              flush=True)

    add("base", 0, False, base_model, TARGETS[:max(ns)])
    for attr, value in TARGETS[:max(ns)]:
        model, _ = load(singles[value], device=device)
        add(f"single:{value}", 1, False, model, [(attr, value)])
    for n in ns:
        targets = TARGETS[:n]
        adapters = [(v, str(singles[v])) for _, v in targets]
        if n in joints:
            add("joint", n, False, load(joints[n], device=device)[0], targets)
        for method in methods:
            for baked in ((False, True) if method in OUTPUT_METHODS else (False,)):
                out = work / "compositions" / f"{method}-N{n}{'-baked' if baked else ''}"
                weights = {v: LAMBDA for _, v in targets} if method in ("output_weighted", "weight_linear") else None
                if not (out / "composition.yaml").exists():
                    compose(adapters, method, out, weights=weights, bake=baked, seed=args.seed)
                add(method, n, baked, load(out, device=device)[0], targets)

    # Every row's speed in one pass, models timed in alternation so load on the machine hits all alike.
    for i, tok_s in bench.side_by_side(models, reps).items():
        rows[i]["tok_s"] = tok_s
    single_speed = next(r["tok_s"] for r in rows if r["method"] == f"single:{TARGETS[0][1]}")
    table = render_table(rows, attributes[:max(ns)], single_speed)
    print()
    print(table)
    print()
    # The ratios that matter, timed side by side in alternation: one module, and output_sum at each N
    # unbaked (N LoRA passes per layer) vs baked (one adapter of rank sum r_i).
    index = {(r["method"], r["n"], r["baked"]): i for i, r in enumerate(rows)}
    picked = {"base": models[index[("base", 0, False)]],
              "single": models[index[(f"single:{TARGETS[0][1]}", 1, False)]]}
    for n in ns:
        for baked in (False, True):
            picked[(n, baked)] = models[index[("output_sum", n, baked)]]
    speed = bench.side_by_side(picked, reps=3 if q else 15)
    clock = "wall time" if device.type == "cuda" else "CPU time of this process"
    print(f"tokens/s side by side (batch {len(bench.prompt_ids)}, {args.max_new_tokens} new tokens, "
          f"{args.device}, {clock}): base {speed['base']:.0f}, one module {speed['single']:.0f}")
    for n in ns:
        u, b = speed[(n, False)], speed[(n, True)]
        print(f"output_sum N={n}: unbaked {u:.0f} tok/s ({u / speed['single']:.2f}x one module), baked {b:.0f} "
              f"tok/s ({b / speed['single']:.2f}x one module); baked/unbaked = {b / u:.2f}x")
    (work / "table.md").write_text(table + "\n")
    (work / "results.json").write_text(json.dumps(rows, indent=1))
    return 0


def render_table(rows, attributes, single_speed) -> str:
    head = ["method", "N", "baked"] + attributes + ["all", "fluency", "tok/s", "x single"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r["method"], str(r["n"]), "yes" if r["baked"] else ""]
        cells += [f"{r['acc'][a]:.2f}" if a in r["acc"] else "" for a in attributes]
        cells += [f"{r['all']:.2f}", f"{r['fluency']:.3f}", f"{r['tok_s']:.0f}", f"{r['tok_s'] / single_speed:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
