"""The testbed world: fictional entities, format operators, a pretraining corpus and a deployment task.

Everything is a pure function of a seed. Two kinds of error exist by construction:

* **knowledge errors**: questions about *new* entities (never in pretraining). Only weight updates can
  fix them: nothing in a prompt tells the student an unseen fact.
* **format errors**: questions about *known* entities whose reference is in a target format (upper case,
  underscores for spaces) that the task's system prompt does not ask for. The student already follows
  these instructions (pretraining), so one edit of the system prompt fixes all of them at once.

Knowledge items ask for a number (2 digits), on which the target format is the identity, so a
knowledge item has no format error and a format item no knowledge error: the two tools fix disjoint
sets of items. Deployment splits (train/eval/test) ask about the same facts in different phrasings;
test uses a phrasing neither train nor eval uses.

    python experiments/testbed/world.py --out experiments/testbed/data --alpha 0.5 --seed 0
    python experiments/testbed/world.py --world transfer --out /tmp/transfer   # worlds.py's tasks
"""
from __future__ import annotations

import argparse
import json
import random
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path
from typing import Callable

BASE_PROMPT = "Answer."

# Format operators: name -> (instruction a system prompt uses, transformation). Applied in this order.
OPS: dict[str, tuple[str, Callable[[str, str], str]]] = {
    "reverse": ("Write it backwards.", lambda v, a: v[::-1]),
    "upper": ("Use upper case.", lambda v, a: v.upper()),
    "underscore": ("Use underscores for spaces.", lambda v, a: v.replace(" ", "_")),
    "prefix": ("Name the attribute first.", lambda v, a: f"{a}: {v}"),
    "quote": ("Put it in quotes.", lambda v, a: f'"{v}"'),
    "bracket": ("Put it in brackets.", lambda v, a: f"[{v}]"),
    "exclaim": ("End with an exclamation mark.", lambda v, a: f"{v}!"),
}
OP_ORDER = list(OPS)
INSTRUCTION = {name: spec[0] for name, spec in OPS.items()}
TARGET_OPS = ("upper", "underscore")   # the deployment task's format: the identity on digits

ATTRIBUTES = ("city", "colour", "number")
CITIES = ["Velmora", "Port Ellen", "Karsk", "Dunmere", "Old Tarn", "Brisa", "Lowen Bay", "Ostrava",
          "Mirecourt", "Red Hollow", "Tamsin", "Geldra", "North Vale", "Quillon", "Saint Oro", "Fenwick"]
COLOURS = ["red", "sky blue", "green", "dark grey", "amber", "sea green", "violet", "pale pink",
           "teal", "deep red", "ochre", "ice white"]
# Question phrasings per attribute; deployment: train uses 0-1, eval 2, test 3 (all seen in pretraining).
QUESTIONS = {
    "city": ["City of {n}?", "Where does {n} live?", "{n} lives in which city?", "Which city is home to {n}?"],
    "colour": ["Colour of {n}?", "What colour does {n} like?", "{n} likes which colour?",
               "Which colour is {n}'s favourite?"],
    "number": ["Number of {n}?", "What is {n}'s number?", "{n} has which number?", "Which number is {n}'s?"],
}
FACTS = {  # declarative phrasings of a fact (pretraining only)
    "city": ["{n} lives in {v}.", "{n}'s city is {v}."],
    "colour": ["{n} likes {v}.", "{n}'s colour is {v}."],
    "number": ["{n} has number {v}.", "{n}'s number is {v}."],
}
SPLIT_PHRASINGS = {"train": (0, 1), "eval": (2,), "test": (3,)}
_ONSETS = ["b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z", "br", "dr", "kl", "st", "tr"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ou"]
_CODAS = ["", "n", "r", "l", "s", "k", "m", "th"]


def apply_ops(value: str, attribute: str, ops) -> str:
    """``value`` formatted with ``ops`` (applied in :data:`OP_ORDER`)."""
    for name in OP_ORDER:
        if name in ops:
            value = OPS[name][1](value, attribute)
    return value


def system_prompt(ops, base: str = BASE_PROMPT) -> str:
    """The system prompt that asks for ``ops`` (instructions in :data:`OP_ORDER`)."""
    return " ".join([base] + [INSTRUCTION[o] for o in OP_ORDER if o in ops])


@dataclass(frozen=True)
class Entity:
    name: str
    city: str
    colour: str
    number: str
    known: bool

    def value(self, attribute: str) -> str:
        return getattr(self, attribute)


@dataclass
class World:
    seed: int
    known: list[Entity]
    new: list[Entity]


def _name(rng: random.Random) -> str:
    syllables = rng.choice([2, 2, 3])
    return "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + (rng.choice(_CODAS) if i == syllables - 1 else "")
                   for i in range(syllables)).capitalize()


def make_world(seed: int = 0, n_known: int = 48, n_new: int = 32) -> World:
    rng = random.Random(seed)
    names: list[str] = []
    seen = set()
    while len(names) < n_known + n_new:
        n = _name(rng)
        if n not in seen and 4 <= len(n) <= 9:
            seen.add(n)
            names.append(n)
    ents = [Entity(n, rng.choice(CITIES), rng.choice(COLOURS), str(rng.randint(10, 99)), i < n_known)
            for i, n in enumerate(names)]
    return World(seed, ents[:n_known], ents[n_known:])


def _row(system, prompt: str, response: str, **meta) -> dict:
    row = {"system": system} if system is not None else {}
    return {**row, "prompt": prompt, "response": response, **({"meta": meta} if meta else {})}


def op_sets() -> list[tuple[str, ...]]:
    """Every operator alone and every pair (plus no operator)."""
    return [()] + [(o,) for o in OP_ORDER] + list(combinations(OP_ORDER, 2))


def pretraining_corpus(world: World, seed: int = 0, n_format: int = 12000, n_context: int = 2000) -> list[dict]:
    """Pretraining rows: known-entity questions under random format instructions (every operator alone
    and in pairs), declarative facts in several phrasings, and questions answered from a fact given
    in the prompt (about random unseen names, so reading the prompt is learned, not memorised)."""
    rng = random.Random(seed * 7919 + 1)
    rows = []
    sets = op_sets()
    for _ in range(n_format):
        e = rng.choice(world.known)
        a = rng.choice(ATTRIBUTES)
        ops = rng.choice(sets) if rng.random() < 0.7 else ()
        q = rng.choice(QUESTIONS[a]).format(n=e.name)
        rows.append(_row(system_prompt(ops), q, apply_ops(e.value(a), a, ops)))
    for e in world.known:  # every fact stated in each phrasing once
        for a in ATTRIBUTES:
            for f in FACTS[a]:
                stem, _ = f.split("{v}")
                rows.append(_row("Complete the fact.", stem.format(n=e.name).rstrip(), e.value(a) + "."))
    crng = random.Random(seed * 104729 + 3)
    for _ in range(n_context):
        name = _name(crng)
        a = crng.choice(ATTRIBUTES)
        v = {"city": crng.choice(CITIES), "colour": crng.choice(COLOURS), "number": str(crng.randint(10, 99))}[a]
        ops = crng.choice(sets) if crng.random() < 0.5 else ()
        fact = crng.choice(FACTS[a]).format(n=name, v=v)
        q = crng.choice(QUESTIONS[a]).format(n=name)
        rows.append(_row(system_prompt(ops), f"{fact} {q}", apply_ops(v, a, ops)))
    rng.shuffle(rows)
    return rows


def task_facts(world: World, alpha: float, n_facts: int = 32, seed: int = 0) -> list[tuple[Entity, str, str]]:
    """The deployment task's facts: (entity, attribute, kind) with ``round(alpha * n_facts)`` knowledge
    facts (numbers of new entities) and the rest format facts (cities/colours of known entities)."""
    rng = random.Random(seed * 31 + 17)
    n_know = round(alpha * n_facts)
    if n_know > len(world.new):
        raise ValueError(f"alpha={alpha} needs {n_know} new entities; the world has {len(world.new)}")
    know = [(e, "number", "knowledge") for e in rng.sample(world.new, n_know)]
    pool = [(e, a) for e in world.known for a in ("city", "colour")]
    fmt = [(e, a, "format") for e, a in rng.sample(pool, n_facts - n_know)]
    facts = know + fmt
    rng.shuffle(facts)
    return facts


def task_splits(world: World, alpha: float, n_facts: int = 32, seed: int = 0) -> dict[str, list[dict]]:
    """train/eval/test rows (same facts, different phrasings), a probe set (train-distribution rows the
    router measures gains on) and a retention set (known entities' numbers, plain format).

    Rows have no ``system`` field: the task's system prompt is ``data.system_prompt`` (what the symbolic
    route rewrites). Rows carry ``meta`` with the hidden error type; neurosym ignores unknown fields,
    and nothing that reaches the teacher is built from ``meta``."""
    facts = task_facts(world, alpha, n_facts, seed)
    out: dict[str, list[dict]] = {"train": [], "eval": [], "test": []}
    system = None
    for i, (e, a, kind) in enumerate(facts):
        answer = apply_ops(e.value(a), a, TARGET_OPS)
        for split, phrasings in SPLIT_PHRASINGS.items():
            for p in phrasings:
                out[split].append(_row(system, QUESTIONS[a][p].format(n=e.name), answer, kind=kind, fact=i))
    rng = random.Random(seed * 13 + 5)
    rng.shuffle(out["train"])
    out["probe"] = out["train"][:8]
    task_names = {e.name for e, _, _ in facts}
    keep = [e for e in world.known if e.name not in task_names]
    out["retention"] = [_row(system, QUESTIONS["number"][0].format(n=e.name), e.number, kind="retention")
                        for e in rng.sample(keep, min(48, len(keep)))]
    return out


def hand_prompt() -> str:
    """The hand-written correct system prompt for the deployment task (upper bound for format errors)."""
    return system_prompt(TARGET_OPS)


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_task(out: Path, alpha: float, seed: int = 0, world_seed: int = 0) -> dict[str, Path]:
    world = make_world(world_seed)
    splits = task_splits(world, alpha, seed=seed)
    return {name: write_jsonl(Path(out) / f"{name}.jsonl", rows) for name, rows in splits.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=str(Path(__file__).parent / "data"))
    ap.add_argument("--alpha", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0, help="task seed (which facts, order)")
    ap.add_argument("--world-seed", type=int, default=0)
    ap.add_argument("--world", default="default", choices=("default", "rules", "transfer", "shift", "backwards"),
                    help="which task (worlds.md): default (this module's task_splits), rules, transfer, shift, backwards")
    args = ap.parse_args(argv)
    if args.world == "default":
        written = write_task(Path(args.out), args.alpha, args.seed, args.world_seed)
    else:
        try:
            from . import worlds
        except ImportError:  # run as a script
            import worlds  # type: ignore
        written = worlds.write_world(args.world, Path(args.out), args.alpha, args.seed, args.world_seed)
    for name, path in written.items():
        print(f"{name}: {path}")


if __name__ == "__main__":
    main()
