"""Tracr's ``lib.py`` programs compiled by Tracr and by ``neurosym.conn``: sizes side by side, and how right.

Each row is one program at one ``max_len`` over the same vocabulary, compiled once by Tracr
(``compiling.compile_rasp_to_model``) and once by our compiler (``compile_program``). Columns:

- params: the number of weights in the compiled model (Tracr: every array in ``model.params``, i.e.
  embeddings, q/k/v/o and MLP weights and biases; ours: every parameter of the ``nn.Module``, the
  unembedding included). ``nz``: how many of them are non-zero. Tracr gives every layer the same number
  of heads, key size and MLP width (the largest any layer needs) and pads with zeros, so its dense
  count is mostly padding; its ``nz`` is the fairer number to set beside ours.
- layers: attention + MLP sublayers in the model (Tracr's ``2 * num_layers``; an empty sublayer counts,
  as it is in the model). width: the residual stream's dimension.
- s: compile seconds (after one untimed warm-up compile on each side).
- ratio: our params / Tracr's params (dense), then our nz / Tracr's nz.
- right: on how many checked inputs each model's output is the program's meaning (a plain-Python
  reference, what RASP's evaluator says): random inputs, ``--per-length`` of every length up to max_len;
  categorical outputs equal, numerical within 1e-3.

Tracr is not a dependency of this project (it needs jax and dm-haiku, and is not on PyPI). To run its
side, make a separate environment and point this script at its python::

    python3 -m venv /work/tracr-venv
    /work/tracr-venv/bin/pip install "jax[cpu]" dm-haiku numpy networkx chex einops typing_extensions
    git clone https://github.com/google-deepmind/tracr /work/tracr-src     # source only; not installed
    PYTHONPATH=$PWD python experiments/conn_vs_tracr.py \\
        --tracr-python /work/tracr-venv/bin/python --tracr-path /work/tracr-src

Without ``--tracr-python`` the script tries ``import tracr`` in its own interpreter, and when that fails it
prints how to install Tracr and still prints our side. Tracr's side runs in a subprocess
(``--tracr-side``) that imports neither torch nor neurosym, and returns JSON.

Measured on a shared 2-core CPU, 2026-11-24: torch 2.13; Tracr 9ce2b8c (2024-02-05) with jax 0.10.2 and
dm-haiku 0.0.17; ``--max-len 5 10 --per-length 3`` (Tracr's compile seconds are mostly JAX tracing its
model: a program whose model has the shape of one compiled before, ``hist`` after ``length``, takes 0.02 s)::

    program          max_len | Tracr params     nz layers width      s | ours params     nz layers width      s |  ratio    nz | right: Tracr   ours
    ------------------------------------------------------------------------------------------------------------------------------------------------
    length                 5 |         1053     76      2    18   4.75 |         321     65      2    12  0.001 |   0.30  0.86 |        15/15  15/15
    reverse                5 |        18755    234      8    41   7.17 |        1352    231      4    30  0.003 |   0.07  0.99 |        15/15  15/15
    hist                   5 |         1053     70      2    18   0.02 |         321     59      2    12  0.001 |   0.30  0.84 |        15/15  15/15
    frac_prevs             5 |         1019     41      4    13   8.57 |         247     42      2    12  0.001 |   0.24  1.02 |        15/15  15/15
    pair_balance           5 |         2380     75      4    16  10.09 |         400     77      3    15  0.002 |   0.17  1.03 |        15/15  15/15
    shuffle_dyck           5 |        66405    462     12    39  11.80 |        1347    266     10    40  0.005 |   0.02  0.58 |        15/15  15/15
    shuffle_dyck2          5 |       251384    804     16    56   8.35 |        2240    413     11    55  0.008 |   0.01  0.51 |        15/15  15/15
    sort_unique            5 |         5906    166      4    35   2.77 |        1537    160      3    34  0.002 |   0.26  0.96 |        15/15  15/15
    sort                   5 |        17544    377      6    43   8.29 |        2471    385      4    42  0.004 |   0.14  1.02 |        15/15  15/15
    sort_freq              5 |        62134    735     10    64   8.49 |        4450    724      6    57  0.006 |   0.07  0.99 |        15/15  15/15
    count_less_freq        5 |         3247    143      4    25   5.60 |         630    116      4    19  0.002 |   0.19  0.81 |        15/15  15/15
    count                  5 |         1053     70      2    18   0.11 |         321     59      2    12  0.001 |   0.30  0.84 |        15/15  15/15
    detect_pattern         5 |         1703     56      4    19  10.51 |         433     76      3    18  0.001 |   0.25  1.36 |       15/15*  15/15
    nary_sequencemap       5 |       132444    770      6   163  12.62 |        3021    796      3    22  0.006 |   0.02  1.03 |        15/15  15/15
    length                10 |         2333    121      2    28  10.77 |         681    100      2    17  0.002 |   0.29  0.83 |        27/30  30/30
    reverse               10 |        89880    629      8    71   8.82 |        6232    671      4    50  0.005 |   0.07  1.07 |        27/30  30/30
    hist                  10 |         2333    115      2    28   0.08 |         681     94      2    17  0.001 |   0.29  0.82 |        30/30  30/30
    frac_prevs            10 |         2234     91      4    18   2.65 |         582     92      2    17  0.001 |   0.26  1.01 |        30/30  30/30
    pair_balance          10 |         4940    170      4    21   7.04 |         940    172      3    20  0.010 |   0.19  1.01 |        30/30  30/30
    shuffle_dyck          10 |       298584   1309     12    54   7.80 |        2937    496     10    55  0.097 |   0.01  0.38 |        30/30  30/30
    shuffle_dyck2         10 |      1041582   2333     16    71   8.34 |        4380    733     11    70  0.022 |   0.00  0.31 |        30/30  30/30
    sort_unique           10 |         9611    221      4    45   6.89 |        2352    200      3    44  0.002 |   0.24  0.90 |        30/30  30/30
    sort                  10 |        56489   1122      6    73   7.52 |        7806   1135      4    72  0.009 |   0.14  1.01 |        30/30  30/30
    sort_freq             10 |       554254   6800     10   164   5.63 |       43340   6829      6   152  0.048 |   0.08  1.00 |        30/30  30/30
    count_less_freq       10 |         8602    248      4    40   5.95 |        1510    196      4    29  0.004 |   0.18  0.79 |        30/30  30/30
    count                 10 |         2333    115      2    28   0.05 |         681     94      2    17  0.003 |   0.29  0.82 |        30/30  30/30
    detect_pattern        10 |         3248     71      4    24   3.68 |         803     91      3    23  0.002 |   0.25  1.28 |       30/30*  30/30
    nary_sequencemap      10 |      1404429   2495      6   513   3.25 |       14571   2746      3    32  0.028 |   0.01  1.10 |        27/30  30/30

    *: right except where the program's value is None (detect_pattern before the pattern can end): ours
    writes None, as Tracr's own rasp.evaluate says; Tracr's compiled model writes False.

Tracr's 27/30 rows are its inputs of length 10 = max_len: its selector-width MLP at the default
``mlp_exactness=100`` reads 9 for 10 (Tracr's issue #7). With ``--tracr-mlp-exactness 1000`` (same sizes)::

    length                10 |         2333    121      2    28   5.45 |         681    100      2    17  0.001 |   0.29  0.83 |        30/30  30/30
    reverse               10 |        89880    629      8    71   6.37 |        6232    671      4    50  0.006 |   0.07  1.07 |        30/30  30/30
    nary_sequencemap      10 |      1404429   2495      6   513   3.12 |       14571   2746      3    32  0.018 |   0.01  1.10 |        30/30  30/30
    length                16 |         4529    175      2    40   2.63 |        1311    142      2    23  0.002 |   0.29  0.81 |        48/48  48/48
    reverse               16 |       295746   1367      8   107   2.77 |       21196   1529      4    74  0.019 |   0.07  1.12 |        48/48  48/48
    nary_sequencemap      16 |      7938231   5885      6  1197   8.50 |       48429   6670      3    44  0.139 |   0.01  1.13 |        48/48  48/48

Ours is smaller in dense parameters everywhere (0.00-0.30x: no zero padding) and in layers (2-11 against
2-16) and within one of Tracr's residual width (narrower for nary_sequencemap: 32 against 513, since a
SequenceMap here takes n inputs directly where Tracr builds tuple-valued intermediates). In non-zero
weights it is 0.31-1.36x Tracr's: above 1 where MLPs dominate (detect_pattern 76 against 56, reverse and
nary_sequencemap up to 1.13x at 16), because every MLP unit here has one more weight (a large negative
BOS term, so no MLP writes at BOS) and the unembedding is counted (Tracr reads its output from the
residual stream without one).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time

NARY = lambda t, i, n: (t + i + n) % 4  # noqa: E731  # an n-ary map both sides can express

# name -> (vocabulary, inputs must be distinct)
CASES = {
    "length": ((1, 2, 3), False),
    "reverse": (tuple("abc"), False),
    "hist": (tuple("abc"), False),
    "frac_prevs": (tuple("abx"), False),
    "pair_balance": (tuple("()a"), False),
    "shuffle_dyck": (tuple("()a"), False),
    "shuffle_dyck2": (tuple("(){}a"), False),
    "sort_unique": ((1, 2, 3, 4, 5, 6, 7, 8, 9, 10), True),
    "sort": ((1, 2, 3, 4), False),
    "sort_freq": (tuple("abc"), False),
    "count_less_freq": (tuple("abc"), False),
    "count": (tuple("abc"), False),
    "detect_pattern": (tuple("abc"), False),
    "nary_sequencemap": ((0, 1, 2, 3), False),
}


def balanced(s, pairs) -> list[int]:
    """Dyck reference: 1 at every position if ``s`` is balanced for every (open, close) pair, else 0."""
    ok = True
    for o, c in pairs:
        depth = 0
        for t in s:
            depth += (t == o) - (t == c)
            ok &= depth >= 0
        ok &= depth == 0
    return [int(ok)] * len(s)


def _frac(s, tok) -> list[float]:
    return [s[:i + 1].count(tok) / (i + 1) for i in range(len(s))]


# name -> the program's meaning in plain Python (what RASP's evaluator says), to judge both compiled models
REFERENCE = {
    "length": lambda s: [len(s)] * len(s),
    "reverse": lambda s: s[::-1],
    "hist": lambda s: [s.count(t) for t in s],
    "frac_prevs": lambda s: _frac(s, "x"),
    "pair_balance": lambda s: [o - c for o, c in zip(_frac(s, "("), _frac(s, ")"))],
    "shuffle_dyck": lambda s: balanced(s, ["()"]),
    "shuffle_dyck2": lambda s: balanced(s, ["()", "{}"]),
    "sort_unique": sorted,
    "sort": sorted,
    "sort_freq": lambda s: [t for _, t in sorted(((-s.count(t), i), t) for i, t in enumerate(s))],
    "count_less_freq": lambda s: [sum(s.count(t) <= 2 for t in s)] * len(s),
    "count": lambda s: [s.count("a")] * len(s),
    "detect_pattern": lambda s: [None] + [s[i - 1:i + 1] == ["a", "b"] for i in range(1, len(s))],
    "nary_sequencemap": lambda s: [NARY(t, i, len(s)) for i, t in enumerate(s)],
}


def make_inputs(name: str, max_len: int, per_length: int, seed: int = 0) -> list[list]:
    vocab, distinct = CASES[name]
    rng = random.Random(f"{seed}-{name}-{max_len}")
    out = []
    for n in range(1, max_len + 1):
        for _ in range(per_length):
            out.append(rng.sample(list(vocab), n) if distinct else [rng.choice(vocab) for _ in range(n)])
    return out


# ---------------------------------------------------------------------------------------------- Tracr side
def tracr_program(name: str, max_len: int):
    from tracr.compiler import lib
    from tracr.rasp import rasp

    tokens = rasp.tokens
    programs = {
        "length": lambda: lib.make_length(),
        "reverse": lambda: lib.make_reverse(tokens),
        "hist": lambda: lib.make_hist(),
        "frac_prevs": lambda: lib.make_frac_prevs(rasp.numerical(tokens == "x")),
        "pair_balance": lambda: lib.make_pair_balance(tokens, "(", ")"),
        "shuffle_dyck": lambda: lib.make_shuffle_dyck(["()"]),
        "shuffle_dyck2": lambda: lib.make_shuffle_dyck2(),
        "sort_unique": lambda: lib.make_sort_unique(tokens, tokens),
        "sort": lambda: lib.make_sort(tokens, tokens, max_seq_len=max_len, min_key=1),
        "sort_freq": lambda: lib.make_sort_freq(max_len),
        "count_less_freq": lambda: lib.make_count_less_freq(2),
        "count": lambda: lib.make_count(tokens, "a"),
        "detect_pattern": lambda: lib.detect_pattern(tokens, "ab"),
        "nary_sequencemap": lambda: lib.make_nary_sequencemap(NARY, tokens, rasp.indices, lib.make_length()),
    }
    return programs[name]()


def tracr_side(jobs: list[dict], mlp_exactness: int = 100) -> list[dict]:
    import numpy as np
    from tracr.compiler import compiling, lib

    compiling.compile_rasp_to_model(lib.make_length(), vocab={1, 2}, max_seq_len=3, compiler_bos="BOS")  # warm-up
    results = []
    for job in jobs:
        name, max_len = job["name"], job["max_len"]
        vocab = set(CASES[name][0])
        start = time.perf_counter()
        try:
            model = compiling.compile_rasp_to_model(tracr_program(name, max_len), vocab=vocab,
                                                    max_seq_len=max_len, compiler_bos="BOS",
                                                    mlp_exactness=mlp_exactness)
        except Exception as exc:  # noqa: BLE001  # a program Tracr cannot compile is a result, not a crash
            results.append({"error": f"{type(exc).__name__}: {exc}"[:200]})
            continue
        seconds = time.perf_counter() - start
        arrays = [np.asarray(a) for layer in model.params.values() for a in layer.values()]
        outputs = [model.apply(["BOS", *seq]).decoded[1:] for seq in job["inputs"]]
        results.append({
            "params": int(sum(a.size for a in arrays)),
            "nonzero": int(sum(int(np.count_nonzero(a)) for a in arrays)),
            "layers": 2 * model.model_config.num_layers,
            "width": int(model.params["token_embed"]["embeddings"].shape[1]),
            "seconds": seconds,
            "outputs": [[_plain(v) for v in row] for row in outputs],
        })
    return results


def _plain(v):
    """A JSON-able output value (numpy scalars to Python numbers)."""
    if v is None or isinstance(v, (str, bool)):
        return v
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v)
    return int(f) if f.is_integer() and not isinstance(v, float) else f


# ------------------------------------------------------------------------------------------------ our side
def our_program(name: str, max_len: int):
    from neurosym.conn import library as lib
    from neurosym.conn.program import TRUE, Select, SelectorWidth, inputs

    vocab = CASES[name][0]
    if name == "nary_sequencemap":
        tokens, indices = inputs(vocab, max_len)
        length = SelectorWidth(Select(tokens, tokens, TRUE), label="length")
        return lib.make_nary_sequencemap(NARY, tokens, indices, length)
    special = {
        "frac_prevs": lambda: lib.make_frac_prevs(vocab, max_len, lambda t: t == "x"),
        "shuffle_dyck": lambda: lib.make_shuffle_dyck(vocab, max_len, ("()",)),
        "shuffle_dyck2": lambda: lib.make_shuffle_dyck(vocab, max_len, ("()", "{}")),
        "count_less_freq": lambda: lib.make_count_less_freq(vocab, max_len, 2),
        "count": lambda: lib.make_count(vocab, max_len, "a"),
        "detect_pattern": lambda: lib.make_detect_pattern(vocab, max_len, "ab"),
    }
    if name in special:
        return special[name]()
    return getattr(lib, f"make_{name}")(vocab, max_len)


def our_side(jobs: list[dict]) -> list[dict]:
    from neurosym.conn.compiler import compile_program

    compile_program(our_program("length", 3))  # warm-up
    results = []
    for job in jobs:
        start = time.perf_counter()
        compiled = compile_program(our_program(job["name"], job["max_len"]))
        seconds = time.perf_counter() - start
        stats = compiled.stats()
        params = list(compiled.model.parameters())
        results.append({
            "params": stats["parameters"],
            "nonzero": int(sum(int((p != 0).sum()) for p in params)),
            "layers": stats["layers"],
            "width": stats["d_model"],
            "seconds": seconds,
            "outputs": [[_plain(v) for v in row] for row in compiled(job["inputs"])],
        })
    return results


# ------------------------------------------------------------------------------------------------- driver
def score(outputs: list[list], inputs: list[list], name: str) -> str:
    """How many inputs a model gets right against REFERENCE: "n/N", with "*" when the only misses are
    False written where the program's value is None (see NONE_NOTE)."""
    def norm(v):
        return int(v) if isinstance(v, bool) else v

    right, soft = 0, False
    for seq, row in zip(inputs, outputs, strict=True):
        verdict = "right"
        for x, y in zip(map(norm, row), map(norm, REFERENCE[name](seq)), strict=True):
            if isinstance(x, (int, float)) and isinstance(y, (int, float)):
                ok = abs(x - y) <= 1e-3
            else:
                ok = x == y
            if not ok:
                verdict = "soft" if x == 0 and y is None and verdict == "right" else "wrong"
                if verdict == "wrong":
                    break
        right += verdict != "wrong"
        soft |= verdict == "soft"
    return f"{right}/{len(inputs)}" + ("*" if soft else "")


NONE_NOTE = ("*: right except where the program's value is None (RASP's 'no value': detect_pattern before the "
             "pattern can end). Ours writes None there, as Tracr's own rasp.evaluate says; Tracr's compiled model "
             "writes False.")


def run_tracr(jobs: list[dict], python: str | None, path: str | None, mlp_exactness: int = 100) -> list[dict] | str:
    if python is None:
        try:
            if path:
                sys.path.insert(0, path)
            import tracr  # noqa: F401
        except ImportError:
            return ("Tracr is not installed here, so only our side is shown. To compare, make a separate "
                    "environment (see this script's docstring): python3 -m venv /work/tracr-venv; "
                    "/work/tracr-venv/bin/pip install 'jax[cpu]' dm-haiku numpy networkx chex einops "
                    "typing_extensions; git clone https://github.com/google-deepmind/tracr /work/tracr-src; then "
                    "pass --tracr-python /work/tracr-venv/bin/python --tracr-path /work/tracr-src")
        return tracr_side(jobs, mlp_exactness)
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = path + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([python, os.path.abspath(__file__), "--tracr-side", "--tracr-mlp-exactness",
                           str(mlp_exactness)], input=json.dumps(jobs),
                          capture_output=True, text=True, env=env, check=False)
    if proc.returncode != 0:
        return f"Tracr's side failed (exit {proc.returncode}): {proc.stderr.strip()[-800:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-len", type=int, nargs="+", default=[5, 10])
    parser.add_argument("--programs", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--per-length", type=int, default=3, help="random inputs checked per length")
    parser.add_argument("--tracr-python", help="python of an environment where Tracr, jax and haiku import")
    parser.add_argument("--tracr-path", help="directory holding Tracr's source (its 'tracr' package)")
    parser.add_argument("--tracr-mlp-exactness", type=int, default=100,
                        help="Tracr's mlp_exactness (its default 100; its issue #7 suggests more for long inputs)")
    parser.add_argument("--tracr-side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.tracr_side:  # child process: jobs on stdin, results on the last line of stdout
        print(json.dumps(tracr_side(json.loads(sys.stdin.read()), args.tracr_mlp_exactness)))
        return 0

    jobs = [{"name": n, "max_len": m, "inputs": make_inputs(n, m, args.per_length)}
            for m in args.max_len for n in args.programs]
    ours = our_side(jobs)
    theirs = run_tracr(jobs, args.tracr_python, args.tracr_path, args.tracr_mlp_exactness)
    if isinstance(theirs, str):
        print(theirs + "\n")
        theirs = [None] * len(jobs)

    head = (f"{'program':<17}{'max_len':>7} | {'Tracr params':>12}{'nz':>7}{'layers':>7}{'width':>6}{'s':>7} | "
            f"{'ours params':>11}{'nz':>7}{'layers':>7}{'width':>6}{'s':>7} | {'ratio':>6}{'nz':>6} | "
            f"{'right: Tracr':>12}{'ours':>7}")
    print(head)
    print("-" * len(head))
    starred = False
    for job, o, t in zip(jobs, ours, theirs):
        mine = f"{o['params']:>11}{o['nonzero']:>7}{o['layers']:>7}{o['width']:>6}{o['seconds']:>7.3f}"
        ours_right = score(o["outputs"], job["inputs"], job["name"])
        if t is None or "error" in t:
            what = "-" if t is None else t["error"][:39]
            print(f"{job['name']:<17}{job['max_len']:>7} | {what:>39} | {mine} | {'-':>6}{'-':>6} | "
                  f"{'-':>12}{ours_right:>7}")
            continue
        theirs_right = score(t["outputs"], job["inputs"], job["name"])
        starred |= "*" in theirs_right + ours_right
        print(f"{job['name']:<17}{job['max_len']:>7} | {t['params']:>12}{t['nonzero']:>7}{t['layers']:>7}"
              f"{t['width']:>6}{t['seconds']:>7.2f} | {mine} | {o['params'] / t['params']:>6.2f}"
              f"{o['nonzero'] / max(t['nonzero'], 1):>6.2f} | {theirs_right:>12}{ours_right:>7}")
    if starred:
        print("\n" + NONE_NOTE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
