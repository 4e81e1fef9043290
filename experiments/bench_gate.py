"""Per-step cost of the CoNN gate at long contexts, before and after the trailing window, side by side.

The gate runs once per decoding step on every row. The previous gate decoded each row's whole text at
every step; this one decodes a trailing window. Both are timed here in one run, on the same inputs:
``batch`` rows of ``chars`` characters (character tokenizer: one token per character), then ``steps``
decoding steps (each appends one token per row), in two scenarios: prose with no trigger, and prose that
ends in an arithmetic question the gate answers. The "before" gate is loaded from git (``--before``).

    python experiments/bench_gate.py                       # 4,000 characters x batch 8
    python experiments/bench_gate.py --chars 16000 --batch 8

It also prints the table of trigger cases (text -> what the gate does) used in the closing note.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

CASES = [
    "3 * 4 + 2 = ", "10 - 3 - 2 = ", "12 + 5 + 7 = ", "1,234+5=", "1\u2009234 + 5 = ", "2^3+1=",
    "Final score 3-2 = ", "Call 555-1234 = ", "On 2024-01-05=", "Q: 4812+977=", "Q: 4812+977=5789", "3.5+1=",
    "x12+5=", "4 x 3 + 2 = ", "-3+5=", "3-5+10=", "7-9=", "12+5 =", "10:30-5=", "$5+3=",
    "parity(0110111)=", "then reverse(abc9)=", "1" * 40 + "+1=",
]


def load_before(rev: str):
    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:neurosym/conn/gate.py"], capture_output=True,
                            text=True, check=True).stdout
    module = types.ModuleType("gate_before")
    sys.modules["gate_before"] = module  # dataclasses look their module up
    exec(compile(source, f"{rev}:gate.py", "exec"), module.__dict__)  # noqa: S102 - our own file at an older commit
    return module.ConnGate


def time_steps(gate, ids: torch.Tensor, steps: int, next_token: int) -> float:
    """Mean seconds per gate call over ``steps`` steps, appending ``next_token`` after each."""
    scores = torch.zeros(ids.shape[0], len(gate.tokenizer))
    gate(ids, scores)  # warm caches (answers, compiled networks)
    start = time.perf_counter()
    for _ in range(steps):
        gate(ids, scores)
        ids = torch.cat([ids, torch.full((ids.shape[0], 1), next_token)], dim=1)
    return (time.perf_counter() - start) / steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chars", type=int, default=4000)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--before", default="b84279a", help="git revision of the previous gate")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)

    from neurosym.conn.gate import ConnGate
    from neurosym.model.tiny import build_tokenizer

    tok = build_tokenizer()
    before, after = load_before(args.before)(tok), ConnGate(tok)
    prose = ("The quick brown fox jumps over the lazy dog. " * (args.chars // 40 + 1))[: args.chars - 20]
    space = tok.convert_tokens_to_ids(" ")
    print(f"# gate cost per decoding step, {args.chars} characters x batch {args.batch}, {args.steps} steps "
          f"(ms per step; char tokenizer, one token per character)")
    print(f"{'scenario':<22} {'before':>8} {'after':>8} {'ratio':>7}")
    for name, tail in [("prose, no trigger", " and so on and on"), ("ends in 4812+977=", " Q: 4812+977=")]:
        ids = torch.tensor([tok.encode(prose + tail, add_special_tokens=False)] * args.batch)
        # in the trigger scenario the appended token is the answer's: time only the steps the gate forces
        steps = args.steps if name.startswith("prose") else 4
        t_before = time_steps(before, ids, steps, space)
        t_after = time_steps(after, ids, steps, space)
        print(f"{name:<22} {1e3 * t_before:>8.2f} {1e3 * t_after:>8.2f} {t_before / t_after:>6.1f}x")

    print("\n# trigger cases (char tokenizer): text -> what the gate writes, before and after")
    print(f"{'text':<26} {'before':<12} {'after':<12} why (after)")
    import warnings

    for text in CASES:
        fresh_before, fresh_after = load_before(args.before)(tok), ConnGate(tok)  # no answer cached from a row above

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            old = fresh_before.remaining(text)
            n = len(fresh_after.events)
            d = fresh_after.decide(text)
        new = {None: "silent", "force": repr(d.rest) if d else "", "end": "end number (no digit)",
               "guard": "guard '='"}[d.kind if d else None]
        why = ""
        if len(fresh_after.events) > n:
            e = fresh_after.events[-1]
            why = e.reason if e.answer is None else "; ".join(e.calls)
        shown = text if len(text) < 25 else text[:10] + "..." + text[-10:]
        print(f"{shown!r:<26} {('silent' if old is None else repr(old)):<12} {new:<12} {why}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
