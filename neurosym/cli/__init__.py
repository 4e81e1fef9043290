"""neurosym: fine-tune a language model batch by batch with either a LoRA/QLoRA gradient step or a
symbolic update (TextGrad rewrites the prompt with a teacher LLM's feedback), chosen by a router
that learns which pays. Also: export refined data, compose trained adapters, compiled networks.

Each verb is a thin wrapper over a library function and imports only what it runs."""
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from neurosym.errors import UserError, is_user_error

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130
# choices of `eval` (the names of neurosym.config.schema's Literals; kept here so --help imports no pydantic model)
DATA_FORMATS = ("auto", "prompt_response", "prompt_completion", "alpaca", "chat", "sharegpt")
REWARD_KINDS = ("exact_match", "numeric_match", "regex", "neg_loss", "function")

# What `neurosym resume RUN --set KEY=VALUE` may change (and applies); anything else is refused,
# because it would make the checkpoint describe another job. Prefixes end with a dot.
RESUME_CHANGEABLE = (
    "train.max_steps", "train.epochs", "train.lr", "train.scheduler", "train.warmup", "train.warmup_ratio",
    "train.max_grad_norm", "train.eval_every", "train.save_every", "train.keep_last_n", "train.log_every",
    "train.early_stopping_patience", "train.early_stopping_metric", "train.early_stopping_min_delta",
    "tracking.", "teacher.", "symbolic.on_teacher_down", "symbolic.down_after_failures", "symbolic.down_for_steps",
    "symbolic.max_inflight", "run.collective_timeout_s",
)


def _parser(sub, name: str, help: str, example: str, **kw) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kw)


def _load(config: str, overrides=(), check_files: bool = True):
    from neurosym.config.schema import load_config
    return load_config(config, overrides or (), check_files=check_files)


def _run_config(run_dir: str, check_files: bool = True, overrides=()):
    """The saved config of a run directory, anchored where the directory is now (it may have been
    moved or copied: a verb acts on RUN, never on the path recorded inside it)."""
    from neurosym.persist.rundir import RunDir
    path = RunDir(run_dir).config
    if not path.is_file():
        raise UserError(f"{run_dir} is not a run directory (no {path.name}); pass runs/<name>")
    cfg = _load(str(path), overrides, check_files=check_files)
    return cfg.model_copy(update={"run": cfg.run.model_copy(
        update={"output_dir": str(Path(run_dir).parent), "name": Path(run_dir).name})})


def _resume_keys(overrides) -> list[str]:
    keys = [item.split("=", 1)[0].strip() for item in overrides]
    refused = [k for k in keys if not any(k == c or (c.endswith(".") and k.startswith(c)) for c in RESUME_CHANGEABLE)]
    if refused:
        raise UserError(f"a resume cannot change {', '.join(refused)}: the checkpoint belongs to the job as it "
                        f"was configured. Keys a resume may change: {', '.join(RESUME_CHANGEABLE)} "
                        f"(a trailing dot means the whole section). To change others, start a new run "
                        f"(--set run.name=<new>).")
    return keys


# ---------------------------------------------------------------------------------------- verbs

def _launch(args, verb: list) -> int | None:
    """``--nproc N``: become the launcher of N processes on this machine (torchrun's, exiting with the
    main process's code: :mod:`neurosym.runtime.launch`; never returns). None: no launch needed (one process,
    or already launched)."""
    from neurosym.runtime import launched
    if launched():
        return None
    nproc, env = args.nproc, {}
    if args.accelerate_config:
        from neurosym.runtime.launch import accelerate_config_env
        nproc, env = accelerate_config_env(args.accelerate_config, args.nproc)
    if not nproc or (nproc == 1 and not env):
        return None
    from neurosym.runtime.launch import exec_launcher
    flags = (["-v"] if args.verbose else []) + verb + [x for kv in args.set for x in ("--set", kv)]
    exec_launcher(nproc, flags + (["--quiet"] if args.quiet else []), env)


def _nproc(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError("--nproc must be at least 1")
    return n


def cmd_train(args) -> int:
    from neurosym.train import train
    cfg = _load(args.config, args.set)
    code = _launch(args, ["train", args.config] + (["--resume"] if args.resume else []))
    if code is not None:
        return code
    outcome = train(cfg, resume=args.resume, quiet=args.quiet, changed_keys=_resume_keys(args.set) if args.resume else ())
    return _report(outcome)


def cmd_resume(args) -> int:
    from neurosym.train import train
    keys = _resume_keys(args.set)  # refused before anything is read or written
    cfg = _run_config(args.run_dir, overrides=args.set)
    from neurosym.persist.rundir import RunDir
    if not RunDir(args.run_dir).has_run():
        raise UserError(f"{args.run_dir} holds no run yet (no {RunDir(args.run_dir).events.name}); start it with "
                        f"neurosym train CONFIG")
    code = _launch(args, ["resume", args.run_dir])
    if code is not None:
        return code
    outcome = train(cfg, resume=True, quiet=args.quiet, changed_keys=keys)
    return _report(outcome)


def _report(outcome) -> int:
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    if not outcome.main:  # several processes: the main one reports
        return 0
    from neurosym.observe.summary import summary_lines
    print("\n".join(summary_lines(outcome.run_dir, outcome.state, outcome.stop_reason)))
    return 0


def cmd_validate(args) -> int:
    from neurosym.data import load_splits
    cfg = _load(args.config, args.set)
    if cfg.model.source_problem():  # what train would meet at load: a local path that is not there
        raise UserError(f"{args.config}: {cfg.model.source_problem()}")
    from neurosym.observe.tracking import active_backends, check_tracking
    check_tracking(cfg)  # a tracker whose package is missing: what train refuses before the model loads
    loaded = load_splits(cfg.data)  # what the Run loads; every split read before a word is said
    print(f"config OK: {args.config}")
    hub = f"; hub id: no local folder {cfg.model.local_tried()}" if cfg.model.local_tried() else ""
    print(f"  model      {cfg.model.name_or_path} (quantization {cfg.model.quantization}, dtype {cfg.model.dtype}{hub})")
    print(f"  lora       r={cfg.lora.r} alpha={cfg.lora.alpha} dropout={cfg.lora.dropout} "
          f"targets={cfg.lora.target_modules}")
    steps = f"max_steps={cfg.train.max_steps}" if cfg.train.max_steps else f"epochs={cfg.train.epochs}"
    print(f"  train      batch {cfg.train.batch_size} x accum {cfg.train.grad_accum}, lr {cfg.train.lr}, "
          f"{cfg.train.scheduler}, {steps}")
    print(f"  router     {cfg.router.kind}; tracking {cfg.tracking.resolved_mode()} "
          f"({', '.join(active_backends(cfg)) or 'no backend'}); run dir {cfg.run_dir}")
    for split, (examples, report) in loaded.items():
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(report.formats.items()))
        print(f"  data.{split:<5} {len(examples)} examples ({kinds}), {report.skipped} skipped: {report.path}")
        if len(report.sources) > 1:
            for src in report.sources:
                print(f"    {src['path']}: {src['loaded']} examples, {src['skipped']} skipped, weight {src['weight']}")
        for err in report.errors[:5]:
            print(f"    skipped {err}")
    if cfg.router.kind != "always_lora":
        if args.offline:
            print("  teacher    not checked (--offline)")
        else:  # reachable, key accepted, model served, price known (a TeacherConfigError exits 2)
            from neurosym.teacher import check_teacher
            print(f"  {check_teacher(cfg.teacher)}")
    return 0


def cmd_preview(args) -> int:
    from neurosym.data import load_examples
    from neurosym.model.load import load_tokenizer
    from neurosym.data.preview import preview_lines
    cfg = _load(args.config, args.set)
    examples, _ = load_examples(cfg.data.train, cfg.data)
    tokenizer = load_tokenizer(cfg.model, cfg.run_dir.parent / ".models")
    color = sys.stdout.isatty() and not args.no_color
    print("\n".join(preview_lines(tokenizer, examples, cfg.data, args.n, color)))
    return 0


def cmd_eval(args) -> int:
    from neurosym.run.evaluate import evaluate_checkpoint
    from neurosym.persist.safe_output import OutputError
    cfg = _run_config(args.run_dir, check_files=args.data is None)
    try:
        result = evaluate_checkpoint(cfg, Path(args.run_dir), args.checkpoint, data=args.data, reward=args.reward,
                                     out=args.out, overwrite=args.overwrite, fmt=args.format,
                                     pattern=args.pattern, max_new_tokens=args.max_new_tokens)
    except OutputError as exc:
        raise UserError(str(exc)) from None
    print(json.dumps(result, indent=1))
    failed = f", {result['failed']} of {result['examples']} wrong" if result.get("failed") is not None else ""
    print(f"{result['reward']} {result['reward_mean']:.4f}{failed}; each row's generation and score: "
          f"{result['rows']}", file=sys.stderr)
    return 0


def cmd_merge(args) -> int:
    from neurosym.model.merge import SYSTEM_PROMPT_FILE, merge_run
    from neurosym.persist.safe_output import OutputError
    cfg = _run_config(args.run_dir)
    try:
        merged = merge_run(cfg, Path(args.run_dir), Path(args.out), args.checkpoint, args.dequantize,
                           overwrite=args.overwrite)
    except OutputError as exc:
        raise UserError(str(exc)) from None
    print(f"merged model written to {merged.path}")
    if merged.system_prompt is not None:
        print(f"  learned system prompt in {merged.path / SYSTEM_PROMPT_FILE}")
    print(f"  {merged.chat_template}")
    return 0


# ---------------------------------------------------------------------------------------- parser

def _add_eval(sub) -> None:
    q = _parser(sub, "eval", "Loss, perplexity and the job's reward of a checkpoint on the eval split or any data "
                "file; each row's prompt, reference, generation and score go to a JSONL (RUN/eval/ by default).",
                "neurosym eval runs/tiny --checkpoint step-40 --data data/test.jsonl --reward numeric_match")
    q.add_argument("run_dir")
    q.add_argument("--checkpoint", help="step-N (default: newest complete)")
    q.add_argument("--data", metavar="FILE", help="a data file or folder in any layout training accepts, or a hub "
                   "id (default: the config's data.eval, else data.train)")
    q.add_argument("--format", choices=DATA_FORMATS, help="record format of --data (default auto: detected per "
                   "record; the training file's data.format is not applied)")
    q.add_argument("--reward", choices=REWARD_KINDS, help="score generations with this reward (default: the "
                   "job's reward.kind)")
    q.add_argument("--pattern", metavar="REGEX", help="with --reward regex: the pattern (default reward.pattern)")
    q.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                   help="generation length (default symbolic.max_new_tokens)")
    q.add_argument("--out", metavar="FILE", help="write the per-row JSONL here instead of RUN/eval/"
                   "<checkpoint>-<data>.jsonl (never inside a run directory)")
    q.add_argument("--overwrite", action="store_true", help="replace an existing --out file")
    q.set_defaults(func=cmd_eval)


def build_parser() -> argparse.ArgumentParser:
    from neurosym import __version__
    p = argparse.ArgumentParser(prog="neurosym", description=(__doc__ or "").split("\n\nEach verb")[0],
                                epilog="example:\n  neurosym train experiments/tiny.yaml",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--version", action="version", version=f"neurosym {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def overrides(q):
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.lr=1e-4 (repeatable)")

    def nproc(q):
        q.add_argument("--nproc", type=_nproc, default=None, metavar="N",
                       help="train data-parallel on N processes of this machine (one per GPU) through torchrun; "
                            "for several nodes, start `accelerate launch -m neurosym ...` or `torchrun ... -m neurosym "
                            "...` yourself")
        q.add_argument("--accelerate-config", metavar="FILE", default=None,
                       help="an accelerate config file (`accelerate config`; FSDP2 shards the frozen base): its "
                            "variables go to every process; the number of processes is --nproc, else the file's "
                            "num_processes")

    q = _parser(sub, "train", "Fine-tune from a YAML config.",
                "neurosym train experiments/tiny.yaml --set run.name=try2 --set train.max_steps=40")
    q.add_argument("config")
    overrides(q)
    q.add_argument("--resume", action="store_true", help="continue the run from its newest complete checkpoint")
    q.add_argument("--quiet", action="store_true", default=None, help="no progress bar (default off a terminal)")
    nproc(q)
    q.set_defaults(func=cmd_train)

    q = _parser(sub, "resume", "Continue an interrupted run from its newest complete checkpoint.",
                "neurosym resume runs/tiny")
    q.add_argument("run_dir")
    overrides(q)
    q.add_argument("--quiet", action="store_true", default=None)
    nproc(q)
    q.set_defaults(func=cmd_resume)

    _add_eval(sub)

    q = _parser(sub, "validate", "Check a config, its data and its teacher without loading a model.",
                "neurosym validate experiments/tiny.yaml")
    q.add_argument("config")
    overrides(q)
    q.add_argument("--offline", action="store_true", help="do not contact the teacher")
    q.set_defaults(func=cmd_validate)

    q = _parser(sub, "preview", "Show tokenized examples: the masked prompt and the trained response.",
                "neurosym preview experiments/tiny.yaml -n 3")
    q.add_argument("config")
    overrides(q)
    q.add_argument("-n", type=int, default=3, help="number of examples")
    q.add_argument("--no-color", action="store_true")
    q.set_defaults(func=cmd_preview)

    q = _parser(sub, "merge", "Merge the adapter into the base model (merge_and_unload); the learned system "
                "prompt goes with it (system_prompt.txt, the chat template's default system message).",
                "neurosym merge runs/tiny --out merged/tiny")
    q.add_argument("run_dir")
    q.add_argument("--out", required=True, help="new folder for the merged model (never the base model's folder)")
    q.add_argument("--overwrite", action="store_true",
                   help="replace an existing --out folder (the new one is written beside it and swapped in)")
    q.add_argument("--checkpoint")
    q.add_argument("--dequantize", action="store_true", help="merge a QLoRA run into a bf16 copy of the base")
    q.set_defaults(func=cmd_merge)

    for extra in _extra_commands():
        extra(sub)
    return p


def _extra_commands():
    """Verbs that live with their feature (each module exposes ``register(subparsers)``)."""
    import importlib
    found = []
    for name in ("neurosym.conn.cli", "neurosym.cli.inspect", "neurosym.compose.cli"):
        try:
            found.append(importlib.import_module(name).register)
        except ModuleNotFoundError as exc:
            if not (exc.name and name.startswith(exc.name)):
                raise
    return found


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        if not is_user_error(exc):
            raise
        print(f"{_process_label()}error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_status", EXIT_USAGE)  # a message, but no input error (distributed.CollectiveFailed)


def _process_label() -> str:
    """'[process R] ' in a job of several processes other than the main one (each process reports
    its own errors: one that only process 1 met must be seen; one they all met reads as such)."""
    from neurosym.runtime import launched
    rank = os.environ.get("RANK", "0") if launched() else "0"
    return "" if rank == "0" else f"[process {rank}] "
