"""Refined examples: the guards, the SQLite store (transactions, resume) and the dataset export."""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap

import pytest

from neurosym.config.schema import DataConfig, DataFields
from neurosym.data import Example, load_examples
from neurosym.remake import RemakeStore, check_rewrite, export_refined, prompt_key
from neurosym.remake.guards import final_number, leaks_answer
from neurosym.updates.symbolic.textgrad_step import Rewrite


def ex(prompt, response, source="train.jsonl:1", system=None, history=()):
    msgs = ((("system", system),) if system else ()) + tuple(history) + (("user", prompt),)
    return Example(msgs, response, source)


def rewrite(parent: Example, new_prompt: str, feedback: str = "be explicit") -> Rewrite:
    new = parent.with_prompt(new_prompt, "", parent_source=parent.source, parent_prompt=parent.prompt)
    return Rewrite(new, parent, feedback)


# -- guards -----------------------------------------------------------------------------------------

def test_guard_accepts_a_clean_rewrite():
    parent = ex("What is 17 + 29?", "46")
    assert check_rewrite("Add 17 and 29. Reply with the number only.", parent, set(), 200) is None


@pytest.mark.parametrize("new", ["", "   \n\t"])
def test_guard_empty(new):
    assert check_rewrite(new, ex("q?", "1"), set(), 100) == "empty"
    assert check_rewrite(None, ex("q?", "1"), set(), 100) == "empty"


def test_guard_too_long():
    parent = ex("What is 2 + 3?", "5")
    fifty = "Add 2 and 3, then reply with the sum only.".ljust(50, ".")
    assert check_rewrite(fifty + ".", parent, set(), 50) == "too_long"
    assert check_rewrite(fifty, parent, set(), 50) is None


def test_guard_duplicate_of_parent_and_seen_after_normalisation():
    parent = ex("What is 17 + 29?", "46")
    assert check_rewrite("  what IS 17 +   29? ", parent, set(), 200) == "duplicate"
    seen_raw = {"Add 17 and 29.\nNumber only."}
    assert check_rewrite("add 17 and 29. NUMBER ONLY.", parent, seen_raw, 200) == "duplicate"
    seen_keys = {prompt_key("Add 17 and 29. Number only.")}
    assert check_rewrite("Add 17 and 29.  Number only.", parent, seen_keys, 200) == "duplicate"
    assert check_rewrite("Add 17 and 29; number only.", parent, seen_keys, 200) is None


def test_guard_answer_leak_word_boundaries_and_final_number():
    parent = ex("What is 17 + 29?", "17 + 29 = 46.\n#### 46")
    assert final_number(parent.response) == 46
    assert check_rewrite("Add 17 and 29 (the sum is 46).", parent, set(), 200) == "answer_leak"
    assert check_rewrite("Add 17 and 29; the result is less than 146.", parent, set(), 200) is None
    assert check_rewrite("Add 17 and 29; check it against 4.6 and 460.", parent, set(), 200) is None
    assert check_rewrite("Answer 46.0 is wrong? Add 17 and 29.", parent, set(), 200) == "answer_leak"
    # a number already in the original prompt is no leak
    same = ex("Is 46 the sum of 17 and 29? Answer with the sum.", "46")
    assert check_rewrite("Compute 17 + 29 and compare with 46. Reply with the sum.", same, set(), 200) is None


def test_guard_answer_leak_of_a_text_answer():
    parent = ex("What is the capital of France?", "Paris")
    assert check_rewrite("Name the capital city of France (it is paris).", parent, set(), 200) == "answer_leak"
    assert check_rewrite("Name the capital city of France, e.g. not Parisian suburbs.", parent, set(), 200) is None
    assert not leaks_answer("the answer, Paris", "Paris", original="Paris or Lyon?")


def test_guard_reason_order():
    parent = ex("What is 2 + 2?", "4")
    assert check_rewrite("x" * 30, parent, set(), 10) == "too_long"  # checked before duplicate/leak
    assert check_rewrite("what is 2 + 2?", parent, set(), 100) == "duplicate"


# -- store ------------------------------------------------------------------------------------------

def test_store_add_examples_position_and_provenance(tmp_path):
    store = RemakeStore(tmp_path / "remake.sqlite")
    assert store.position() == 0 and store.count() == 0 and store.examples() == []
    p1 = ex("What is 17 + 29?", "46", "data.jsonl:3", system="Be brief.")
    p2 = ex("And times 2?", "92", "data.jsonl:4", history=(("user", "17+29?"), ("assistant", "46")))
    added = store.add([rewrite(p1, "Add 17 and 29. Number only."), rewrite(p2, "Double it. Number only.")],
                      step=7, prompt_version=3, teacher_model="teacher-model")
    assert [e.source for e in added] == ["remake:1", "remake:2"]
    assert added[0].prompt == "Add 17 and 29. Number only." and added[0].response == "46"
    assert added[0].system == "Be brief."
    assert added[1].messages[:2] == (("user", "17+29?"), ("assistant", "46"))
    assert added[0].meta["parent_source"] == "data.jsonl:3" and added[0].meta["step"] == 7
    assert store.position() == 2 and store.count() == 2 and len(store) == 2
    # read back (also from a fresh connection): same examples, same provenance
    store.close()
    store = RemakeStore(tmp_path / "remake.sqlite")
    back = store.examples()
    assert back == added  # messages, response and source
    assert back[0].meta["parent_prompt"] == "What is 17 + 29?" and back[0].meta["prompt_version"] == 3
    assert back[0].meta["teacher_model"] == "teacher-model" and back[0].meta["feedback"] == "be explicit"
    row = store.rows()[0]
    assert row["system"] == "Be brief." and json.loads(row["messages_json"])[0] == ["system", "Be brief."]
    assert isinstance(row["created"], float) and row["created"] > 1.6e9
    assert store.prompts() == ["Add 17 and 29. Number only.", "Double it. Number only."]
    store.close()


def test_store_truncate_after_rewinds_ids_for_resume(tmp_path):
    with RemakeStore(tmp_path / "r.sqlite") as store:
        parent = ex("What is 2 + 3?", "5")
        store.add([rewrite(parent, "Add 2 and 3.")], step=1)
        checkpoint = store.position()
        store.add([rewrite(parent, "Sum 2 and 3."), rewrite(parent, "2 plus 3?")], step=2)
        assert store.position() == 3
        assert store.truncate_after(checkpoint) == 2
        assert store.position() == 1 and [e.prompt for e in store.examples()] == ["Add 2 and 3."]
        # the resumed run writes the ids an uninterrupted run would have written
        again = store.add([rewrite(parent, "Sum 2 and 3.")], step=2)
        assert again[0].source == "remake:2"
        assert store.truncate_after(5) == 0 and store.count() == 2
        with pytest.raises(ValueError):
            store.truncate_after(-1)


def test_store_exception_inside_transaction_leaves_it_unchanged(tmp_path):
    store = RemakeStore(tmp_path / "r.sqlite")
    parent = ex("What is 2 + 3?", "5")
    store.add([rewrite(parent, "Add 2 and 3.")], step=1)
    bad = Rewrite(Example((("user", "fine prompt"),), 5, ""), parent, "x")  # response not a string
    with pytest.raises(TypeError):
        store.add([rewrite(parent, "Sum 2 and 3."), bad], step=2)  # the first insert is rolled back
    assert store.count() == 1 and store.position() == 1
    assert [e.prompt for e in store.examples()] == ["Add 2 and 3."]
    assert store.add([rewrite(parent, "Sum 2 and 3.")], step=2)[0].source == "remake:2"
    store.close()


def test_store_survives_a_crash_mid_write(tmp_path):
    db = tmp_path / "r.sqlite"
    with RemakeStore(db) as store:
        store.add([rewrite(ex("What is 2 + 3?", "5"), "Add 2 and 3.")], step=1)
    script = textwrap.dedent(f"""
        import os
        from neurosym.data import Example
        from neurosym.remake.store import RemakeStore
        from neurosym.updates.symbolic.textgrad_step import Rewrite
        store = RemakeStore({str(db)!r})
        real = RemakeStore._insert
        def insert_then_die(self, cur, *a, **k):
            real(self, cur, *a, **k)
            os._exit(3)  # the process dies with the transaction open
        RemakeStore._insert = insert_then_die
        p = Example((("user", "q"),), "1", "f:1")
        store.add([Rewrite(p.with_prompt("new q", ""), p, "fb")], step=2)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr
    with RemakeStore(db) as store:
        assert store.count() == 1 and [e.prompt for e in store.examples()] == ["Add 2 and 3."]
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"


# -- export -----------------------------------------------------------------------------------------

@pytest.fixture
def filled(tmp_path):
    train = [ex("What is 17 + 29?", "46", "train.jsonl:1"), ex("What is 2 + 3?", "5", "train.jsonl:2", system="Be brief.")]
    store = RemakeStore(tmp_path / "r.sqlite")
    store.add([rewrite(train[0], "Add 17 and 29. Number only."), rewrite(train[1], "Add 2 and 3. Number only.")],
              step=4, prompt_version=2, teacher_model="tm")
    yield store, train
    store.close()


@pytest.mark.parametrize("fmt,name", [("jsonl", "out.jsonl"), ("parquet", "out.parquet"), ("hf", "out_hf")])
def test_export_round_trips_through_the_loader(filled, tmp_path, fmt, name):
    store, train = filled
    out = export_refined(store, train, tmp_path / "export" / name, fmt=fmt)
    assert out.exists()
    loaded, report = load_examples(out, DataConfig(train=str(out)))
    refined = store.examples()
    assert [(e.messages, e.response) for e in loaded] == [(e.messages, e.response) for e in refined]
    assert report.skipped == 0 and loaded[1].system == "Be brief." and loaded[0].system is None
    if fmt == "jsonl":
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert rows[0]["source"] == "remake:1" and rows[0]["parent_source"] == "train.jsonl:1"
        assert rows[0]["parent_prompt"] == "What is 17 + 29?" and rows[0]["step"] == 4
        assert rows[0]["prompt_version"] == 2 and rows[0]["teacher_model"] == "tm"
        assert rows[0]["feedback"] == "be explicit" and rows[0]["created"] > 1.6e9
        assert [p.name for p in out.parent.iterdir()] == [name]  # no temporary file left behind
    else:
        import datasets
        ds = datasets.Dataset.from_parquet(str(out)) if fmt == "parquet" else datasets.load_from_disk(str(out))
        assert ds["source"] == ["remake:1", "remake:2"] and ds["step"] == [4, 4]


def test_export_only_all_includes_originals_with_null_provenance(filled, tmp_path):
    store, train = filled
    out = export_refined(store, train, tmp_path / "all.jsonl", only="all")
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["source"] for r in rows] == ["train.jsonl:1", "train.jsonl:2", "remake:1", "remake:2"]
    assert all(rows[0][k] is None for k in ("parent_source", "parent_prompt", "step", "feedback", "created"))
    loaded, _ = load_examples(out, DataConfig(train=str(out)))
    assert [(e.messages, e.response) for e in loaded[:2]] == [(e.messages, e.response) for e in train]
    refined_only = export_refined(store, train, tmp_path / "refined.jsonl")
    assert len(refined_only.read_text().splitlines()) == 2
    with pytest.raises(ValueError):
        export_refined(store, train, tmp_path / "x.jsonl", only="some")
    with pytest.raises(ValueError):
        export_refined(store, train, tmp_path / "x.csv", fmt="csv")


def test_export_multi_turn_uses_messages_for_every_row(tmp_path):
    chat = ex("And times 2?", "92", "c.jsonl:1", system="Be brief.", history=(("user", "17+29?"), ("assistant", "46")))
    single = ex("What is 2 + 3?", "5", "c.jsonl:2")
    with RemakeStore(tmp_path / "r.sqlite") as store:
        store.add([rewrite(chat, "Double 46. Number only.")], step=1)
        for fmt, name in (("jsonl", "m.jsonl"), ("parquet", "m.parquet")):
            out = export_refined(store, [chat, single], tmp_path / name, fmt=fmt, only="all")
            loaded, _ = load_examples(out, DataConfig(train=str(out)))
            assert [(e.messages, e.response) for e in loaded] == \
                [(e.messages, e.response) for e in [chat, single, *store.examples()]]
        first = json.loads((tmp_path / "m.jsonl").read_text().splitlines()[1])
        assert "messages" in first and "prompt" not in first


def test_export_with_the_datasets_own_field_names(filled, tmp_path):
    store, train = filled
    fields = DataFields(prompt="question", response="answer")
    out = export_refined(store, train, tmp_path / "f.jsonl", fields=fields)
    row = json.loads(out.read_text().splitlines()[0])
    assert row["question"] == "Add 17 and 29. Number only." and row["answer"] == "46"
    loaded, _ = load_examples(out, DataConfig(train=str(out), fields=fields))
    assert [e.prompt for e in loaded] == [e.prompt for e in store.examples()]
