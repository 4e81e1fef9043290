"""``neurosym compose``: combine trained modules into one adapter or a composition manifest.

Loaded by :func:`neurosym.cli.build_parser` through :func:`register`.
"""
from __future__ import annotations

import argparse

EXAMPLE = """neurosym compose --adapter pos=runs/pos --adapter sports=runs/sports --method output_sum --out comp/
  neurosym compose --adapter pos=runs/pos --adapter sports=runs/sports --method output_sum --bake --out baked/
  neurosym compose --adapter pos=runs/pos --adapter toxic=runs/toxic --method weight_linear \\
      --weight toxic=-1 --out detox/                       # negation: subtract a behaviour
  neurosym generate comp/ --prompt "Tell me something." --conn none"""


def _pair(kind: str):
    def parse(value: str):
        name, sep, rest = value.partition("=")
        if not sep or not name or not rest:
            raise argparse.ArgumentTypeError(f"expected NAME={'PATH' if kind == 'adapter' else 'LAMBDA'}, "
                                             f"got {value!r}")
        if kind == "weight":
            try:
                return name, float(rest)
            except ValueError:
                raise argparse.ArgumentTypeError(f"--weight {value}: {rest!r} is not a number") from None
        return name, rest
    return parse


def cmd_compose(args) -> int:
    from neurosym.compose.core import MANIFEST, compose

    weights = dict(args.weight or [])
    out = compose(args.adapter, args.method, args.out, weights=weights, bake=args.bake, density=args.density,
                  svd_rank=args.svd_rank, seed=args.seed, quantization=args.quantization,
                  overwrite=args.overwrite, trust_remote_code=args.trust_remote_code, base=args.base)
    from neurosym.compose.core import read_manifest
    _, doc = read_manifest(out / MANIFEST)
    lambdas = ", ".join(f"{m['name']}={m['weight']:g}" for m in doc["modules"])
    what = "PEFT adapter" if "result" in doc else "composition manifest (modules loaded at run time)"
    print(f"{args.method}{' (baked)' if args.bake else ''} of {lambdas}: wrote a {what} to {out}")
    return 0


def register(sub) -> None:
    from neurosym.cli import _parser
    from neurosym.compose.registry import METHODS

    p = _parser(sub, "compose", "combine trained modules (LoRA/QLoRA/(IA)3) without training again", EXAMPLE)
    p.add_argument("--adapter", action="append", required=True, type=_pair("adapter"), metavar="NAME=PATH",
                   help="a module: run directory (newest checkpoint), checkpoint folder or PEFT adapter folder")
    p.add_argument("--method", required=True, choices=list(METHODS),
                   help="output_*: modules run side by side, outputs summed (cost N modules, or 1 with --bake); "
                        "weight_*/cat/svd/ties/dare_*: one merged adapter (cost 1 module)")
    p.add_argument("--weight", action="append", type=_pair("weight"), metavar="NAME=LAMBDA",
                   help="lambda for a module (output_weighted, weight_linear, cat, svd, ties, dare_*); "
                        "negative subtracts it; default 1")
    p.add_argument("--bake", action="store_true",
                   help="output methods: write one PEFT adapter (LoRA: the exact cat merge, rank = sum of ranks)")
    p.add_argument("--density", type=float, default=None, help="ties/dare_*: fraction of values kept (default 0.5)")
    p.add_argument("--svd-rank", type=int, default=None, help="svd: rank of the result (default: largest r_i)")
    p.add_argument("--seed", type=int, default=0, help="seed of dare_*'s random drop (default 0)")
    p.add_argument("--base", default=None, metavar="NAME_OR_PATH",
                   help="the base model (hub id or folder) of PEFT adapter folders whose adapter_config.json does "
                        "not name one; the manifest records a folder relative to itself, so it loads from anywhere")
    p.add_argument("--quantization", choices=("none", "4bit"), default=None,
                   help="load the base this way (default: as the first module's run trained it)")
    p.add_argument("--out", required=True,
                   help="new folder for the result; never a module's folder or run directory, the base model's "
                        "folder or a model cache (an existing non-empty folder needs --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an earlier compose output at --out (a folder holding composition.yaml; the new "
                        "one is written beside it and swapped in); any other folder is refused")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="allow the base model's own Python code to run when a module's run config asks for it "
                        "(model.trust_remote_code: true); refused without this flag")
    p.set_defaults(func=cmd_compose)
