"""The routing testbed: the world and its splits, the pretrained student, the hybrid job, compare.py."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "testbed"))
import world as W  # noqa: E402

STUDENT = ROOT / "experiments" / "testbed" / "student"


def test_world_is_a_function_of_its_seed():
    a, b, c = W.make_world(0), W.make_world(0), W.make_world(1)
    assert a == b and a != c
    assert W.pretraining_corpus(a, 0)[:50] == W.pretraining_corpus(b, 0)[:50]
    assert W.task_splits(a, 0.5, seed=2) == W.task_splits(b, 0.5, seed=2)
    names = [e.name for e in a.known + a.new]
    assert len(set(names)) == len(names) >= 200


def test_corpus_covers_every_operator_alone_and_in_pairs_and_only_known_entities():
    world = W.make_world(0)
    corpus = W.pretraining_corpus(world)
    systems = {r["system"] for r in corpus}
    assert len(W.OPS) >= 6
    for ops in W.op_sets():
        assert W.system_prompt(ops) in systems, ops
    words = {w for r in corpus for w in re.findall(r"[A-Za-z]+", r["prompt"] + " " + r["response"])}
    assert not any(e.name in words for e in world.new)  # new entities never appear in pretraining
    assert any(r["system"] == "Complete the fact." for r in corpus)  # declarative facts
    assert any("lives in" in r["prompt"] and "?" in r["prompt"] for r in corpus)  # facts given in the prompt


@pytest.mark.parametrize("alpha", [0.0, 0.25, 0.5, 0.75, 1.0])
def test_task_splits_mix_knowledge_and_format_errors_at_alpha(alpha):
    world = W.make_world(0)
    s = W.task_splits(world, alpha, seed=3)
    known = {e.name for e in world.known}
    kinds = [r["meta"]["kind"] for r in s["test"]]
    assert kinds.count("knowledge") == round(alpha * len(kinds))
    for r in s["train"] + s["eval"] + s["test"]:
        assert "system" not in r  # the task's system prompt is data.system_prompt, what the route rewrites
        name_known = any(r["prompt"].find(n) >= 0 for n in known)
        if r["meta"]["kind"] == "knowledge":
            assert not name_known and r["response"].isdigit()  # the target format is the identity on digits
        else:
            assert name_known and r["response"] == r["response"].upper() and " " not in r["response"]
    # test phrasings are used by no train or eval row; the same facts are asked in each split
    train_eval = {r["prompt"] for r in s["train"] + s["eval"]}
    assert not any(r["prompt"] in train_eval for r in s["test"])
    assert {r["meta"]["fact"] for r in s["test"]} == {r["meta"]["fact"] for r in s["train"]}
    assert all(r in s["train"] for r in s["probe"])  # the router's probe never touches eval/test
    retained = {r["prompt"] for r in s["retention"]}
    assert not retained & {r["prompt"] for r in s["train"]}


def test_hand_prompt_is_what_the_task_asks_for():
    assert W.hand_prompt() == "Answer. Use upper case. Use underscores for spaces."
    assert W.apply_ops("lowen bay", "city", W.TARGET_OPS) == "LOWEN_BAY"
    assert W.apply_ops("42", "number", W.TARGET_OPS) == "42"


def test_bundled_data_is_what_the_generator_writes(tmp_path):
    W.write_task(tmp_path, 0.5, seed=0)
    for name in ("train", "eval", "test", "probe", "retention"):
        assert (tmp_path / f"{name}.jsonl").read_text() == \
            (ROOT / "experiments" / "testbed" / "data" / f"{name}.jsonl").read_text(), name


def test_testbed_scheme_names_a_missing_student_and_how_to_build_it(monkeypatch, tmp_path):
    import neurosym.testbed as tb
    from neurosym.tiny import resolve_tiny

    monkeypatch.setattr(tb, "MODELS", {"student": Path("nowhere") / "student"})
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="pretrain.py"):
        resolve_tiny("testbed://student", tmp_path)
    with pytest.raises(FileNotFoundError, match="unknown testbed model"):
        resolve_tiny("testbed://teacher", tmp_path)
