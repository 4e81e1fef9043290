"""Command line: ``neurosym conn info``, ``neurosym conn run OP OPERAND...``, ``neurosym generate MODEL``.

``register(subparsers)`` adds the parsers to the main ``neurosym`` CLI; ``python -m neurosym.conn.cli``
runs them on their own. Every command returns an exit code; errors go to stderr with exit code 1.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
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

Triggers: a+b= (add), a-b= (subtract), parity(bits)= (parity), reverse(text)= (reverse). When the
text reaches one, the compiled network writes the answer (beta = 1); then the model continues
(beta = 0). Prints the generated continuation; answers the networks wrote are listed on stderr.
"""


def _fail(message: str) -> int:
    print(f"error: {message}", file=sys.stderr)
    return 1


def cmd_run(args: argparse.Namespace) -> int:
    from neurosym.conn.errors import ConnInputError
    from neurosym.conn.ops import get_op

    try:
        print(get_op(args.op, args.max_len)(*args.operands))
    except ConnInputError as err:
        return _fail(str(err))
    return 0


def cmd_info(args: argparse.Namespace) -> int:
    from neurosym.conn.errors import ConnInputError
    from neurosym.conn.ops import OPS, get_op

    names = args.ops or list(OPS)
    header = f"{'op':<9} {'max len':>7} {'layers':>6} {'attn':>4} {'mlp':>4} {'width':>6} {'mlp hidden':>10} " \
             f"{'heads':>5} {'params':>8}"
    print(header)
    for name in names:
        try:
            s = get_op(name, args.max_len).stats()
        except ConnInputError as err:
            return _fail(str(err))
        print(f"{name:<9} {s['max_len']:>7} {s['layers']:>6} {s['attention_layers']:>4} {s['mlp_layers']:>4} "
              f"{s['d_model']:>6} {s['max_mlp_hidden']:>10} {s['max_heads']:>5} {s['parameters']:>8}")
    print("max len: longest operand (bits, characters, or digits per operand); width: residual stream "
          "(d_model); mlp hidden: widest MLP layer")
    return 0


def _parse_conn_list(value: str) -> list[str]:
    from neurosym.conn.ops import OPS

    if value.strip().lower() in ("", "none", "off"):
        return []
    if value.strip().lower() == "all":
        return list(OPS)
    names = [v.strip() for v in value.split(",") if v.strip()]
    unknown = [n for n in names if n not in OPS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown operation(s) {', '.join(unknown)}; choose from "
                                         f"{', '.join(OPS)}, 'all' or 'none'")
    return names


def load_model(name_or_path: str, adapter: str | None = None, device: str = "cpu"):
    """Model and tokenizer from a local directory, a hub id, or ``tiny://<preset>`` (built locally)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from neurosym.tiny import resolve_tiny

    path = resolve_tiny(name_or_path, Path(tempfile.gettempdir()) / "neurosym-tiny")
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    if adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, adapter)
    return model.to(device).eval(), tokenizer


def cmd_generate(args: argparse.Namespace) -> int:
    import torch
    from transformers import LogitsProcessorList

    from neurosym.conn.gate import ConnGate

    try:
        model, tokenizer = load_model(args.model, args.adapter, args.device)
    except (OSError, ValueError, ImportError) as err:
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
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=args.max_new_tokens, do_sample=False,
                             logits_processor=processors, pad_token_id=pad)
    if gate is not None:
        for event in gate.events:
            result = event.answer if event.answer is not None else f"refused ({event.reason})"
            print(f"[conn] {event.op}({', '.join(event.operands)}) -> {result}", file=sys.stderr)
    print(tokenizer.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
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
    info.add_argument("--max-len", type=int, default=None, help="compile for this maximum operand length")
    info.set_defaults(func=cmd_info)

    run = conn_sub.add_parser("run", help="run one compiled network on its operands",
                              description="Run a compiled network; the answer is the last line of output.",
                              epilog=RUN_EPILOG, formatter_class=RAW)
    run.add_argument("op", help="the operation: parity, reverse, add or subtract")
    run.add_argument("operands", nargs="+", metavar="OPERAND",
                     help="one operand (parity, reverse) or two (add, subtract)")
    run.add_argument("--max-len", type=int, default=None,
                     help="compile for operands up to this length (default: the op's default, see `conn info`)")
    run.set_defaults(func=cmd_run)

    gen = subparsers.add_parser(
        "generate", help="generate text with the compiled networks gated in",
        description="Greedy generation from a causal LM, with the CoNN gate forcing exact answers at triggers.",
        epilog=GENERATE_EPILOG, formatter_class=RAW)
    gen.add_argument("model", help="local model directory, hub id, or tiny://llama")
    gen.add_argument("--prompt", required=True, help="the text to continue")
    gen.add_argument("--conn", type=_parse_conn_list, default="all",
                     help="comma-separated operations to gate in (add,subtract,parity,reverse), 'all' "
                          "(default) or 'none'")
    gen.add_argument("--max-new-tokens", type=int, default=32, help="tokens to generate (default 32)")
    gen.add_argument("--adapter", default=None, help="a PEFT adapter directory to load on top of the model")
    gen.add_argument("--device", default="cpu", help="torch device (default cpu)")
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
