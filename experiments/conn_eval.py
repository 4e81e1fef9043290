"""Accuracy of the compiled networks alone, and of a language model with and without the CoNN gate.

Part 1 runs each compiled network on random inputs of growing length, up to its compiled maximum and
one past it (where it must refuse, not answer). Part 2 asks a causal LM few-shot arithmetic questions
``a+b=`` / ``a-b=`` with operands of growing length, greedy, once alone and once with the gate (the
answer is the first number written; with the gate, generation stops when the gate has written it).

    python experiments/conn_eval.py                                  # tiny random Llama, built locally
    python experiments/conn_eval.py --model Qwen/Qwen2.5-0.5B --device cuda --prompts 50
    python experiments/conn_eval.py --library                        # Tracr lib.py programs: sizes, compile time

With the tiny random model the LM alone is near 0 and the gated model equals the networks' accuracy.
"""
from __future__ import annotations

import argparse
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import torch

from neurosym.conn import ConnInputError, get_op

TRUTH = {
    "parity": lambda x: str(x.count("1") % 2),
    "reverse": lambda x: x[::-1],
    "add": lambda a, b: str(int(a) + int(b)),
    "subtract": lambda a, b: str(int(a) - int(b)),
}
SYMBOL = {"add": "+", "subtract": "-"}
FEW_SHOT = {"add": "3+5=8\n12+30=42\n407+95=502\n", "subtract": "8-3=5\n42-50=-8\n502-95=407\n"}


def operands(op: str, length: int, rng: random.Random, alphabet: str) -> tuple[str, ...]:
    if op in SYMBOL:
        return tuple(str(rng.randrange(10 ** (length - 1) if length > 1 else 0, 10 ** length)) for _ in range(2))
    return ("".join(rng.choice(alphabet) for _ in range(length)),)


def lengths_for(max_len: int) -> list[int]:
    out, n = [], 1
    while n < max_len:
        out.append(n)
        n *= 2
    return out + [max_len, max_len + 1]


def conn_alone(ops: list[str], samples: int, rng: random.Random, device: str) -> list[dict]:
    rows = []
    for name in ops:
        op = get_op(name)
        op.program.model.to(device)
        for length in lengths_for(op.max_len):
            cases = [operands(name, length, rng, op.spec.alphabet) for _ in range(samples)]
            start = time.perf_counter()
            try:
                answers = op.batch(cases)
                correct = sum(a == TRUTH[name](*c) for a, c in zip(answers, cases))
                rows.append(dict(op=name, length=length, n=samples, accuracy=correct / samples, refused=0,
                                 seconds=time.perf_counter() - start))
            except ConnInputError:
                refused = 0
                for c in cases:
                    try:
                        op(*c)
                    except ConnInputError:
                        refused += 1
                rows.append(dict(op=name, length=length, n=samples, accuracy=0.0, refused=refused / samples,
                                 seconds=time.perf_counter() - start))
        op.program.model.to("cpu")
    return rows


def load(model_name: str | None, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if model_name is None:
        from neurosym.model.tiny import build_tiny_model

        model_name = str(build_tiny_model(Path(tempfile.mkdtemp()) / "tiny-llama"))
    tokenizer = AutoTokenizer.from_pretrained(model_name)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    model = AutoModelForCausalLM.from_pretrained(model_name, dtype=dtype).to(device).eval()
    return model, tokenizer


FIRST_NUMBER = re.compile(r"\s*(-?\d+)")


def lm_accuracy(model, tokenizer, op: str, cases: list[tuple[str, str]], gated: bool, device: str) -> float:
    from transformers import LogitsProcessorList, StoppingCriteriaList

    from neurosym.conn.gate import ConnGate, StopWhenAnswered

    prompts = [FEW_SHOT[op] + f"{a}{SYMBOL[op]}{b}=" for a, b in cases]
    longest = max(len(TRUTH[op](*c)) for c in cases)
    processors, stopping = LogitsProcessorList(), StoppingCriteriaList()
    if gated:
        gate = ConnGate(tokenizer, ops=[op])
        processors.append(gate)
        stopping.append(StopWhenAnswered(gate))
    enc = tokenizer(prompts, return_tensors="pt", padding=True).to(device)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=longest + 2, do_sample=False, logits_processor=processors,
                             stopping_criteria=stopping, pad_token_id=tokenizer.pad_token_id)
    correct = 0
    for row, case in zip(out, cases):
        text = tokenizer.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True)
        m = FIRST_NUMBER.match(text)
        correct += bool(m) and m.group(1) == TRUTH[op](*case)
    return correct / len(cases)


def lm_vs_gate(model, tokenizer, ops: list[str], lengths: list[int], prompts: int, rng: random.Random,
               device: str) -> list[dict]:
    rows = []
    for op in ops:
        for length in lengths:
            cases = [operands(op, length, rng, "") for _ in range(prompts)]
            start = time.perf_counter()
            alone = lm_accuracy(model, tokenizer, op, cases, gated=False, device=device)
            gated = lm_accuracy(model, tokenizer, op, cases, gated=True, device=device)
            rows.append(dict(op=op, digits=length, n=prompts, lm=alone, lm_gate=gated,
                             seconds=time.perf_counter() - start))
    return rows


def library_sizes(max_len: int) -> list[dict]:
    """Compile each Tracr lib.py program (neurosym.conn.library) at ``max_len``; its size and compile time."""
    from neurosym.conn import library as lib
    from neurosym.conn.compiler import compile_program

    programs = {
        "length": lambda: lib.make_length(tuple("abc"), max_len),
        "reverse": lambda: lib.make_reverse(tuple("abc"), max_len),
        "hist": lambda: lib.make_hist(tuple("abc"), max_len),
        "sort_unique": lambda: lib.make_sort_unique(tuple(range(max_len)), max_len),
        "sort": lambda: lib.make_sort(tuple(range(5)), max_len),
        "sort_freq": lambda: lib.make_sort_freq(tuple("abc"), max_len),
        "frac_prevs": lambda: lib.make_frac_prevs(tuple("abc"), max_len, lambda t: t == "a"),
        "pair_balance": lambda: lib.make_pair_balance(tuple("()a"), max_len),
        "shuffle_dyck": lambda: lib.make_shuffle_dyck(tuple("()a"), max_len),
        "shuffle_dyck2": lambda: lib.make_shuffle_dyck2(tuple("(){}a"), max_len),
        "detect_pattern": lambda: lib.make_detect_pattern(tuple("abc"), max_len, "abc"),
        "count_less_freq": lambda: lib.make_count_less_freq(tuple("abc"), max_len, 2),
        "count": lambda: lib.make_count(tuple("abc"), max_len, "a"),
    }
    rows = []
    for name, build in programs.items():
        start = time.perf_counter()
        stats = compile_program(build()).stats()
        rows.append(dict(program=name, max_len=max_len, seconds=time.perf_counter() - start, **stats))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="model directory or hub id (default: tiny random Llama)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--ops", default="parity,reverse,add,subtract", help="networks for part 1")
    parser.add_argument("--samples", type=int, default=500, help="random inputs per op and length (part 1)")
    parser.add_argument("--lm-ops", default="add,subtract", help="operations asked to the LM (part 2)")
    parser.add_argument("--digits", default="1,2,3,4,6,8,12,16,24,32", help="operand lengths for part 2")
    parser.add_argument("--prompts", type=int, default=20, help="prompts per op and length (part 2)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the results to this JSON file")
    parser.add_argument("--library", action="store_true", help="only compile Tracr's lib.py programs and print sizes")
    parser.add_argument("--library-max-len", default="5,10,32", help="lengths for --library")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    if args.library:
        print("# Tracr lib.py programs written with neurosym.conn (compiled in float32; exact on every input up to "
              "length 6 per tests/test_conn_library.py)")
        print(f"{'program':<16} {'max len':>7} {'layers':>6} {'width':>6} {'mlp hidden':>10} {'heads':>5} "
              f"{'params':>8} {'seconds':>8}")
        for n in (int(x) for x in args.library_max_len.split(",")):
            for r in library_sizes(n):
                print(f"{r['program']:<16} {r['max_len']:>7} {r['layers']:>6} {r['d_model']:>6} "
                      f"{r['max_mlp_hidden']:>10} {r['max_heads']:>5} {r['parameters']:>8} {r['seconds']:>8.2f}")
        return 0

    print(f"# Part 1: compiled networks alone ({args.samples} random inputs per row, device {args.device})")
    print(f"{'op':<9} {'length':>6} {'accuracy':>9} {'refused':>8} {'seconds':>8}")
    alone = conn_alone(args.ops.split(","), args.samples, rng, args.device)
    for r in alone:
        print(f"{r['op']:<9} {r['length']:>6} {r['accuracy']:>9.3f} {r['refused']:>8.3f} {r['seconds']:>8.2f}")

    model, tokenizer = load(args.model, args.device)
    name = args.model or "tiny random Llama (built locally)"
    print(f"\n# Part 2: {name}, few-shot, greedy; {args.prompts} prompts per row; accuracy of the first number")
    print(f"{'op':<9} {'digits':>6} {'LM':>6} {'LM+gate':>8} {'seconds':>8}")
    lengths = [int(d) for d in args.digits.split(",")]
    gated = lm_vs_gate(model, tokenizer, args.lm_ops.split(","), lengths, args.prompts, rng, args.device)
    for r in gated:
        print(f"{r['op']:<9} {r['digits']:>6} {r['lm']:>6.3f} {r['lm_gate']:>8.3f} {r['seconds']:>8.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"conn": alone, "lm": gated, "model": name}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
