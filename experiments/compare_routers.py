"""The same job under each router, side by side: what each bought (eval loss, eval reward) and cost.

    python experiments/compare_routers.py experiments/hybrid_tiny.yaml --steps 12
    python experiments/compare_routers.py my_job.yaml --routers alternate,reward_classifier --steps 200

Every router runs the config unchanged but for ``router.kind`` (same seed), each in its own run dir
``<run.output_dir>/compare-<time>/<run.name>-<router>``. Eval reward is the config's reward on the
eval split, measured by the run's final evaluation (batched greedy answers under the final system
prompt; "-" for ``neg_loss``, whose value is just -eval loss, or with no eval split).

Teacher: with a tiny model (``model.name_or_path: tiny://...``) the scripted teacher from
``neurosym/testing/openai_server.py`` is started on 127.0.0.1 and the config is pointed at it, so the job runs
offline; any other model runs with the config's own teacher. ``--local-teacher-server`` /
``--no-local-teacher-server`` force either way. The teacher cache is per run (each router pays for
its own calls) unless ``--share-teacher-cache`` copies the first run's cache into later runs.
"""
from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _teacher_server import local_teacher, summarize, warm_imports  # noqa: E402

ROUTERS = ["always_lora", "always_symbolic", "alternate", "plateau", "random", "reward_classifier"]
CACHE = Path("teacher") / "teacher_cache.sqlite"


def run_router(args, router: str, out_dir: Path, teacher: list[str], shared_cache) -> dict:
    from neurosym.config.schema import load_config
    from neurosym.train import train

    overrides = [*args.set, *teacher, f"router.kind={router}", f"run.output_dir={out_dir}"]
    if args.steps:
        overrides += [f"train.max_steps={args.steps}", "train.epochs=null"]
    cfg = load_config(args.config, overrides)
    cfg.run.name = f"{cfg.run.name}-{router}"
    if shared_cache is not None:
        (cfg.run_dir / CACHE).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(shared_cache, cfg.run_dir / CACHE)
    print(f"== {router} -> {cfg.run_dir}", file=sys.stderr, flush=True)
    out = train(cfg, quiet=True)
    row = summarize(out.run_dir)  # eval_reward: measured by the run itself on the eval split
    return {"router": router, "run_dir": out.run_dir, **row}


def print_table(rows: list[dict]) -> None:
    fmt = lambda v, spec: "-" if v is None else format(v, spec)  # noqa: E731
    print(f"{'router':<19}{'eval loss':>10}{'eval reward':>12}{'LoRA steps':>11}{'symbolic':>9}"
          f"{'failed':>7}{'teacher tokens':>15}{'cost USD':>10}{'wall s':>8}")
    for r in rows:
        print(f"{r['router']:<19}{fmt(r['final_eval_loss'], '.4f'):>10}{fmt(r['eval_reward'], '.3f'):>12}"
              f"{r['lora_steps']:>11}{r['symbolic_ok']:>9}{r['symbolic_failed']:>7}{r['teacher_tokens']:>15}"
              f"{r['teacher_cost_usd']:>10.4f}{r['wall_s']:>8.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--steps", type=int, default=None, help="train.max_steps for every run (default: the config's)")
    ap.add_argument("--routers", default=",".join(ROUTERS), help="comma-separated router kinds")
    ap.add_argument("--local-teacher-server", action=argparse.BooleanOptionalAction, default=None,
                    help="start the scripted teacher on 127.0.0.1 (default: only for tiny:// models)")
    ap.add_argument("--latency", type=float, default=0.0, help="local teacher: seconds per call")
    ap.add_argument("--share-teacher-cache", action="store_true",
                    help="copy the first run's teacher cache into later runs (cheaper; costs then differ)")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override (repeatable)")
    args = ap.parse_args()
    routers = [r.strip() for r in args.routers.split(",") if r.strip()]
    unknown = set(routers) - set(ROUTERS)
    if unknown:
        ap.error(f"unknown router(s) {sorted(unknown)}; choose from {', '.join(ROUTERS)}")

    from neurosym.config.schema import load_config
    base = load_config(args.config, args.set)
    use_local = args.local_teacher_server
    if use_local is None:
        use_local = base.model.name_or_path.startswith("tiny://")
    out_dir = Path(base.run.output_dir) / f"compare-{time.strftime('%Y%m%d-%H%M%S')}"

    rows = []
    with (local_teacher(args.latency) if use_local else contextlib.nullcontext([])) as teacher:
        warm_imports()
        shared = None
        for router in routers:
            rows.append(run_router(args, router, out_dir, teacher, shared))
            if args.share_teacher_cache and shared is None and (rows[-1]["run_dir"] / CACHE).exists():
                shared = rows[-1]["run_dir"] / CACHE
    print(f"\n{args.config} ({'local scripted teacher' if use_local else 'teacher from the config'}; "
          f"teacher cache {'shared' if args.share_teacher_cache else 'per run'}); runs in {out_dir}")
    print_table(rows)


if __name__ == "__main__":
    main()
