"""Does routing pay? Every arm on a testbed world at matched cost, through the ordinary
config -> ``neurosym.train.train(cfg)`` path.

Arms: ``none`` (the student as is), ``hand_prompt`` (the hand-written correct system prompt, no
training: the upper bound for format errors), ``lora`` (always_lora), ``hand_lora`` (always_lora under
the hand-written prompt from step 0: the ceiling control, what a perfect prompt edit could add to LoRA
for free; not in the shift world), ``prompt`` (always_symbolic), ``alternate``, ``plateau``,
``learned`` (reward_classifier, per batch), ``random`` (a random router given
exactly the learned router's counts of LoRA steps and symbolic updates), ``bandit`` (per-row routing,
classifiers/bandit.py), ``random_rows`` (each row drawn at random with the bandit's share of symbolic
rows: the control that tells routing from merely having both tools), ``oracle`` (reads the hidden error
type, per batch) and ``oracle_rows`` (per row, repeated edits, no remake mix): upper bounds only.

Cost, in LoRA steps: every forward pass charged (3 x training tokens + every other forward token +
generated tokens, over the pure-LoRA step's), i.e. gain probes, prompt validation, the per-row
inspection and the student's answers inside a symbolic update, plus c per teacher call, c in {1, 10}.
Matching: every arm saves a checkpoint every ``--every`` steps; for each c the budget is the reference
router's total cost (``--reference``, default ``bandit``), and each arm is scored at its last checkpoint
whose cumulative cost is within that budget (an arm that never reaches it is scored at its end, under
budget, and marked ``<``). Curves: accuracy against cost from those checkpoints, summarised by the area
under the curve up to the budget and the cost to reach 90% of the best real arm's accuracy.
Accuracy is exact match on the test split (a phrasing no training row uses), overall and by hidden
kind; retention is exact match on known entities' facts outside the task, asked under each arm's own
final prompt (``retention_plain``: under the plain base prompt). Paired differences are by seed, with
95% Student-t intervals; one verdict line per world.

    python experiments/testbed/compare.py --quick              # CI: small setting, asserts invariants
    python experiments/testbed/compare.py --alphas 0 0.25 0.5 0.75 1 --seeds 0 1 2 3 4 --noise 0 0.3
    python experiments/testbed/compare.py --world transfer --alphas 0.5 --seeds 0   # worlds.md's worlds
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sqlite3
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from experiments.testbed import accuracy as A  # noqa: E402
from experiments.testbed import oracle as O  # noqa: E402
from experiments.testbed import teacher as T  # noqa: E402
from experiments.testbed import world as W  # noqa: E402
from experiments.testbed import worlds as X  # noqa: E402

COSTS = (1, 10)
ROUTERS = {"lora": {"kind": "always_lora"}, "hand_lora": {"kind": "always_lora"},
           "prompt": {"kind": "always_symbolic"},
           "alternate": {"kind": "alternate", "every": 4}, "plateau": {"kind": "plateau"},
           "learned": {"kind": "reward_classifier", "warmup": 4, "epsilon": 0.2, "cost_weight": 0.0}, "random": {"kind": "random"},
           "bandit": {"kind": "bandit"}, "random_rows": {"kind": "random_rows"},
           "oracle": {"kind": "function", "function": "experiments.testbed.oracle:make_oracle"},
           "oracle_rows": {"kind": "function", "function": "experiments.testbed.oracle_rows:make_oracle_rows"}}
ARMS = ("none", "hand_prompt", "lora", "hand_lora", "prompt", "alternate", "plateau", "learned", "random", "oracle",
        "bandit", "random_rows", "oracle_rows")


# ---- one run -------------------------------------------------------------------------------------
MODEL = "testbed://student"
LORA_FACTOR = 3  # the LoRA-only arm runs this many times more steps, so it can reach the others' budgets


def bundled_config() -> dict:
    """The bundled job (hybrid.yaml) as a dict, its data paths made absolute so it runs from anywhere."""
    cfg = yaml.safe_load((HERE / "hybrid.yaml").read_text())
    for key in ("train", "eval"):
        cfg["data"][key] = str(HERE / cfg["data"][key])
    cfg["reward"]["probe"] = str(HERE / cfg["reward"]["probe"])
    return cfg


def job_config(data: dict[str, Path], arm: str, seed: int, noise: float, steps: int, every: int,
               out: Path, p_random: float = 0.5, system_prompt: str | None = None) -> dict:
    cfg = bundled_config()
    cfg["model"]["name_or_path"] = MODEL
    cfg["run"] = {"name": arm, "output_dir": str(out), "seed": seed}
    cfg["data"].update(train=str(data["train"]), eval=str(data["eval"]))
    cfg["reward"]["probe"] = str(data["probe"])
    cfg["train"].update(max_steps=steps, save_every=every, keep_last_n=1000, eval_every=0)
    cfg["tracking"] = {"mode": "disabled"}
    cfg["teacher"].update(callable="experiments.testbed.teacher:recorded", model=f"simulated?noise={noise}&seed={seed}")
    cfg["router"].update(ROUTERS[arm])
    if system_prompt is not None:  # hand_lora: the task's prompt is the hand-written one from step 0
        cfg["data"]["system_prompt"] = system_prompt
    if arm in ("random", "random_rows"):
        cfg["router"]["random_p"] = p_random
    if arm == "oracle_rows":  # the per-example prototype: refined rows not mixed in
        cfg["remake"]["mix_ratio"] = 0.0
    return cfg


def matched_p(seed: int, steps: int, n_symbolic: int) -> float:
    """The ``random_p`` for which RandomRouter(p, seed) takes exactly ``n_symbolic`` symbolic routes
    in ``steps`` decisions (its draws depend only on the seed)."""
    u = np.sort(np.random.default_rng(seed).random(steps))
    if n_symbolic <= 0:
        return 0.0
    if n_symbolic >= steps:
        return 1.0
    return float((u[n_symbolic - 1] + u[n_symbolic]) / 2)


def run_arm(data, arm, seed, noise, steps, every, out, p_random=0.5, shift_at: int | None = None,
            system_prompt: str | None = None) -> Path:
    """One arm's run. ``shift_at`` (the shift world): steps 1..shift_at on ``data["train"]``, then the
    same run resumed on ``data["train_b"]`` (same length, so the sampler continues) to ``steps``."""
    from neurosym.config.schema import load_config
    from neurosym.train import train

    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{arm}.yaml"
    cfg = job_config(data, arm, seed, noise, steps if shift_at is None else shift_at, every, out, p_random,
                     system_prompt)
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    O.SHIFT_AT = shift_at  # only the oracle reads the world's schedule
    train(load_config(path), quiet=True)
    if shift_at is not None:  # phase B: what the CLI's resume refuses (data.train), through the Python API
        cfg["data"]["train"], cfg["reward"]["probe"] = str(data["train_b"]), str(data["probe_b"])
        cfg["train"]["max_steps"] = steps
        path = out / f"{arm}.phase-b.yaml"
        path.write_text(yaml.safe_dump(cfg, sort_keys=False))
        train(load_config(path), resume=True, quiet=True,
              changed_keys=("data.train", "reward.probe", "train.max_steps"))
    return out / arm


def ledger(run_dir: Path) -> list[dict]:
    """Per step, cumulative: LoRA steps, symbolic updates, teacher calls, probe evaluations, wall time,
    and, from events that carry them (``compute``: tokens through the model in every forward pass of
    the step, the probes', inspections' and the student's answers' included), ``token_passes`` =
    3 x training tokens (forward + backward) + other forward tokens + generated tokens; ``rows_symbolic``:
    rows a symbolic update was given (per-row routers route a share of each batch)."""
    rows, lora, sym, calls, probes, wall, passes, rows_sym = [], 0, 0, 0, 0, 0.0, 0, 0
    accepted, sym_wall, lora_wall, rows_all = 0, 0.0, 0.0, 0
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "prompt" and r.get("version", 0) > 0:
            accepted += 1
        if r.get("kind") != "train":
            continue
        parts = r.get("parts") or {}
        sym_wall += (parts.get("symbolic") or {}).get("wall_s", 0.0)
        lora_wall += (parts.get("lora") or {}).get("wall_s", 0.0)
        lora += r["route"] == "lora" or "lora" in parts
        sym += r["route"] == "symbolic" or "symbolic" in parts
        rows_sym += (parts.get("symbolic") or {}).get("rows", 0)
        rows_all += sum(p.get("rows", 0) for p in parts.values())
        calls += sum(p.get("calls", 0) for p in parts.values()) if parts else (r.get("symbolic") or {}).get("calls", 0)
        if (r.get("batch") or {}).get("reward_before") is not None:  # a measured step: before and after
            probes += 2
        compute = r.get("compute") or {}
        passes += 3 * compute.get("train_tokens", 0) + compute.get("forward_tokens", 0) + compute.get("generated_tokens", 0)
        wall += r["wall_s"]
        rows.append({"step": r["step"], "lora_steps": lora, "symbolic": sym, "teacher_calls": calls,
                     "probe_evals": probes, "wall_s": wall, "rows_symbolic": rows_sym, "rows": rows_all, "accepted": accepted,
                     "symbolic_wall_s": sym_wall, "lora_wall_s": lora_wall,
                     **({"token_passes": passes} if "compute" in r else {})})
    return rows


def lora_unit(arm: dict | None) -> float | None:
    """3 x the mean training tokens of a pure-LoRA step (the LoRA arm's), the unit of cost."""
    if not arm or not arm["ledger"] or "token_passes" not in arm["ledger"][-1]:
        return None
    last = arm["ledger"][-1]
    return last["token_passes"] / max(last["lora_steps"], 1)


def cost(row: dict, c: float) -> float:
    """In LoRA steps: every forward pass charged (when the run's events count them and the setting's
    pure-LoRA unit is known: ``unit``), else LoRA steps + probe evaluations; plus c per teacher call."""
    if row.get("unit") and "token_passes" in row:
        return row["token_passes"] / row["unit"] + c * row["teacher_calls"]
    return row["lora_steps"] + c * row["teacher_calls"] + row["probe_evals"]


def score_checkpoints(run_dir: Path, splits: dict[str, list[dict]]) -> dict[int, dict]:
    """{step: {"test": score, "retention": score, "prompt": text}} for every checkpoint."""
    out = {}
    for ckpt in sorted((run_dir / "checkpoints").glob("step-*"), key=lambda p: int(p.name[5:])):
        model, tok, prompt, cfg = A.load_run(run_dir, ckpt.name)
        out[int(ckpt.name[5:])] = {
            "test": A.score(splits["test"], A.answers(model, tok, splits["test"], prompt, cfg.data.max_length)),
            "retention": A.score(splits["retention"], A.answers(model, tok, splits["retention"], prompt,
                                                                cfg.data.max_length)),
            "retention_plain": A.score(splits["retention"], A.answers(model, tok, splits["retention"], W.BASE_PROMPT,
                                                                      cfg.data.max_length)),
            "prompt": prompt}
    return out


def audit(run_dir: Path, splits: dict[str, list[dict]], sent: list) -> list[str]:
    """Eval/test questions, and eval/test answers that are no train answer, found in anything the
    teacher was sent, a prompt version or a refined example."""
    train_answers = {r["response"] for r in splits["train"]}
    questions = {r["prompt"] for s in ("eval", "test") for r in splits[s]}
    answers = {r["response"] for s in ("eval", "test") for r in splits[s]} - train_answers
    texts = [m["content"] for msgs in sent for m in msgs]
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        r = json.loads(line)
        if r.get("kind") == "prompt" and r.get("text"):
            texts.append(r["text"])
    store = run_dir / "remake.sqlite"
    if store.exists():
        with sqlite3.connect(store) as db:
            texts += [t for row in db.execute("SELECT prompt, feedback FROM refined") for t in row if t]
    return [f"{run_dir.name}: {x!r}" for t in texts for x in (questions | answers) if x in t]


# ---- one setting (alpha, seed, noise): every arm ----------------------------------------------------
TEACHER_FREE = ("none", "hand_prompt", "lora", "hand_lora")  # arms the teacher's noise cannot change


def setting(alpha: float, seed: int, noise: float, steps: int, every: int, work: Path, arms,
            shared: dict | None = None, world: str = "default") -> dict:
    """Every arm on one (alpha, seed, noise) of ``world`` (worlds.md). ``shared``: results of the
    teacher-free arms of the same (alpha, seed) at another noise level, reused as they are (the same
    runs would give the same numbers). The shift world's data changes after ``steps // 2`` steps in
    every arm (the LoRA arm's longer run included)."""
    shared = shared if shared is not None else {}
    work.mkdir(parents=True, exist_ok=True)
    data = X.write_world(world, work / "data", alpha, seed=seed)
    splits = {k: A.read_rows(p) for k, p in data.items()}
    shift_at = steps // 2 if "train_b" in data else None
    if shift_at and "hand_lora" in arms:
        raise ValueError("hand_lora: the shift world has no one hand prompt (its target changes at half the steps)")
    seen = {**splits, "train": splits["train"] + splits.get("train_b", [])}  # what training may show the teacher
    result = {"world": world, "alpha": alpha, "seed": seed, "noise": noise, "arms": {}, "leaks": []}
    base, tok = A.load_base(MODEL)
    result["arms"].update({arm: r for arm, r in shared.items() if arm in arms})
    for arm in ("none", "hand_prompt"):
        if arm in arms and arm not in result["arms"]:
            prompt = W.BASE_PROMPT if arm == "none" else X.hand_prompt(world, seed)
            t0 = time.perf_counter()
            result["arms"][arm] = {"ledger": [{"step": 0, "lora_steps": 0, "symbolic": 0, "teacher_calls": 0,
                                               "probe_evals": 0, "wall_s": 0.0}],
                                   "scores": {0: {"test": A.score(splits["test"], A.answers(base, tok, splits["test"], prompt)),
                                                  "retention": A.score(splits["retention"], A.answers(
                                                      base, tok, splits["retention"], prompt)),
                                                  "retention_plain": A.score(splits["retention"], A.answers(
                                                      base, tok, splits["retention"], W.BASE_PROMPT)),
                                                  "prompt": prompt}},
                                   "eval_s": time.perf_counter() - t0}
    order = [a for a in ("learned", "bandit", "lora", "hand_lora", "prompt", "alternate", "plateau", "random",
                         "random_rows", "oracle", "oracle_rows")
             if a in arms and a not in result["arms"]]
    for arm in order:
        p = 0.5
        if arm == "random":
            learned = result["arms"].get("learned")
            n_sym = learned["ledger"][-1]["symbolic"] if learned else steps // 2
            p = matched_p(seed, steps, n_sym)
        if arm == "random_rows":  # the bandit's share of rows, each row drawn at random
            bandit = result["arms"].get("bandit")
            last = bandit["ledger"][-1] if bandit and bandit["ledger"] else {}
            p = last["rows_symbolic"] / max(last.get("rows", steps * 8), 1) if last else 0.25
        T.SENT.clear()
        # every arm checkpoints every `every` steps, pure LoRA too: scored every 15 steps it lost up to 14 of
        # its steps at a budget that fell between two checkpoints (once the bandit cost ~40, 10 of 40)
        n = steps * LORA_FACTOR if arm in ("lora", "hand_lora") else steps
        hand = X.hand_prompt(world, seed) if arm == "hand_lora" else None
        run_dir = run_arm(data, arm, seed, noise, n, every, work / "runs", p, shift_at, hand)
        result["leaks"] += audit(run_dir, seen, list(T.SENT))
        result["arms"][arm] = {"ledger": ledger(run_dir), "scores": score_checkpoints(run_dir, splits)}
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)  # scored; keep events, config, store
    shared.update({arm: result["arms"][arm] for arm in TEACHER_FREE if arm in result["arms"]})
    unit = lora_unit(result["arms"].get("lora"))  # every arm's forward passes in the LoRA arm's step units
    for arm in result["arms"].values():
        for row in arm["ledger"]:
            row["unit"] = unit
    return result


def read_setting(line: str) -> dict:
    """A setting's result read back from settings.jsonl (JSON made the checkpoint steps strings)."""
    r = json.loads(line)
    for arm in r["arms"].values():
        arm["scores"] = {int(k): v for k, v in arm["scores"].items()}
    return r


def at_budget(arm: dict, budget: float, c: float) -> tuple[dict, dict, bool]:
    """(ledger row, scores) at the arm's last scored step within ``budget``; bool: budget reached."""
    by_step = {r["step"]: r for r in arm["ledger"]}
    best = None
    for step in sorted(arm["scores"]):
        row = by_step.get(step, arm["ledger"][0])
        if cost(row, c) <= budget + 1e-9:
            best = step
    if best is None:
        best = min(arm["scores"])
    row = by_step.get(best, arm["ledger"][0])
    reached = cost(arm["ledger"][-1], c) >= budget - 1e-9
    return row, arm["scores"][best], reached


# ---- the table --------------------------------------------------------------------------------------
CONTROL = {"bandit": "random_rows", "learned": "random"}  # each learned router's random control
REFERENCE = "bandit"  # the learned router whose total cost is every arm's budget (main() may change it)
SINGLES = ("lora", "prompt")  # the single tools


def half_width(xs: list[float]) -> float:
    """Half the 95% Student-t interval of the mean of ``xs`` (0 for fewer than two)."""
    from scipy.stats import t

    if len(xs) < 2:
        return 0.0
    return float(t.ppf(0.975, len(xs) - 1) * statistics.stdev(xs) / math.sqrt(len(xs)))


def mean_ci(xs: list[float]) -> str:
    if not xs:
        return "-"
    m = statistics.fmean(xs)
    return f"{m:.2f}" if len(xs) < 2 else f"{m:.2f}±{half_width(xs):.2f}"


def world_of(r: dict) -> str:
    return r.get("world", "kind")  # settings written before worlds had names


def table(results: list[dict], arms) -> tuple[str, list[dict]]:
    """Every arm at its last checkpoint within the reference router's total cost, per (world, α, noise, c)."""
    lines = ["| world | α | noise | c | arm | acc | knowledge | format | retention | LoRA steps | rows sym | "
             "teacher calls | cost | wall s |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    flat = []
    for world, alpha, noise in sorted({(world_of(r), r["alpha"], r["noise"]) for r in results}):
        group = [r for r in results if (world_of(r), r["alpha"], r["noise"]) == (world, alpha, noise)]
        for c in COSTS:
            for arm in arms:
                cells = {k: [] for k in ("acc", "knowledge", "format", "retention", "lora", "rows", "calls", "cost",
                                         "wall")}
                under = False
                for r in group:
                    if arm not in r["arms"]:
                        continue
                    ref = r["arms"].get(REFERENCE)
                    budget = cost(ref["ledger"][-1], c) if ref else float("inf")
                    row, sc, reached = at_budget(r["arms"][arm], budget, c)
                    under |= not reached and arm not in ("none", "hand_prompt")
                    t = sc["test"]
                    cells["acc"].append(t["overall"])
                    for kind in ("knowledge", "format"):
                        if kind in t:
                            cells[kind].append(t[kind])
                    cells["retention"].append(sc["retention"]["overall"])
                    cells["lora"].append(row["lora_steps"])
                    cells["rows"].append(row.get("rows_symbolic", 0))
                    cells["calls"].append(row["teacher_calls"])
                    cells["cost"].append(cost(row, c))
                    cells["wall"].append(row["wall_s"])
                    flat.append({"world": world, "alpha": alpha, "noise": noise, "c": c, "arm": arm, "seed": r["seed"],
                                 "budget": budget, "cost": cost(row, c), "lora_steps": row["lora_steps"],
                                 "teacher_calls": row["teacher_calls"], "symbolic": row["symbolic"],
                                 "test": t, "retention": sc["retention"]["overall"], "reached": reached,
                                 **curve(r, arm, c, budget)})
                if not cells["acc"]:
                    continue
                mark = "<" if under else ""
                lines.append(f"| {world} | {alpha} | {noise} | {c} | {arm} | {mean_ci(cells['acc'])} | "
                             f"{mean_ci(cells['knowledge'])} | {mean_ci(cells['format'])} | "
                             f"{mean_ci(cells['retention'])} | {statistics.fmean(cells['lora']):.0f} | "
                             f"{statistics.fmean(cells['rows']):.0f} | {statistics.fmean(cells['calls']):.0f} | "
                             f"{mark}{statistics.fmean(cells['cost']):.0f} | {statistics.fmean(cells['wall']):.0f} |")
    return "\n".join(lines), flat


def points(r: dict, arm: str, c: float) -> list[tuple[float, float]]:
    """An arm's accuracy against cost: (0, the untrained student's accuracy) then (cost, test accuracy)
    at each of its checkpoints."""
    a = r["arms"][arm]
    by_step = {row["step"]: row for row in a["ledger"]}
    start = r["arms"]["none"]["scores"][0]["test"]["overall"] if "none" in r["arms"] else 0.0
    out = [(0.0, start)] if arm not in ("none", "hand_prompt") else []
    for step in sorted(a["scores"]):
        out.append((cost(by_step.get(step, a["ledger"][0]), c), a["scores"][step]["test"]["overall"]))
    return out


def curve(r: dict, arm: str, c: float, budget: float) -> dict:
    """``auc``: the mean accuracy over cost in [0, budget] (accuracy held from each checkpoint to the next;
    an arm that stops early keeps its last accuracy), ``to90``: the least cost at which the arm reaches 90%
    of the best accuracy any real arm (not the oracle, not the hand prompt) has within the budget."""
    if not math.isfinite(budget) or budget <= 0:
        return {"auc": None, "to90": None}
    pts = sorted(points(r, arm, c))
    area, (x0, y0) = 0.0, pts[0]
    for x, y in pts[1:] + [(budget, None)]:
        x = min(x, budget)
        if x > x0:
            area, x0 = area + (x - x0) * y0, x
        if y is not None and x0 >= x:
            y0 = y
    area += max(budget - x0, 0.0) * y0
    real = [a for a in r["arms"] if a not in ("oracle", "hand_prompt", "hand_lora")]
    best = max(y for a in real for x, y in points(r, a, c) if x <= budget + 1e-9)
    to90 = next((x for x, y in pts if y >= 0.9 * best and x <= budget + 1e-9), None)
    return {"auc": area / budget, "to90": to90}


def curves(flat: list[dict], arms) -> str:
    """Accuracy against cost, in two numbers per arm: the area under the curve up to the budget and the
    cost to reach 90% of the best real arm's accuracy (``-``: not within the budget)."""
    lines = ["| world | α | noise | c | arm | AUC | cost to 90% of best | reached 90% (seeds) |",
             "|---|---|---|---|---|---|---|---|"]
    for world, alpha, noise, c in sorted({(r["world"], r["alpha"], r["noise"], r["c"]) for r in flat}):
        for arm in arms:
            rows = [r for r in flat if (r["world"], r["alpha"], r["noise"], r["c"], r["arm"]) == (world, alpha, noise, c, arm)]
            if not rows or rows[0]["auc"] is None:
                continue
            hit = [r["to90"] for r in rows if r["to90"] is not None]
            lines.append(f"| {world} | {alpha} | {noise} | {c} | {arm} | {mean_ci([r['auc'] for r in rows])} | "
                         f"{mean_ci(hit) if hit else '-'} | {len(hit)}/{len(rows)} |")
    return "\n".join(lines)


def differences(flat: list[dict]) -> list[dict]:
    """Paired by seed at matched cost, per (world, α, noise, c): the reference router minus its random
    control and minus the best single tool (the one of ``SINGLES`` with the higher mean), in accuracy
    and in AUC."""
    control = CONTROL.get(REFERENCE, "random")
    by = {(r["world"], r["alpha"], r["noise"], r["c"], r["arm"], r["seed"]): r for r in flat}
    out = []
    for world, alpha, noise, c in sorted({(r["world"], r["alpha"], r["noise"], r["c"]) for r in flat}):
        key = (world, alpha, noise, c)
        seeds = sorted(s for (*k, arm, s) in by if tuple(k) == key and arm == REFERENCE)

        def diff(arm: str, field: str) -> list[float]:
            def val(r):
                return r["test"]["overall"] if field == "acc" else r[field]
            return [val(by[(*key, REFERENCE, s)]) - val(by[(*key, arm, s)]) for s in seeds
                    if (*key, arm, s) in by and val(by[(*key, arm, s)]) is not None]

        singles = [a for a in SINGLES if diff(a, "acc")]
        if not seeds or not singles:
            continue
        best = max(singles, key=lambda a: statistics.fmean(by[(*key, a, s)]["test"]["overall"] for s in seeds
                                                          if (*key, a, s) in by))
        out.append({"world": world, "alpha": alpha, "noise": noise, "c": c, "best": best, "control": control,
                    "vs_control": diff(control, "acc"), "vs_best": diff(best, "acc"),
                    "auc_vs_best": diff(best, "auc")})
    return out


def verdict(flat: list[dict]) -> str:
    """The paired differences' table, then one verdict line per world (c = 1, 0 < α < 1, every noise
    level): *pays* when the reference router's accuracy at its own cost is >= the best single tool's at
    every such α (mean) and its 95% interval is above 0 at one or more; *does not pay* when the interval
    is below 0 at one; *ties* otherwise. A paired interval above 0 at α = 0 or α = 1 is reported as a
    leak to look for (there the hybrid can at best tie the one tool that matters)."""
    diffs = differences(flat)
    lines = [f"| world | α | noise | c | {REFERENCE} - {CONTROL.get(REFERENCE, 'random')} | "
             f"{REFERENCE} - best single tool (which) | AUC: {REFERENCE} - best single tool |",
             "|---|---|---|---|---|---|---|"]
    for d in diffs:
        lines.append(f"| {d['world']} | {d['alpha']} | {d['noise']} | {d['c']} | {mean_ci(d['vs_control'])} | "
                     f"{mean_ci(d['vs_best'])} ({d['best']}) | {mean_ci(d['auc_vs_best'])} |")
    lines.append("")
    for world in sorted({d["world"] for d in diffs}):
        inner = [d for d in diffs if d["world"] == world and d["c"] == 1 and 0 < d["alpha"] < 1 and d["vs_best"]]
        edge = [d for d in diffs if d["world"] == world and d["alpha"] in (0, 1) and len(d["vs_best"]) > 1
                and statistics.fmean(d["vs_best"]) - half_width(d["vs_best"]) > 0]
        lines.append(f"verdict {world}: {world_verdict(inner)}"
                     + (f"; LOOK FOR A LEAK: a win at α = {sorted({d['alpha'] for d in edge})}" if edge else ""))
    return "\n".join(lines)


def world_verdict(inner: list[dict]) -> str:
    if not inner:
        return "no setting with 0 < α < 1 at c = 1"
    lo = {(d["alpha"], d["noise"]): statistics.fmean(d["vs_best"]) - half_width(d["vs_best"]) for d in inner}
    hi = {(d["alpha"], d["noise"]): statistics.fmean(d["vs_best"]) + half_width(d["vs_best"]) for d in inner}
    means = {(d["alpha"], d["noise"]): statistics.fmean(d["vs_best"]) for d in inner}
    n = max(len(d["vs_best"]) for d in inner)
    vs_control = [x for d in inner for x in d["vs_control"]]
    tail = (f" ({len(inner)} settings, {n} seeds; vs the random control: "
            f"{mean_ci(vs_control) if vs_control else 'not run'})")
    if n < 2:
        return "one seed: no interval, no verdict" + tail
    if any(v < 0 for v in hi.values()):
        worst = min(hi, key=hi.get)
        return f"does not pay (below the best single tool at α={worst[0]}, noise={worst[1]})" + tail
    if all(m >= 0 for m in means.values()) and any(v > 0 for v in lo.values()):
        return "pays (>= the best single tool at every α, interval above 0 at " \
               f"{sorted(k for k, v in lo.items() if v > 0)})" + tail
    above = sorted(k for k, v in lo.items() if v > 0)
    if above:  # a win somewhere, a mean below 0 elsewhere: not "pays", and not "no interval excludes 0"
        below = sorted(k for k, m in means.items() if m < 0)
        return f"ties (interval above 0 at {above}, mean below 0 at {below}, no interval below 0)" + tail
    return "ties (no interval excludes 0)" + tail


def check_invariants(results: list[dict], flat: list[dict], every: int | None = None) -> None:
    """What --quick asserts: arms at matched cost (the reference router spends its whole budget, every
    other arm at most that), each random control matched to its router (the same counts of LoRA steps
    and symbolic updates for ``random``; for ``random_rows`` the same share of rows, drawn row by row),
    every arm scored at least every ``every`` steps (so none loses steps to the budget falling between
    two checkpoints), the ceiling control under the hand prompt, no eval/test answer anywhere the
    teacher or the training data could see it, and the curves defined."""
    for r in results:
        assert not r["leaks"], f"eval/test text reached the teacher or the data: {r['leaks'][:3]}"
        for name, arm in r["arms"].items():
            steps = sorted(int(s) for s in arm["scores"])
            if every and len(steps) > 1:
                assert max(b - a for a, b in zip([0] + steps, steps)) <= every, (name, steps)
        hand = r["arms"].get("hand_lora")  # the ceiling control trains and is scored under the hand prompt
        if hand:
            assert {s["prompt"] for s in hand["scores"].values()} == {X.hand_prompt(world_of(r), r["seed"])}, hand
        learned, rnd = r["arms"].get("learned"), r["arms"].get("random")
        if learned and rnd:
            a, b = learned["ledger"][-1], rnd["ledger"][-1]
            assert (a["lora_steps"], a["symbolic"]) == (b["lora_steps"], b["symbolic"]), (a, b)
    for row in flat:
        assert row["cost"] <= row["budget"] + 1e-9 or row["arm"] == REFERENCE, row
        if row["arm"] == REFERENCE:
            assert abs(row["cost"] - row["budget"]) < 1e-9, row
        if row["arm"] not in ("none", "hand_prompt"):
            assert row["auc"] is not None and 0.0 <= row["auc"] <= 1.0, row


def report(results: list[dict], arms) -> str:
    """The three tables (arms at matched cost, accuracy-against-cost curves, paired differences and
    the verdict per world) and the reference router's teacher calls after its last accepted edit."""
    text, flat = table(results, arms)
    return "\n\n".join([f"budget: the total cost of `{REFERENCE}`", text, curves(flat, arms), verdict(flat),
                         spend(results)])


def spend(results: list[dict]) -> str:
    """Per world: the share of the reference router's teacher calls made after its last accepted
    prompt edit (the target is <= 5%), and the mean calls and wall time of its symbolic updates beside
    the mean wall time of a LoRA part."""
    lines = []
    for world in sorted({world_of(r) for r in results}):
        after, total, sym, sym_wall, lora_n, lora_wall = 0, 0, 0, 0.0, 0, 0.0
        for r in results:
            led = (r["arms"].get(REFERENCE) or {}).get("ledger") or []
            if world_of(r) != world or not led:
                continue
            last = led[-1]
            first_final = next((row for row in led if row.get("accepted", 0) == last.get("accepted", 0)), led[0])
            after += last["teacher_calls"] - first_final["teacher_calls"]
            total += last["teacher_calls"]
            sym, sym_wall = sym + last["symbolic"], sym_wall + last.get("symbolic_wall_s", 0.0)
            lora_n, lora_wall = lora_n + last["lora_steps"], lora_wall + last.get("lora_wall_s", 0.0)
        if total or sym:
            lines.append(f"{world}: {REFERENCE}: {after}/{total} teacher calls "
                         f"({100 * after / max(total, 1):.0f}%) after its last accepted edit; "
                         f"{total / max(sym, 1):.1f} calls and {sym_wall / max(sym, 1):.3f} s per symbolic update, "
                         f"{lora_wall / max(lora_n, 1):.3f} s per LoRA part")
    return "\n".join(lines)


def main(argv=None) -> None:
    global MODEL, LORA_FACTOR, REFERENCE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI setting: one alpha, one seed, few steps; asserts")
    ap.add_argument("--alphas", type=float, nargs="+", default=[0.0, 0.25, 0.5, 0.75, 1.0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--noise", type=float, nargs="+", default=[0.0, 0.3])
    ap.add_argument("--noisy-alphas", type=float, nargs="+", default=None,
                    help="run the noise levels above 0 at these alphas only (default: every alpha)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--every", type=int, default=5)
    ap.add_argument("--arms", nargs="+", default=list(ARMS), choices=ARMS)
    ap.add_argument("--world", default="default", choices=X.NAMES,
                    help="the task (experiments/testbed/worlds.md): default (world.py's), rules, transfer, shift")
    ap.add_argument("--work", default="runs/compare", help="working folder (runs, data, results.json)")
    ap.add_argument("--model", default="testbed://student", help="the student (default: the pretrained testbed student)")
    ap.add_argument("--table-from", metavar="SETTINGS_JSONL",
                    help="print the table from a settings.jsonl written by an earlier (maybe partial) run")
    ap.add_argument("--reference", choices=tuple(CONTROL), default=None,
                    help="the learned router whose total cost is the budget (default: bandit when run, else learned)")
    ap.add_argument("--lora-factor", type=int, default=3,
                    help="the LoRA-only arm runs this many times --steps (it needs more steps to spend the budget)")
    args = ap.parse_args(argv)
    MODEL, LORA_FACTOR = args.model, args.lora_factor
    if args.quick:
        args.alphas, args.seeds, args.noise, args.steps, args.every, LORA_FACTOR = [0.5], [0], [0.0], 6, 2, 1
        args.arms = ["none", "hand_prompt", "lora", "hand_lora", "prompt", "bandit", "random_rows", "learned",
                     "random"]
    if args.world == "shift" and "hand_lora" in args.arms and not args.table_from:
        if args.arms != list(ARMS):  # asked for by name: say why it cannot run
            ap.error("--arms hand_lora: the shift world has no one hand prompt (its target changes at half "
                     "the steps); leave hand_lora out")
        args.arms = [a for a in args.arms if a != "hand_lora"]
    REFERENCE = args.reference or ("bandit" if "bandit" in args.arms else "learned")
    if args.table_from:
        results = [read_setting(line) for line in Path(args.table_from).read_text().splitlines() if line.strip()]
        print(report(results, args.arms))
        return
    work = Path(args.work).resolve()
    if work.exists():
        shutil.rmtree(work / "settings", ignore_errors=True)
        (work / "settings.jsonl").unlink(missing_ok=True)
    results = []
    t0 = time.perf_counter()
    for seed in args.seeds:  # seed-major: a comparison cut short still has every alpha for its first seeds
        for alpha in args.alphas:
            shared: dict = {}  # the teacher-free arms run once per (alpha, seed)
            for noise in args.noise:
                if noise and args.noisy_alphas is not None and alpha not in args.noisy_alphas:
                    continue
                where = work / "settings" / f"a{alpha}-n{noise}-s{seed}"
                results.append(setting(alpha, seed, noise, args.steps, args.every, where, args.arms, shared,
                                       args.world))
                with (work / "settings.jsonl").open("a") as f:  # a long comparison keeps what it finished
                    f.write(json.dumps(results[-1]) + "\n")
                print(f"done alpha={alpha} noise={noise} seed={seed} ({time.perf_counter() - t0:.0f}s)",
                      file=sys.stderr, flush=True)
    print(report(results, args.arms))
    text, flat = table(results, args.arms)
    (work / "results.json").write_text(json.dumps({"args": vars(args), "rows": flat}, indent=1))
    if args.quick:
        check_invariants(results, flat, args.every)
        print("invariants hold: arms at matched cost, random control matched to the learned router, no leak")


if __name__ == "__main__":
    main()
