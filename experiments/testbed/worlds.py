"""Four more deployment tasks in the testbed world (issue 20, item 5): ``rules``, ``transfer``,
``shift`` and ``backwards``, beside the bundled one (``default``: :func:`world.task_splits`). What each
must show is in ``worlds.md``, written before any number.

Every task is a pure function of ``(alpha, seed)`` over the SAME world (``world.make_world(0)``: the
entities the pretrained ``testbed://student`` knows), so the student is never retrained. The
conventions are :func:`world.task_splits`' ones: rows have no ``system`` field (the task's system prompt
is ``data.system_prompt``, what the symbolic route rewrites), each row's hidden kind is in
``meta.kind`` (``knowledge`` | ``format`` | ``retention``), with ``meta.entity`` and ``meta.attribute``
so a checker can recompute it; nothing sent to the teacher is built from ``meta``. Splits: ``train``,
``eval``, ``test`` (a phrasing no train or eval row uses), ``probe`` (train rows the router measures
gains on) and ``retention`` (known entities' numbers outside the task, plain). ``alpha`` is the share
of knowledge facts (numbers of entities the student never saw).

* ``rules``: the format depends on the attribute, the entity's class (first letter of its name) and
  the question's form (the name last or not): 8 rules, 1-3 training rows each.
* ``transfer``: one train row per fact; the test adds known entities that no train row mentions, in
  the target format (only a prompt can carry the format to them).
* ``shift``: rehearsal rows (retention in the objective) and a format target that changes at half the
  steps: ``train``/``probe`` are phase A, ``train_b``/``probe_b`` phase B (same length, same rows, only
  the format rows' answers differ); eval and test are in phase B's format.

    python experiments/testbed/world.py --world rules --alpha 0.5 --seed 0 --out /tmp/rules
"""
from __future__ import annotations

import random
import re
from pathlib import Path
from typing import Callable

try:  # imported as experiments.testbed.worlds, or beside world.py as a script
    from . import world as W
except ImportError:  # pragma: no cover - script use
    import world as W  # type: ignore

WORLD_SEED = 0  # the world the student was pretrained in (pretrain.SPEC["world_seed"])
NAMES = ("default", "rules", "transfer", "shift", "backwards")


def _fact_row(e: W.Entity, attribute: str, phrasing: int, response: str, kind: str, fact: int) -> dict:
    return W._row(None, W.QUESTIONS[attribute][phrasing].format(n=e.name), response, kind=kind, fact=fact,
                  entity=e.name, attribute=attribute)


def _retention(entities: list[W.Entity]) -> list[dict]:
    """Known entities' numbers in the first phrasing, plain (the student answers them already)."""
    return [_fact_row(e, "number", 0, e.number, "retention", -1) for e in entities]


def _probe(train: list[dict]) -> list[dict]:
    return train[:8]


# ---- rules ---------------------------------------------------------------------------------------
RULE_OPS = ("upper", "prefix", "quote", "bracket", "exclaim")  # visible on every city and colour
CLASSES = ("A-K", "L-Z")  # an entity's class: the first letter of its name
FORMS = ("name last", "name not last")  # the question's form: it ends with the entity's name, or not
RULES_FACTS = 12
_RULE_RE = re.compile(r"(City|Colour), (A-K|L-Z), (name last|name not last): ([^.]+\.)")


def entity_class(name: str) -> str:
    return CLASSES[0] if name[:1].upper() <= "K" else CLASSES[1]


def question_form(question: str, name: str) -> str:
    return FORMS[0] if question.rstrip(" ?").endswith(name) else FORMS[1]


def rules(seed: int) -> dict[tuple[str, str, str], str]:
    """(attribute, class, form) -> the operator its answers take: 8 rules, at least 4 operators, and
    every condition matters: the two classes differ for each (attribute, form), and the two forms for
    each (attribute, class), so no one instruction is right on both halves of any pair."""
    rng = random.Random(seed * 7 + 101)
    cells = [(a, c, f) for a in ("city", "colour") for c in CLASSES for f in FORMS]
    while True:
        table = dict(zip(cells, (rng.choice(RULE_OPS) for _ in cells)))
        classes_differ = all(table[a, CLASSES[0], f] != table[a, CLASSES[1], f] for a, _, f in cells)
        forms_differ = all(table[a, c, FORMS[0]] != table[a, c, FORMS[1]] for a, c, _ in cells)
        if len(set(table.values())) >= 4 and classes_differ and forms_differ:
            return table


def rules_prompt(seed: int) -> str:
    """The correct system prompt of ``rules``: every rule, one clause each (what the student makes of
    it is another matter: it reads a prompt as a bag of instructions, see worlds.md)."""
    clauses = [f"{a.capitalize()}, {c}, {f}: {W.INSTRUCTION[op]}" for (a, c, f), op in rules(seed).items()]
    return " ".join([W.BASE_PROMPT, "Rules by attribute, first letter of the name, name last in the question "
                     "or not."] + clauses)


def rules_splits(world: W.World, alpha: float, seed: int = 0) -> dict[str, list[dict]]:
    """12 facts: ``round(alpha * 12)`` knowledge facts (plain numbers of new entities), the rest cities
    and colours of known entities spread round-robin over the 4 (attribute, class) groups. Each fact
    gives one train row per train phrasing (phrasing 0 ends with the name, phrasing 1 does not), so a
    rule has as many train rows as its group has facts: 3 at alpha 0, 1-2 at alpha 0.5."""
    table = rules(seed)
    rng = random.Random(seed * 31 + 17)
    n_know = round(alpha * RULES_FACTS)
    if n_know > len(world.new):
        raise ValueError(f"alpha={alpha} needs {n_know} new entities; the world has {len(world.new)}")
    facts = [(e, "number", "knowledge") for e in rng.sample(world.new, n_know)]
    groups = [(a, c) for a in ("city", "colour") for c in CLASSES]
    pools = {c: rng.sample([e for e in world.known if entity_class(e.name) == c],
                           len([e for e in world.known if entity_class(e.name) == c])) for c in CLASSES}
    used: set[str] = set()
    for i in range(RULES_FACTS - n_know):
        a, c = groups[i % len(groups)]
        e = next(e for e in pools[c] if e.name not in used)
        used.add(e.name)
        facts.append((e, a, "format"))
    rng.shuffle(facts)
    out: dict[str, list[dict]] = {"train": [], "eval": [], "test": []}
    for i, (e, a, kind) in enumerate(facts):
        for split, phrasings in W.SPLIT_PHRASINGS.items():
            for p in phrasings:
                q = W.QUESTIONS[a][p].format(n=e.name)
                op = () if kind == "knowledge" else (table[a, entity_class(e.name), question_form(q, e.name)],)
                out[split].append(_fact_row(e, a, p, W.apply_ops(e.value(a), a, op), kind, i))
    rng.shuffle(out["train"])
    out["probe"] = _probe(out["train"])
    keep = [e for e in world.known if e.name not in used]
    out["retention"] = _retention(random.Random(seed * 13 + 5).sample(keep, min(24, len(keep))))
    return out


# ---- transfer ------------------------------------------------------------------------------------
TRANSFER_FACTS, HELDOUT_ROWS = 32, 16


def _draw_facts(rng: random.Random, world: W.World, pool: list, alpha: float, n_facts: int) -> list[tuple]:
    """``n_facts`` facts in shuffled order, ``round(alpha * n_facts)`` of them new entities' numbers
    (``knowledge``), the rest cities and colours of ``pool``'s known entities (``format``)."""
    n_know = round(alpha * n_facts)
    if n_know > len(world.new):
        raise ValueError(f"alpha={alpha} needs {n_know} new entities; the world has {len(world.new)}")
    facts = [(e, "number", "knowledge") for e in rng.sample(world.new, n_know)]
    facts += [(e, a, "format") for e, a in rng.sample([(e, a) for e in pool for a in ("city", "colour")],
                                                      n_facts - n_know)]
    rng.shuffle(facts)
    return facts


def transfer_splits(world: W.World, alpha: float, seed: int = 0, ops: tuple[str, ...] = W.TARGET_OPS
                    ) -> dict[str, list[dict]]:
    """One train row per fact (phrasing 0 or 1), every answer in the format ``ops``; the known
    entities fall in three disjoint pools:
    12 held out (their cities and colours, target format, are the test's ``format`` rows, with
    ``meta.heldout``), 24 for the train's format facts, 12 for retention. Test: the knowledge facts in
    the test phrasing and 16 held-out rows (none when no train row shows the format: alpha 1)."""
    rng = random.Random(seed * 31 + 29)
    known = rng.sample(world.known, len(world.known))
    heldout, pool, kept = known[:12], known[12:36], known[36:]
    facts = _draw_facts(rng, world, pool, alpha, TRANSFER_FACTS)
    out: dict[str, list[dict]] = {"train": [], "eval": [], "test": []}
    for i, (e, a, kind) in enumerate(facts):
        answer = W.apply_ops(e.value(a), a, ops)
        out["train"].append(_fact_row(e, a, rng.choice(W.SPLIT_PHRASINGS["train"]), answer, kind, i))
        out["eval"].append(_fact_row(e, a, 2, answer, kind, i))
        if kind == "knowledge":
            out["test"].append(_fact_row(e, a, 3, answer, kind, i))
    if any(kind == "format" for _, _, kind in facts):  # a train row shows the target format
        held = rng.sample([(e, a) for e in heldout for a in ("city", "colour")], HELDOUT_ROWS)
        for j, (e, a) in enumerate(held):
            row = _fact_row(e, a, 3, W.apply_ops(e.value(a), a, ops), "format", TRANSFER_FACTS + j)
            row["meta"]["heldout"] = True
            out["test"].append(row)
    rng.shuffle(out["test"])
    out["probe"] = _probe(out["train"])
    out["retention"] = _retention(kept)
    return out


# ---- backwards -----------------------------------------------------------------------------------
BACKWARDS_OPS = ("reverse",)  # not the identity on digits: a new entity's number is learnt reversed


def backwards_splits(world: W.World, alpha: float, seed: int = 0) -> dict[str, list[dict]]:
    """``transfer`` with every answer written backwards (worlds.md, section 4)."""
    return transfer_splits(world, alpha, seed, ops=BACKWARDS_OPS)


# ---- shift ---------------------------------------------------------------------------------------
SHIFT_A = W.TARGET_OPS
SHIFT_B_CHOICES: tuple[tuple[str, ...], ...] = (("upper",), ("underscore",), ())  # the identity on digits


def shift_ops(seed: int) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(phase A's operators, phase B's): B drops one or both of A's, so the fix removes instructions;
    the three B's in turn by seed (seeds 0-2 cover them all). B = ``("upper",)`` changes only the
    answers with a space (``PORT_ELLEN`` -> ``PORT ELLEN``); ``()`` makes ``Answer.`` right again."""
    return SHIFT_A, SHIFT_B_CHOICES[seed % len(SHIFT_B_CHOICES)]


def shift_splits(world: W.World, alpha: float, seed: int = 0, n_facts: int = 32) -> dict[str, list[dict]]:
    """``kind``'s facts and phrasings (format facts drawn from 24 known entities), plus rehearsal rows
    in train: the numbers of 12 other known entities in both train phrasings (kind ``retention``, right
    under any phase's format). The retention split holds 12 further known entities. ``train``/``probe``
    ask for phase A's format, ``train_b``/``probe_b`` for phase B's, row for row; eval/test for B's."""
    ops_a, ops_b = shift_ops(seed)
    rng = random.Random(seed * 31 + 41)
    known = rng.sample(world.known, len(world.known))
    pool, rehearse, kept = known[:24], known[24:36], known[36:]
    facts = _draw_facts(rng, world, pool, alpha, n_facts)
    out: dict[str, list[dict]] = {"train": [], "train_b": [], "eval": [], "test": []}
    order = []
    for i, (e, a, kind) in enumerate(facts):
        for p in W.SPLIT_PHRASINGS["train"]:
            order.append((e, a, p, kind, i))
        for split in ("eval", "test"):
            p = W.SPLIT_PHRASINGS[split][0]
            out[split].append(_fact_row(e, a, p, W.apply_ops(e.value(a), a, ops_b), kind, i))
    order += [(e, "number", p, "retention", -1) for e in rehearse for p in W.SPLIT_PHRASINGS["train"]]
    rng.shuffle(order)
    for e, a, p, kind, i in order:
        out["train"].append(_fact_row(e, a, p, W.apply_ops(e.value(a), a, ops_a), kind, i))
        out["train_b"].append(_fact_row(e, a, p, W.apply_ops(e.value(a), a, ops_b), kind, i))
    out["probe"], out["probe_b"] = _probe(out["train"]), _probe(out["train_b"])
    out["retention"] = _retention(kept)
    return out


# ---- the registry ----------------------------------------------------------------------------------
SPLITS: dict[str, Callable[..., dict[str, list[dict]]]] = {
    "default": W.task_splits, "rules": rules_splits, "transfer": transfer_splits, "shift": shift_splits,
    "backwards": backwards_splits}


def splits(name: str, alpha: float, seed: int = 0, world_seed: int = WORLD_SEED) -> dict[str, list[dict]]:
    """The task ``name`` at ``(alpha, seed)``: {split: rows}."""
    if name not in SPLITS:
        raise ValueError(f"unknown world {name!r}; choose one of {', '.join(NAMES)}")
    return SPLITS[name](W.make_world(world_seed), alpha, seed=seed)


def hand_prompt(name: str, seed: int = 0) -> str:
    """The hand-written correct system prompt of task ``name`` (for ``shift``: phase B's, the target at
    the end of the run)."""
    if name == "rules":
        return rules_prompt(seed)
    if name == "shift":
        return W.system_prompt(shift_ops(seed)[1])
    if name == "backwards":
        return W.system_prompt(BACKWARDS_OPS)
    return W.hand_prompt()


def write_world(name: str, out: Path, alpha: float, seed: int = 0, world_seed: int = WORLD_SEED) -> dict[str, Path]:
    """Every split of ``name`` as ``<out>/<split>.jsonl``."""
    return {split: W.write_jsonl(Path(out) / f"{split}.jsonl", rows)
            for split, rows in splits(name, alpha, seed, world_seed).items()}


# ---- a perfect reader of prompts (the tests' checker) ----------------------------------------------
def follow(prompt: str, question: str, entity: str, attribute: str, value: str) -> str:
    """What an ideal instruction follower answers under ``prompt``: the instructions stated
    unconditionally, plus the operator of every ``rules`` clause whose condition the row meets. The
    testbed student is NOT such a reader (it applies every instruction it sees to every answer)."""
    ops = set()
    for a, c, f, instruction in _RULE_RE.findall(prompt):
        if (a.lower() == attribute and c == entity_class(entity) and f == question_form(question, entity)
                and instruction in W.INSTRUCTION.values()):
            ops.add(next(o for o, text in W.INSTRUCTION.items() if text == instruction))
    rest = _RULE_RE.sub("", prompt)
    ops |= {o for o, text in W.INSTRUCTION.items() if text in rest}
    return W.apply_ops(value, attribute, ops)
