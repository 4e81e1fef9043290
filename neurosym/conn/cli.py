"""Command line: ``neurosym conn info``, ``neurosym conn run OP OPERAND...``, ``neurosym generate MODEL``.

``register(subparsers)`` adds the parsers to the main ``neurosym`` CLI; ``python -m neurosym.conn.cli``
runs them on their own. Every command returns an exit code: 0, 1 when a network refuses its operands
(too long, wrong characters: the documented answer of `conn run`), 2 for a usage error caught before any
heavy work (an empty prompt, --max-new-tokens <= 0, a device this build lacks, --max-len above the cap,
an --ops-module that does not load). Errors go to stderr as one line, never a traceback.

``--ops-module`` imports a Python module (a dotted name or a ``.py`` path) that calls
``neurosym.conn.register(...)``: its operations and triggers are then available to ``conn run``,
``conn info`` and ``generate --conn``. Importing runs that module's code: name only modules you trust. A dotted
name is found on ``sys.path``, which holds ``$PYTHONPATH`` and, under ``python -m neurosym``, the current folder.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

RAW = argparse.RawDescriptionHelpFormatter

CONN_EPILOG = """examples:
  neurosym conn info
  neurosym conn run add 123 456          # prints 579
  neurosym conn run subtract 123 456     # prints -333
  neurosym conn run parity 0110101       # prints 0
  neurosym conn run reverse 31415        # prints 51413
"""

RUN_EPILOG = """examples:
  neurosym conn run parity 0110101
  neurosym conn run reverse 31415
  neurosym conn run add 123 456
  neurosym conn run subtract 456 123
  neurosym conn run add --max-len 100 <100-digit a> <100-digit b>

The answer is the last line of output. Invalid operands, or operands longer than the compiled
maximum (see `neurosym conn info`), exit with status 1 and a message on stderr.
"""

INFO_EPILOG = """examples:
  neurosym conn info
  neurosym conn info add --max-len 64
"""

GENERATE_EPILOG = """examples:
  neurosym generate ./my-model --prompt "123+456=" --max-new-tokens 8
  neurosym generate Qwen/Qwen2.5-0.5B --prompt "Q: 4812+977=" --conn add,subtract
  neurosym generate tiny://llama --prompt "parity(0110)=" --conn none    # the LM alone
  neurosym generate ./base --adapter ./runs/lora --prompt "12-30="
  neurosym generate ./my-model --prompt "mirror(abc)=" --conn mirror --ops-module my_ops.py

Triggers: an arithmetic expression before "=" (12 + 5 + 7 =, 1,234+5=, 10-3-2=) for add and subtract,
parity(bits)= (parity), reverse(text)= (reverse), and whatever --ops-module registers. The whole
expression must be one the networks compute: 3 * 4 + 2 =, dates, scores and phone numbers are left to
the model. When the text reaches a trigger the compiled networks write the answer (beta = 1) and the
number is ended (no digit may extend it); then the model continues (beta = 0). Prints the generated
continuation; what the networks computed, or why they stayed silent, is listed on stderr.

An encoder-decoder model (T5, BART: config.is_encoder_decoder) is loaded with AutoModelForSeq2SeqLM; the
prompt is its encoder input, and a trigger at the prompt's end is answered from the decoder's first token.
"""


OPS_MODULE_HELP = ("import MODULE, which registers operations with neurosym.conn.register (repeatable). This runs "
                   "its code: a .py path runs that file; a dotted name is imported from sys.path ($PYTHONPATH, "
                   "and the current folder under `python -m neurosym`), so a file of that name lying there runs. "
                   "Name only modules you trust")


def _fail(message: str, code: int = 2) -> int:  # every failure here is the user's to fix: exit 2, as every verb
    print(f"error: {message}", file=sys.stderr)
    return code


def _usage(message: str) -> int:
    return _fail(message, 2)


def load_ops_modules(specs: list[str] | None) -> str | None:
    """Import each ``--ops-module`` (a dotted module name or a path to a ``.py`` file); an error message or None."""
    import importlib
    import importlib.util

    for spec in specs or []:
        try:
            if spec.endswith(".py") or "/" in spec or "\\" in spec:
                path = Path(spec)
                if not path.is_file():
                    return f"--ops-module {spec}: no such file"
                module_spec = importlib.util.spec_from_file_location(f"neurosym_user_ops_{path.stem}", path)
                module = importlib.util.module_from_spec(module_spec)
                module_spec.loader.exec_module(module)
            else:
                importlib.import_module(spec)
        except Exception as err:  # the user's module: report what failed, not a traceback
            return f"--ops-module {spec} failed to load: {type(err).__name__}: {err}"
    return None


def _check_max_len(max_len: int | None) -> str | None:
    from neurosym.conn.ops import MAX_COMPILE_LEN

    if max_len is not None and not 1 <= max_len <= MAX_COMPILE_LEN:
        return (f"--max-len {max_len} is outside 1..{MAX_COMPILE_LEN}: compiling grows with the square of the "
                f"length (at 2,000 it takes minutes and gigabytes); split longer inputs and compose calls")
    return None


def cmd_run(args: argparse.Namespace) -> int:
    from neurosym.conn.errors import ConnInputError
    from neurosym.conn.ops import get_op

    problem = load_ops_modules(args.ops_module) or _check_max_len(args.max_len)
    if problem:
        return _usage(problem)
    try:
        print(get_op(args.op, args.max_len)(*args.operands))
    except ConnInputError as err:
        return _fail(str(err))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from neurosym.conn.errors import ConnInputError
    from neurosym.conn.ops import OPS, get_op

    problem = load_ops_modules(args.ops_module) or _check_max_len(args.max_len)
    if problem:
        return _usage(problem)
    names = args.ops or list(OPS)
    from neurosym.conn.precision import DTYPES, SCALED_MARGIN, compile_for, verify

    header = f"{'op':<9} {'max len':>7} {'layers':>6} {'attn':>4} {'mlp':>4} {'width':>6} {'mlp hidden':>10} " \
             f"{'heads':>5} {'params':>8}"
    print(header)
    ops = []
    for name in names:
        try:
            op = get_op(name, args.max_len)
        except ConnInputError as err:
            return _fail(str(err))
        ops.append(op)
        s = op.stats()
        print(f"{name:<9} {s['max_len']:>7} {s['layers']:>6} {s['attention_layers']:>4} {s['mlp_layers']:>4} "
              f"{s['d_model']:>6} {s['max_mlp_hidden']:>10} {s['max_heads']:>5} {s['parameters']:>8}")
    print("max len: longest operand (bits, characters, or digits per operand); width: residual stream "
          "(d_model); mlp hidden: widest MLP layer")
    if args.no_precision:
        return 0
    scaled = {d: f"{d}x{m:g}" for d, m in SCALED_MARGIN.items()}
    print("\nprecision: margin (how far every MLP unit stays outside its clamp band; 1.0 by construction in "
          "fp32) and longest exact operand length, measured on sampled inputs; "
          + ", ".join(f"{label}: compiled with margins scaled x{SCALED_MARGIN[d]:g} for {d} "
                      f"(neurosym.conn.precision.compile_for)" for d, label in scaled.items()))
    print(f"{'op':<9} " + " ".join(f"{'margin ' + d:>11} {'exact ' + d:>10}" for d in [*DTYPES, *scaled.values()]))
    for op in ops:
        cells, reasons = [], []
        for d in DTYPES:
            e = verify(op, d)
            cells.append(f"{e.margin:>11.4g} {e.longest:>10}")
            if e.reason:
                reasons.append(f"{d}: {e.reason}")
        for d, label in scaled.items():
            _, e = compile_for(op.name, d, op.max_len)
            cells.append(f"{e.margin:>11.4g} {e.longest:>10}")
            if e.reason:
                reasons.append(f"{label}: {e.reason}")
        print(f"{op.name:<9} " + " ".join(cells) + (f"   ({'; '.join(reasons)})" if reasons else ""))
    return 0


def _parse_conn_list(value: str) -> list[str] | str:
    """The ops named by --conn, or "all" (both resolved against the registry after --ops-module is loaded)."""
    if value.strip().lower() in ("", "none", "off"):
        return []
    if value.strip().lower() == "all":
        return "all"
    return [v.strip() for v in value.split(",") if v.strip()]


def _check_device(device: str) -> str | None:
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        return f"--device {device!r} is not a torch device; use cpu, cuda, cuda:0 or mps"
    if dev.type == "cuda" and not torch.cuda.is_available():
        return (f"--device {device} was asked but this torch build has no CUDA device "
                f"(torch {torch.__version__}); use --device cpu or install a CUDA build of torch")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        return f"--device {device}: only {torch.cuda.device_count()} CUDA device(s) are visible"
    if dev.type == "mps" and not torch.backends.mps.is_available():
        return f"--device {device} was asked but MPS is not available here; use --device cpu"
    return None


def load_model(name_or_path: str, adapter: str | None = None, device: str = "cpu",
               trust_remote_code: bool = False):
    """Model and tokenizer through the one model loader (``neurosym.compose.load``): a local folder, a
    hub id, ``tiny://<preset>``, a run directory, a checkpoint, a PEFT adapter folder or a composition
    (``neurosym compose``); ``adapter`` puts one more PEFT adapter on top."""
    from neurosym.compose import load

    seq2seq = _encoder_decoder_config(name_or_path)
    if seq2seq is not None:
        from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(name_or_path)
        model = AutoModelForSeq2SeqLM.from_pretrained(name_or_path).to(device)
    else:
        model, tokenizer = load(name_or_path, device=device, trust_remote_code=trust_remote_code)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter).to(device)
    model.eval()
    return model, tokenizer


def _encoder_decoder_config(name_or_path: str):
    """The config of an encoder-decoder model (T5, BART: loaded with ``AutoModelForSeq2SeqLM``), or None for
    everything the common loader takes (decoder-only models, runs, adapters, compositions, tiny://)."""
    if name_or_path.startswith("tiny://") or Path(name_or_path).is_file():
        return None
    try:
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(name_or_path)
    except (OSError, ValueError, KeyError):
        return None  # not a plain model: the common loader says what it is or why it does not load
    return config if getattr(config, "is_encoder_decoder", False) else None


def cmd_generate(args: argparse.Namespace) -> int:
    import torch
    from transformers import LogitsProcessorList

    from neurosym.conn.gate import ConnGate
    from neurosym.conn.ops import OPS

    # every check that needs no model first: loading one can take minutes
    if not args.prompt.strip():
        return _usage("--prompt is empty (or only whitespace); give the text to continue, "
                      "e.g. --prompt \"12+30=\"")
    if args.max_new_tokens <= 0:
        return _usage(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    problem = load_ops_modules(args.ops_module) or _check_device(args.device)
    if problem:
        return _usage(problem)
    if args.conn == "all":  # the default, resolved after --ops-module registered its ops
        args.conn = list(OPS)
    unknown = [n for n in args.conn if n not in OPS]
    if unknown:
        return _usage(f"--conn: unknown operation(s) {', '.join(unknown)}; choose from {', '.join(OPS)}, "
                      "'all' or 'none' (register your own with --ops-module)")

    from neurosym.model.load import ModelError
    try:
        model, tokenizer = load_model(args.model, args.adapter, args.device, args.trust_remote_code)
    except (OSError, ValueError, ImportError, ModelError) as err:
        return _fail(f"could not load model {args.model!r}"
                     f"{f' with adapter {args.adapter!r}' if args.adapter else ''}: {err}")
    processors = LogitsProcessorList()
    gate = None
    if args.conn:
        try:
            gate = ConnGate(tokenizer, ops=args.conn)
        except ValueError as err:
            return _fail(str(err))
        processors.append(gate)
    inputs = tokenizer(args.prompt, return_tensors="pt").to(args.device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    encoder_decoder = bool(getattr(model.config, "is_encoder_decoder", False))
    if gate is not None and encoder_decoder:  # the prompt is the encoder's: a trigger at its end is answered
        gate.set_encoder_input(inputs["input_ids"], inputs.get("attention_mask"))
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False,
                             logits_processor=processors, pad_token_id=pad)
    if gate is not None:
        for event in gate.events:
            if event.answer is None:
                print(f"[conn] {' '.join(event.operands)}: left to the model ({event.reason})", file=sys.stderr)
            elif event.op == "chain":
                print(f"[conn] {event.operands[0]} -> {event.answer} ({'; '.join(event.calls)})", file=sys.stderr)
            else:
                print(f"[conn] {event.op}({', '.join(event.operands)}) -> {event.answer}", file=sys.stderr)
    written = out[0] if encoder_decoder else out[0, inputs["input_ids"].shape[1]:]  # a decoder's output is all new
    print(tokenizer.decode(written, skip_special_tokens=True))
    return 0


def register(subparsers) -> None:
    """Add ``conn`` (``info``, ``run``) and ``generate`` to an argparse subparsers object."""
    conn = subparsers.add_parser(
        "conn", help="compiled neural networks: exact parity, reverse, add, subtract",
        description="Compiled neural networks (CoNNs): transformers whose weights are set from a program, "
                    "exact up to their compiled maximum length.",
        epilog=CONN_EPILOG, formatter_class=RAW)
    conn.set_defaults(func=lambda _args: (conn.print_help(sys.stderr), 2)[1])
    conn_sub = conn.add_subparsers(metavar="{info,run}")

    info = conn_sub.add_parser("info", help="layers, width and maximum length of each compiled network",
                               description="Print the size of each compiled network.", epilog=INFO_EPILOG,
                               formatter_class=RAW)
    info.add_argument("ops", nargs="*", metavar="OP", help="operations to describe (default: all)")
    info.add_argument("--max-len", type=int, default=None,
                      help="compile for this maximum operand length (at most 256)")
    info.add_argument("--ops-module", action="append", default=None, metavar="MODULE",
                      help=OPS_MODULE_HELP)
    info.add_argument("--no-precision", action="store_true",
                      help="skip measuring the margins and exact lengths in fp32/bf16/fp16 (a few seconds per op)")
    info.set_defaults(func=cmd_info)

    run = conn_sub.add_parser("run", help="run one compiled network on its operands",
                              description="Run a compiled network; the answer is the last line of output.",
                              epilog=RUN_EPILOG, formatter_class=RAW)
    run.add_argument("op", help="the operation: parity, reverse, add, subtract, or one --ops-module registers")
    run.add_argument("operands", nargs="+", metavar="OPERAND",
                     help="one operand (parity, reverse) or two (add, subtract)")
    run.add_argument("--max-len", type=int, default=None,
                     help="compile for operands up to this length, at most 256 (default: the op's default, "
                          "see `conn info`)")
    run.add_argument("--ops-module", action="append", default=None, metavar="MODULE",
                     help=OPS_MODULE_HELP)
    run.set_defaults(func=cmd_run)

    gen = subparsers.add_parser(
        "generate", help="generate text with the compiled networks gated in",
        description="Greedy generation from a causal or encoder-decoder LM, with the CoNN gate forcing exact "
                    "answers at triggers.",
        epilog=GENERATE_EPILOG, formatter_class=RAW)
    gen.add_argument("model", help="local model directory, hub id, or tiny://llama")
    gen.add_argument("--prompt", required=True, help="the text to continue")
    gen.add_argument("--conn", type=_parse_conn_list, default="all",
                     help="comma-separated operations to gate in (add,subtract,parity,reverse), 'all' "
                          "(default) or 'none'")
    gen.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default 32)")
    gen.add_argument("--adapter", default=None, help="a PEFT adapter directory to load on top of the model")
    gen.add_argument("--device", default="cpu", help="torch device (default cpu)")
    gen.add_argument("--ops-module", action="append", default=None, metavar="MODULE",
                     help=OPS_MODULE_HELP)
    gen.add_argument("--trust-remote-code", action="store_true",
                     help="allow the base model's own Python code to run: a composition.yaml (base:) or a run's "
                          "config that sets trust_remote_code: true is refused without this flag (a file you "
                          "received must not decide to run code); MODEL itself is loaded with it")
    gen.set_defaults(func=cmd_generate)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="neurosym", formatter_class=RAW,
                                     description="neurosym compiled neural networks")
    register(parser.add_subparsers(metavar="{conn,generate}"))
    args = parser.parse_args(argv)
    if not hasattr(args, "func"):
        parser.print_help(sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
