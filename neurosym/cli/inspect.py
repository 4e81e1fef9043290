"""Verbs that look at a finished (or running) run directory: ``export``, ``prompts``, ``report``.

Loaded by :func:`neurosym.cli.build_parser` through :func:`register`.
"""
from __future__ import annotations

import os
import re
from pathlib import Path

from neurosym.cli import UserError, _parser, _run_config
from neurosym.persist.rundir import RunDir



class InspectError(UserError):
    """A user-fixable problem with the run directory: printed as one message, exit 2."""


def _run_dir(path: str) -> Path:
    run_dir = Path(path)
    if not run_dir.is_dir():
        raise InspectError(f"{path} is not a run directory; pass runs/<name>")
    return run_dir


def _config(run_dir: Path):
    """The run's saved config, not requiring its data files to still exist (export may not need them)."""
    return _run_config(str(run_dir), check_files=False)


# ---------------------------------------------------------------------------------------- export

def _data_paths(cfg) -> list:
    """The data files the run's config reads (never to be written over by an export)."""
    paths = []
    for value in (cfg.data.train, cfg.data.eval):
        for item in (value if isinstance(value, (list, tuple)) else [value]):
            path = getattr(item, "path", None) or (item.get("path") if isinstance(item, dict) else item)
            if isinstance(path, (str, os.PathLike)) and str(path):
                paths.append(Path(path))
    return paths


def _output_error(exc) -> InspectError:
    return InspectError(str(exc))


def cmd_export(args) -> int:
    from neurosym.data import load_examples
    from neurosym.remake.export import export_refined, export_view, output_target, source_root
    from neurosym.remake.store import RemakeStore
    from neurosym.persist.safe_output import OutputError

    run_dir = _run_dir(args.run_dir)
    cfg = _config(run_dir)
    store_path = RunDir(run_dir).remake
    has_store = store_path.exists()  # checked first: RemakeStore would create an empty one
    if args.only == "refined" and not has_store:
        raise InspectError(f"{run_dir} has no remake store yet ({store_path.name}): no symbolic update has stored "
                           f"a refined example in this run. Leave out --only to export its training data")
    only = args.only or ("refined" if has_store else "all")
    try:
        target = output_target(args.out, args.format, args.overwrite, [run_dir, *_data_paths(cfg)])
    except OutputError as exc:
        raise _output_error(exc) from None
    wandb_target = _wandb_target(run_dir, cfg) if args.wandb else None
    view = export_view(run_dir)  # one checkpoint: its prompt and the rows it recorded
    system = view.system
    train = []
    if only == "all":
        train, _ = load_examples(cfg.data.train, cfg.data)
    store = RemakeStore(store_path) if has_store else None
    try:
        refined = len(view.rows(store)) if store is not None else 0
        later = store.count() - refined if store is not None else 0
        out = export_refined(store, train, target, fmt=args.format, only=only, fields=cfg.data.fields,
                             system=system, schema=args.schema, view=view,
                             root=source_root(run_dir, _data_paths(cfg)))
    except (OutputError, ValueError) as exc:
        raise _output_error(exc) from None
    finally:
        if store is not None:
            store.close()
    rows = refined + len(train)
    if not has_store:
        detail = " (the training data: this run has no refined examples)"
    elif only == "all":
        detail = f" ({refined} refined + {len(train)} training)"
    else:
        detail = ""
    print(f"exported {rows} rows{detail} to {out}")
    if system is not None:
        print(f"  rows without their own system message carry the run's learned system prompt ({len(system)} chars)")
    if later > 0:
        print(f"  {later} refined row(s) stored after checkpoint {view.checkpoint.name} are left out (they belong "
              f"with a later prompt); export again once the run has saved its next checkpoint")
    if wandb_target is not None:
        _upload(run_dir, cfg, out, rows, args, only, system, *wandb_target)
    return 0


def _wandb_target(run_dir: Path, cfg) -> tuple[str, str]:
    """The run's W&B id and mode, checked before anything is written."""
    id_path = RunDir(run_dir).wandb_id
    run_id = id_path.read_text().strip() if id_path.exists() else ""
    if not run_id:
        raise InspectError(f"{run_dir} has no W&B run ({id_path.name} missing): it was trained with "
                           f"tracking.mode disabled; export without --wandb")
    mode = cfg.tracking.resolved_mode()
    if mode == "disabled":
        raise InspectError("tracking.mode is disabled for this run (config or $WANDB_MODE); "
                           "set WANDB_MODE=offline or online to upload")
    return run_id, mode


def _upload(run_dir: Path, cfg, out: Path, rows: int, args, only: str, system, run_id: str, mode: str) -> None:
    import wandb

    run = wandb.init(id=run_id, resume="allow", mode=mode, project=cfg.tracking.resolved_project(),
                     entity=cfg.tracking.entity, dir=os.environ.get("WANDB_DIR") or str(run_dir))
    name = re.sub(r"[^A-Za-z0-9_.-]+", "-", f"{cfg.run.name}-refined")
    art = wandb.Artifact(name, type="dataset",
                         metadata={"rows": rows, "format": args.format, "schema": args.schema, "only": only,
                                   "source": run_dir.name, "system_prompt": system})
    if out.is_dir():
        art.add_dir(str(out))
    else:
        art.add_file(str(out))
    run.log_artifact(art)
    run_files = getattr(run, "dir", None)
    run.finish()
    where = f"W&B run {run_id} ({mode})"
    print(f"uploaded artifact {name} (type dataset) to {where}")
    if mode == "offline" and run_files:
        print(f"upload it with: wandb sync {Path(run_files).parent}")


# ---------------------------------------------------------------------------------------- prompts, report

def cmd_prompts(args) -> int:
    from neurosym.observe.prompt_history import format_prompt_history, prompt_history
    print(format_prompt_history(prompt_history(_run_dir(args.run_dir))))
    return 0


def cmd_report(args) -> int:
    from neurosym.observe.report import write_report
    from neurosym.persist.safe_output import OutputError
    try:
        print(write_report(_run_dir(args.run_dir), args.out, overwrite=args.overwrite))
    except OutputError as exc:
        raise _output_error(exc) from None
    return 0


def register(sub) -> None:
    q = _parser(sub, "export", "Write the run's refined examples (a LoRA-only run: its training data) as a "
                "dataset, each row with the run's learned system prompt.",
                "neurosym export runs/tiny --out refined.jsonl --only all --wandb\n"
                "  neurosym export runs/tiny --out sft.jsonl --schema trl      # rows TRL's SFTTrainer takes as is")
    q.add_argument("run_dir")
    q.add_argument("--out", required=True,
                   help="file (jsonl, parquet) or folder (hf) to write; never inside a run directory")
    q.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out (written beside it first, swapped in when complete)")
    q.add_argument("--format", choices=("jsonl", "parquet", "hf"), default="jsonl",
                   help="jsonl (default), parquet, or hf (a datasets.save_to_disk folder)")
    q.add_argument("--schema", choices=("neurosym", "trl", "trl-messages"), default="neurosym",
                   help="neurosym (default: what `neurosym train` reads, with provenance columns); "
                        "trl: TRL SFTTrainer prompt/completion message lists (loss on the completion); "
                        "trl-messages: TRL `messages` rows. Every row carries the run's learned system prompt")
    q.add_argument("--only", choices=("refined", "all"), default=None,
                   help="refined: the refined examples (default when the run has a remake store); all: the "
                        "training data first, then the refined (default for a LoRA-only run: its training data)")
    q.add_argument("--wandb", action="store_true", help="also upload the file as a W&B dataset artifact of the run")
    q.set_defaults(func=cmd_export)

    q = _parser(sub, "prompts", "Show the system prompt's versions, the step of each and its eval loss.",
                "neurosym prompts runs/tiny")
    q.add_argument("run_dir")
    q.set_defaults(func=cmd_prompts)

    q = _parser(sub, "report", "Plot loss, grad norm, slope, routes, prompt versions and router gains as a PNG.",
                "neurosym report runs/tiny --out tiny.png")
    q.add_argument("run_dir")
    q.add_argument("--out", help="PNG to write (default: RUN_DIR/report.png, replaced each time)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    q.set_defaults(func=cmd_report)


__all__ = ["register", "cmd_export", "cmd_prompts", "cmd_report"]
