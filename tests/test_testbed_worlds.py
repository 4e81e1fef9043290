"""The testbed's four more worlds (experiments/testbed/worlds.py, worlds.md): each a function of its
seed, its splits disjoint where the design says so, its hidden kinds as described, its hand prompt
right on every format row (for an ideal reader, under the simulated teacher's checker), and compare.py's
plumbing for them (the shift world's phase B, the oracle's second edit)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from classifiers.base import BatchStats
from experiments.testbed import teacher as T
from experiments.testbed import world as W
from experiments.testbed import worlds as X

ALPHAS = (0.0, 0.25, 0.5, 0.75, 1.0)
NEW = {e.name for e in W.make_world(0).new}
KNOWN = {e.name: e for e in W.make_world(0).known}
ENTITIES = {e.name: e for e in W.make_world(0).known + W.make_world(0).new}


def task_rows(s: dict) -> list[dict]:
    return [r for name, rows in s.items() if name != "retention" for r in rows]


def names_in(text: str) -> set[str]:
    return set(re.findall(r"[A-Z][a-z]+", text)) & set(ENTITIES)


@pytest.mark.parametrize("name", ["rules", "transfer", "shift", "backwards"])
def test_each_world_is_a_function_of_alpha_and_seed(name):
    assert X.splits(name, 0.5, seed=1) == X.splits(name, 0.5, seed=1)
    assert X.splits(name, 0.5, seed=1)["train"] != X.splits(name, 0.5, seed=2)["train"]
    assert X.hand_prompt(name, 3) == X.hand_prompt(name, 3)


@pytest.mark.parametrize("name", ["rules", "transfer", "shift"])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_hidden_kinds_are_as_described(name, alpha):
    s = X.splits(name, alpha, seed=0)
    n_facts = {"rules": X.RULES_FACTS, "transfer": X.TRANSFER_FACTS, "shift": 32}[name]
    facts = {}
    for r in task_rows(s):
        m = r["meta"]
        assert "system" not in r and names_in(r["prompt"]) == {m["entity"]}, r  # the row names its entity only
        if m["kind"] == "knowledge":  # numbers of entities the student never saw, the identity format
            assert m["entity"] in NEW and m["attribute"] == "number" and r["response"] == ENTITIES[m["entity"]].number
        elif m["kind"] == "format":  # facts the student knows, in a format the task prompt does not ask
            assert m["entity"] in KNOWN and m["attribute"] in ("city", "colour")
            phase_b = name == "shift" and not any(r in s[k] for k in ("train", "probe"))
            assert r["response"] != KNOWN[m["entity"]].value(m["attribute"]) or phase_b  # shift: B may be plain
        else:
            assert name == "shift" and m["kind"] == "retention" and r in s["train"] + s["train_b"] + s["probe"] + s["probe_b"]
            assert m["entity"] in KNOWN and r["response"] == KNOWN[m["entity"]].number
        if m["fact"] >= 0 and not m.get("heldout"):
            facts[m["fact"]] = m["kind"]
    assert list(facts.values()).count("knowledge") == round(alpha * n_facts)
    assert all(r["meta"]["kind"] == "retention" and r["meta"]["entity"] in KNOWN for r in s["retention"])


@pytest.mark.parametrize("name", ["rules", "transfer", "shift", "backwards"])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_splits_keep_the_conventions_of_task_splits(name, alpha):
    s = X.splits(name, alpha, seed=4)
    train_eval = {r["prompt"] for r in s["train"] + s["eval"]}
    assert not any(r["prompt"] in train_eval for r in s["test"])  # a phrasing no train/eval row uses
    assert all(r in s["train"] for r in s["probe"]) and len(s["probe"]) == 8
    task_entities = {r["meta"]["entity"] for r in task_rows(s)}
    assert not {r["meta"]["entity"] for r in s["retention"]} & task_entities  # retention: outside the task


@pytest.mark.parametrize("alpha", ALPHAS[:-1])
def test_transfer_tests_entities_no_train_row_mentions(alpha):
    s = X.splits("transfer", alpha, seed=5)
    held = [r for r in s["test"] if r["meta"].get("heldout")]
    assert len(held) == X.HELDOUT_ROWS and all(r["meta"]["kind"] == "format" for r in held)
    seen = " ".join(r["prompt"] + " " + r["response"] for k in ("train", "eval", "probe") for r in s[k])
    assert not any(r["meta"]["entity"] in seen for r in held)
    assert len({r["meta"]["fact"] for r in s["train"]}) == len(s["train"]) == X.TRANSFER_FACTS  # a row per fact
    knowledge = [r for r in s["test"] if r["meta"]["kind"] == "knowledge"]
    assert {r["meta"]["fact"] for r in knowledge} == {r["meta"]["fact"] for r in s["train"]
                                                      if r["meta"]["kind"] == "knowledge"}


@pytest.mark.parametrize("alpha", ALPHAS)
def test_backwards_is_transfer_with_every_answer_written_backwards(alpha):
    """Same rows, questions and hidden kinds as ``transfer`` for the same seed; only the answers differ,
    each reversed (a new entity's number too); the hand prompt asks for exactly that."""
    back, fwd = X.splits("backwards", alpha, seed=3), X.splits("transfer", alpha, seed=3)
    assert back.keys() == fwd.keys()
    for split in back:
        if split == "retention":  # known entities' plain numbers, outside the task: as in transfer
            assert back[split] == fwd[split]
            continue
        assert [(r["prompt"], r["meta"]) for r in back[split]] == [(r["prompt"], r["meta"]) for r in fwd[split]]
        for b, f in zip(back[split], fwd[split]):
            value = ENTITIES[b["meta"]["entity"]].value(b["meta"]["attribute"])
            assert b["response"] == value[::-1] and f["response"] != b["response"] or value == value[::-1]
    assert X.hand_prompt("backwards") == "Answer. Write it backwards."


def test_transfer_without_format_rows_tests_no_held_out_format():
    assert not any(r["meta"].get("heldout") for r in X.splits("transfer", 1.0, seed=0)["test"])


@pytest.mark.parametrize("seed", range(4))
def test_rules_give_each_rule_one_to_three_training_rows(seed):
    table = X.rules(seed)
    assert len(table) == 8 and len(set(table.values())) >= 4
    for (a, c, f), op in table.items():  # each condition changes the answer
        assert op != table[a, X.CLASSES[1 - X.CLASSES.index(c)], f] and op != table[a, c, X.FORMS[1 - X.FORMS.index(f)]]
    for alpha in ALPHAS:
        s = X.splits("rules", alpha, seed=seed)
        per_rule = {cell: 0 for cell in table}
        for r in s["train"]:
            m = r["meta"]
            if m["kind"] == "format":
                per_rule[m["attribute"], X.entity_class(m["entity"]), X.question_form(r["prompt"], m["entity"])] += 1
        assert max(per_rule.values()) <= 3
        if alpha <= 0.5:
            assert min(per_rule.values()) >= 1, (alpha, per_rule)
    test_cells = {(r["meta"]["attribute"], X.question_form(r["prompt"], r["meta"]["entity"]))
                  for r in X.splits("rules", 0.0, seed=seed)["test"]}
    assert len(test_cells) == 2  # the test phrasing: cities name last, colours name not last


def test_shift_phases_differ_only_in_the_format_rows_answers():
    for seed in range(6):
        s = X.splits("shift", 0.5, seed=seed)
        ops_a, ops_b = X.shift_ops(seed)
        assert ops_a != ops_b and set(ops_b) < set(ops_a)  # phase B removes instructions
        assert len(s["train"]) == len(s["train_b"]) and len(s["probe"]) == len(s["probe_b"])
        for a, b in zip(s["train"], s["train_b"]):  # row for row: same question, each phase's format
            m = a["meta"]
            assert a["prompt"] == b["prompt"] and m == b["meta"]
            value = ENTITIES[m["entity"]].value(m["attribute"])
            assert (a["response"], b["response"]) == (W.apply_ops(value, m["attribute"], ops_a),
                                                      W.apply_ops(value, m["attribute"], ops_b))
        rehearsal = [r for r in s["train"] if r["meta"]["kind"] == "retention"]
        assert 0.2 < len(rehearsal) / len(s["train"]) < 0.35  # about one row in four
        for split in ("eval", "test"):  # the target at the end of the run
            for r in s[split]:
                m = r["meta"]
                assert r["response"] == W.apply_ops(ENTITIES[m["entity"]].value(m["attribute"]), m["attribute"], ops_b)


@pytest.mark.parametrize("name", ["rules", "transfer", "shift", "backwards"])
@pytest.mark.parametrize("seed", range(3))
def test_hand_prompt_is_right_on_every_format_row_for_an_ideal_reader(name, seed):
    """Under the simulated teacher's checker: the answer an ideal reader of the hand prompt gives is
    ``correct``; under the task's starting prompt (``Answer.``) a format row's plain answer is a
    ``form`` error the teacher names (what the symbolic route can act on), never ``content``."""
    hand = X.hand_prompt(name, seed)
    for alpha in (0.0, 0.5):
        s = X.splits(name, alpha, seed=seed)
        final = [r for k in ("eval", "test", "train_b" if name == "shift" else "train") for r in s[k]]
        for r in final:
            m = r["meta"]
            value = ENTITIES[m["entity"]].value(m["attribute"])
            answer = X.follow(hand, r["prompt"], m["entity"], m["attribute"], value)
            assert T.diagnose(answer, r["response"])[0] == "correct", (r, answer)
            plain = T.diagnose(X.follow(W.BASE_PROMPT, r["prompt"], m["entity"], m["attribute"], value), r["response"])
            if m["kind"] == "format" and plain[0] != "correct":
                assert plain[0] == "format" and (plain[1] or plain[2]), (r, plain)


def test_rules_prompt_states_every_rule_and_a_bag_reading_of_it_fails():
    """The hand prompt names all eight rules; reading it as the student does (every instruction on
    every answer) gets the rules' rows wrong (worlds.md predicts hand_prompt low on this student)."""
    hand = X.hand_prompt("rules", 0)
    assert len(re.findall(r"(City|Colour), (A-K|L-Z), name (not )?last: ", hand)) == 8
    bag = {o for o, text in W.INSTRUCTION.items() if text in hand}
    rows = [r for r in X.splits("rules", 0.0, seed=0)["test"]]
    assert not any(W.apply_ops(KNOWN[r["meta"]["entity"]].value(r["meta"]["attribute"]), r["meta"]["attribute"],
                               bag) == r["response"] for r in rows)


def test_world_script_writes_each_world(tmp_path):
    W.main(["--world", "shift", "--alpha", "0.25", "--seed", "2", "--out", str(tmp_path)])
    got = {p.stem: [json.loads(line) for line in p.read_text().splitlines()] for p in tmp_path.glob("*.jsonl")}
    assert got == X.splits("shift", 0.25, seed=2)


def _signals(version: int):
    from monitors.signals import Signals
    return Signals(step=0, loss=None, loss_ema=None, slope=0.0, rel_slope=0.0, grad_norm=None, grad_norm_ema=None,
                   grad_norm_z=0.0, spike=False, plateau=False, steps_since_symbolic=0, prompt_version=version,
                   symbolic_budget_left=None, symbolic_available=True)


def test_the_oracle_edits_again_once_the_data_shifted():
    from experiments.testbed.oracle import OracleRouter

    oracle = OracleRouter(NEW, ("lora", "symbolic"), shift_at=3)
    batch = BatchStats(prompts=(f"City of {next(iter(KNOWN))}?",))
    routes = [oracle.decide(_signals(v), batch).route for v in (0, 1, 1, 1, 1, 2, 2)]
    assert routes == ["symbolic", "lora", "lora", "symbolic", "symbolic", "lora", "lora"]
    again = OracleRouter(NEW, ("lora", "symbolic"), shift_at=3)  # a resume keeps the version at the shift:
    again.load_state_dict(json.loads(json.dumps(oracle.state_dict())))
    assert again.decide(_signals(2), batch).route == "lora"  # phase B's edit has landed
    forgetful = OracleRouter(NEW, ("lora", "symbolic"), shift_at=3)
    forgetful.n_decisions = 7  # without the state it would take version 2 for the one at the shift
    assert forgetful.decide(_signals(2), batch).route == "symbolic"
    stuck = OracleRouter(NEW, ("lora", "symbolic"), shift_at=1)  # phase B's edit never lands: 2 tries, then LoRA
    assert [stuck.decide(_signals(v), batch).route for v in (0, 1, 1, 1, 1)] == ["symbolic", "symbolic", "symbolic",
                                                                                 "lora", "lora"]
    plain = OracleRouter(NEW, ("lora", "symbolic"))
    assert [plain.decide(_signals(v), batch).route for v in (0, 1, 1, 1)] == ["symbolic", "lora", "lora", "lora"]


@pytest.mark.slow
def test_compare_runs_the_shift_world_in_two_phases(tmp_path):
    """compare.py's shift plumbing on a tiny run: phase B resumes the same run on train_b."""
    from experiments.testbed import compare as C

    r = C.setting(0.5, 0, 0.0, 4, 2, tmp_path, ["none", "lora"], world="shift")
    run = tmp_path / "runs" / "lora"
    steps = [json.loads(line)["step"] for line in (run / "events.jsonl").read_text().splitlines()
             if json.loads(line).get("kind") == "train"]
    assert steps == list(range(1, 4 * C.LORA_FACTOR + 1))
    assert Path(C.yaml.safe_load((run / "config.yaml").read_text())["data"]["train"]).name == "train_b.jsonl"
    assert r["world"] == "shift" and not r["leaks"] and set(r["arms"]) == {"none", "lora"}


def test_the_ceiling_control_is_refused_on_the_shift_world(tmp_path, capsys):
    """hand_lora trains under one hand prompt from step 0; shift's target changes mid-run, so there is
    none: asked for by name it is an error that says so, in the default arms it is left out."""
    from experiments.testbed import compare as C

    with pytest.raises(ValueError, match="shift world has no one hand prompt"):
        C.setting(0.5, 0, 0.0, 4, 2, tmp_path, ["none", "hand_lora"], world="shift")
    with pytest.raises(SystemExit):
        C.main(["--world", "shift", "--arms", "lora", "hand_lora", "--work", str(tmp_path)])
    assert "leave hand_lora out" in capsys.readouterr().err
