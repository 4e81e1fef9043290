"""The `neurosym` command line. Each verb is a thin wrapper over a library function."""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

EXIT_USAGE, EXIT_INTERRUPTED = 2, 130


class UserError(Exception):
    """Bad input from the user: printed as one message, exit code 2."""


def _parser(sub, name: str, help: str, example: str, **kw) -> argparse.ArgumentParser:
    return sub.add_parser(name, help=help, description=help, epilog=f"example:\n  {example}",
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kw)


def _load(config: str, overrides=(), check_files: bool = True):
    from neurosym.config import load_config
    return load_config(config, overrides or (), check_files=check_files)


def _run_config(run_dir: str, check_files: bool = True):
    """The saved config of a run directory (``check_files=False``: its data files may be gone)."""
    path = Path(run_dir) / "config.yaml"
    if not path.exists():
        raise UserError(f"{run_dir} is not a run directory (no config.yaml); pass runs/<name>")
    cfg = _load(str(path), check_files=check_files)
    # The saved config may have been moved with its run directory: trust where it is now.
    return cfg.model_copy(update={"run": cfg.run.model_copy(
        update={"output_dir": str(Path(run_dir).parent), "name": Path(run_dir).name})})


# ---------------------------------------------------------------------------------------- verbs

def cmd_train(args) -> int:
    from neurosym.train import train
    cfg = _load(args.config, args.set)
    outcome = train(cfg, resume=args.resume, quiet=args.quiet)
    return _report(outcome)


def cmd_resume(args) -> int:
    from neurosym.train import train
    cfg = _run_config(args.run_dir)
    if args.set:
        from neurosym.config import load_config
        cfg = load_config(Path(args.run_dir) / "config.yaml", args.set)
    outcome = train(cfg, resume=True, quiet=args.quiet)
    return _report(outcome)


def _report(outcome) -> int:
    s = outcome.state
    if outcome.interrupted:
        return EXIT_INTERRUPTED
    loss = f", eval loss {outcome.final_eval_loss:.4f}" if outcome.final_eval_loss is not None else ""
    print(f"done: {s.step} steps ({s.lora_steps} LoRA, {s.symbolic_steps} symbolic){loss}; "
          f"run directory {outcome.run_dir}")
    return 0


def cmd_validate(args) -> int:
    from neurosym.data import load_examples
    cfg = _load(args.config, args.set)
    print(f"config OK: {args.config}")
    print(f"  model      {cfg.model.name_or_path} (quantization {cfg.model.quantization}, dtype {cfg.model.dtype})")
    print(f"  lora       r={cfg.lora.r} alpha={cfg.lora.alpha} dropout={cfg.lora.dropout} "
          f"targets={cfg.lora.target_modules}")
    steps = f"max_steps={cfg.train.max_steps}" if cfg.train.max_steps else f"epochs={cfg.train.epochs}"
    print(f"  train      batch {cfg.train.batch_size} x accum {cfg.train.grad_accum}, lr {cfg.train.lr}, "
          f"{cfg.train.scheduler}, {steps}")
    print(f"  router     {cfg.router.kind}; tracking {cfg.tracking.resolved_mode()}; run dir {cfg.run_dir}")
    for split in ("train", "eval"):
        path = getattr(cfg.data, split)
        if not path:
            continue
        examples, report = load_examples(path, cfg.data)
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(report.formats.items()))
        print(f"  data.{split:<5} {len(examples)} examples ({kinds}), {report.skipped} skipped: {report.path}")
        if len(report.sources) > 1:
            for src in report.sources:
                print(f"    {src['path']}: {src['loaded']} examples, {src['skipped']} skipped, weight {src['weight']}")
        for err in report.errors[:5]:
            print(f"    skipped {err}")
    return 0


def cmd_preview(args) -> int:
    from neurosym.data import load_examples
    from neurosym.model import load_tokenizer
    from neurosym.preview import preview_lines
    cfg = _load(args.config, args.set)
    examples, _ = load_examples(cfg.data.train, cfg.data)
    tokenizer = load_tokenizer(cfg.model, cfg.run_dir.parent / ".models")
    color = sys.stdout.isatty() and not args.no_color
    print("\n".join(preview_lines(tokenizer, examples, cfg.data, args.n, color)))
    return 0


def cmd_eval(args) -> int:
    from neurosym.evaluate import evaluate_checkpoint
    cfg = _run_config(args.run_dir)
    result = evaluate_checkpoint(cfg, Path(args.run_dir), args.checkpoint)
    print(json.dumps(result, indent=1))
    return 0


def cmd_merge(args) -> int:
    from neurosym.merge import merge_run
    cfg = _run_config(args.run_dir)
    out = merge_run(cfg, Path(args.run_dir), Path(args.out), args.checkpoint, args.dequantize)
    print(f"merged model written to {out}")
    return 0


# ---------------------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="neurosym", description=__doc__ or "",
                                epilog="example:\n  neurosym train experiments/tiny.yaml",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    def overrides(q):
        q.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set train.lr=1e-4 (repeatable)")

    q = _parser(sub, "train", "Fine-tune from a YAML config.",
                "neurosym train experiments/tiny.yaml --set run.name=try2 --set train.max_steps=40")
    q.add_argument("config")
    overrides(q)
    q.add_argument("--resume", action="store_true", help="continue the run from its newest complete checkpoint")
    q.add_argument("--quiet", action="store_true", default=None, help="no progress bar (default off a terminal)")
    q.set_defaults(func=cmd_train)

    q = _parser(sub, "resume", "Continue an interrupted run from its newest complete checkpoint.",
                "neurosym resume runs/tiny")
    q.add_argument("run_dir")
    overrides(q)
    q.add_argument("--quiet", action="store_true", default=None)
    q.set_defaults(func=cmd_resume)

    q = _parser(sub, "eval", "Loss and perplexity of a checkpoint on the eval split.",
                "neurosym eval runs/tiny --checkpoint step-40")
    q.add_argument("run_dir")
    q.add_argument("--checkpoint", help="step-N (default: newest complete)")
    q.set_defaults(func=cmd_eval)

    q = _parser(sub, "validate", "Check a config and its data without loading a model.",
                "neurosym validate experiments/tiny.yaml")
    q.add_argument("config")
    overrides(q)
    q.set_defaults(func=cmd_validate)

    q = _parser(sub, "preview", "Show tokenized examples: the masked prompt and the trained response.",
                "neurosym preview experiments/tiny.yaml -n 3")
    q.add_argument("config")
    overrides(q)
    q.add_argument("-n", type=int, default=3, help="number of examples")
    q.add_argument("--no-color", action="store_true")
    q.set_defaults(func=cmd_preview)

    q = _parser(sub, "merge", "Merge the adapter into the base model (merge_and_unload).",
                "neurosym merge runs/tiny --out merged/tiny")
    q.add_argument("run_dir")
    q.add_argument("--out", required=True)
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
    for name in ("neurosym.conn.cli", "neurosym.inspect_cli"):
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
    from neurosym.errors import USER_ERRORS
    try:
        return args.func(args)
    except (UserError, *USER_ERRORS) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("aborted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    # Run the imported module's main, not this __main__ copy: verbs defined elsewhere raise
    # neurosym.cli.UserError, which must be the class main() catches.
    from neurosym.cli import main as _main
    sys.exit(_main())
