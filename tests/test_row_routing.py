"""Per-row routing: the bandit router partitions a batch by row kind, closes a spent route with
exponential backoff and reopens it on a shift; refined rows never take a task row's slot."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from classifiers import BanditRouter, BatchStats, Decision, PartResult, RowStats, make_router
from classifiers.base import ROW_KINDS
from neurosym.config.schema import RouterConfig
from neurosym.data import Example
from neurosym.run.batches import BatchSource
from neurosym.run.inspect import RowVerdicts, gain_by_kind, normalise, row_stats
from tests.test_router import signals

FORM = RowStats(loss=1.0, correct=False, form_match=True, len_ratio=1.0)
CONTENT = RowStats(loss=3.0, correct=False, form_match=False, len_ratio=0.4)
RIGHT = RowStats(loss=0.1, correct=True, form_match=True, len_ratio=1.0)


def stats(rows, mean_loss=2.0) -> BatchStats:
    return BatchStats(mean_loss=mean_loss, prompts=tuple(f"q{i}" for i in range(len(rows))), rows=tuple(rows))


def bandit(**kw) -> BanditRouter:
    cfg = RouterConfig(kind="bandit", epsilon_min=0.0, **kw)
    router = make_router(cfg, seed=0, routes=("lora", "symbolic"))
    assert isinstance(router, BanditRouter)
    return router


def test_row_kind_is_generic_and_the_teacher_verdict_wins():
    assert normalise(" Quill_On! ") == normalise("QUILLON") == "quillon"
    assert (RIGHT.kind, FORM.kind, CONTENT.kind, RowStats().kind) == ("correct", "form", "content", "unknown")
    assert RowStats(correct=False, form_match=True, verdict="content").kind == "content"

    class Exact:
        needs_generation = True

        def __call__(self, out, ref):
            return float(out.strip() == ref.strip())

    rows = [Example((("user", "a?"),), "NEW_YORK"), Example((("user", "b?"),), "PARIS"),
            Example((("user", "c?"),), "ROME")]
    verdicts = RowVerdicts()
    verdicts.note(["c?"], ["form"])
    got = row_stats(rows, ["new york", "Lyon", "ROME"], [1.0, 2.0, 0.1], Exact(), verdicts)
    assert [r.kind for r in got] == ["form", "content", "correct"]
    assert got[1].len_ratio == pytest.approx(4 / 5)
    assert gain_by_kind(["form", "form", "content"], [0, 0, 0], [1, 0, 0.5]) == {"form": 0.5, "content": 0.5}


def test_the_bandit_partitions_by_kind_tries_each_arm_and_keeps_correct_rows_on_lora():
    router = bandit()
    d = router.decide(signals(), stats([FORM, CONTENT, RIGHT, FORM]))
    assert d.parts is not None and list(d.parts)[-1] == "lora"  # the default route runs last
    assert sorted(i for ix in d.parts.values() for i in ix) == [0, 1, 2, 3]  # every row in one part
    assert 2 in d.parts["lora"]                                               # nothing to fix
    assert d.parts["symbolic"] == [0, 1, 3]  # untried arms: the non-default route first
    assert d.route == "symbolic" and d.partition(4) == {r: ix for r, ix in d.parts.items() if ix}
    assert Decision.from_dict(json.loads(json.dumps(d.as_dict()))).parts == d.parts
    assert router.needs_gain and d.explored  # this decision tries arms: its gain is measured, whatever the schedule


def test_the_bandit_asks_for_a_measurement_only_when_it_tries_an_arm():
    """Once every arm its rows need was tried, a decision by value waits for the gain schedule (a kind
    seen long ago, whose share decays but never reaches 0, asked for a probe at every step)."""
    router = bandit()
    d = router.decide(signals(), stats([FORM, CONTENT]))                     # symbolic on both: untried
    assert router.needs_gain
    router.learn_parts(d, {"symbolic": PartResult(gain_by_kind={"form": 1.0, "content": 0.0}, cost=2.0, rows=2)})
    d = router.decide(signals(), stats([FORM, CONTENT]))                     # lora on both: untried
    assert router.needs_gain and d.parts == {"lora": [0, 1]}
    router.learn_parts(d, {"lora": PartResult(gain_by_kind={"form": 0.1, "content": 0.5}, cost=1.0, rows=2)})
    for _ in range(5):
        d = router.decide(signals(), stats([CONTENT, RIGHT]))
        assert not router.needs_gain and not d.explored and "(value)" in d.reason
        assert router.shares["form"] > 0


def test_the_bandit_learns_which_route_pays_for_which_kind():
    router = bandit(discount=0.95)
    rng = np.random.default_rng(1)
    for _ in range(60):
        d = router.decide(signals(), stats([FORM, FORM, CONTENT, CONTENT]))
        results = {}
        for route, ix in d.partition(4).items():
            kinds = {["form", "form", "content", "content"][i] for i in ix}
            pays = {"form": route == "symbolic", "content": route == "lora"}
            results[route] = PartResult(gain_by_kind={k: float(pays[k]) + rng.normal(0, 0.05) for k in kinds},
                                        cost=1.0, rows=len(ix))
        router.learn_parts(d, results)
    tail = [router.decide(signals(), stats([FORM, FORM, CONTENT, CONTENT])) for _ in range(10)]
    assert all(d.parts.get("symbolic") == [0, 1] and d.parts["lora"] == [2, 3] for d in tail)


def _saturate(router, n):
    d = router.decide(signals(), stats([FORM, FORM, RIGHT, RIGHT]))
    router.learn_parts(d, {"symbolic": PartResult(gain_by_kind={"form": 0.0}, cost=3.0, saturated="identical",
                                                  rows=2),
                           "lora": PartResult(gain_by_kind={"correct": 0.0}, cost=0.5, rows=2)})
    return d


def test_a_spent_route_closes_with_exponential_backoff_and_reopens_on_a_shift():
    router = bandit(backoff=2, backoff_max=8)
    # the first symbolic update changed nothing (identical prompt): closed for 2 decisions
    assert _saturate(router, 1).parts.get("symbolic") == [0, 1]
    closed = [router.decide(signals(), stats([FORM, FORM, RIGHT, RIGHT])) for _ in range(2)]
    assert all("symbolic" not in d.partition(4) for d in closed) and "spent (identical)" in closed[0].reason
    assert router.state_dict()["closed"]["symbolic"]["level"] == 1
    spans = []
    spent = {"symbolic": PartResult(gain_by_kind={"form": 0.0}, cost=3.0, saturated="identical", rows=2)}
    for _ in range(2, 6):  # each saturated result in a row doubles the wait, up to backoff_max
        router.learn_parts(router.decide(signals(), stats([FORM, FORM, RIGHT, RIGHT])), spent)
        spans.append(router.closed["symbolic"]["until"] - router.n_decisions)
    assert spans == [4, 8, 8, 8]
    router.learn_parts(router.decide(signals(), stats([FORM, FORM, RIGHT, RIGHT])), {"symbolic": PartResult(gain_by_kind={"form": 1.0})})
    assert router.level["symbolic"] == 0  # a result that changed something resets the backoff
    # a shift: the share of form rows jumps (a new target format): the route reopens at once
    _saturate(router, 6)
    assert "symbolic" in router.closed
    d = router.decide(signals(), stats([FORM, FORM, FORM, FORM]))
    assert "symbolic" not in router.closed and d.parts.get("symbolic"), d.reason
    assert router.last_shift.startswith("form rows")
    # a loss shift reopens too
    for _ in range(5):
        router.decide(signals(), stats([RIGHT] * 4, mean_loss=1.0))
    _saturate(router, 7)
    router.decide(signals(), stats([RIGHT] * 4, mean_loss=9.0))
    assert "symbolic" not in router.closed and router.last_shift.startswith("loss")


def test_rows_are_inspected_only_while_another_route_is_open_and_every_4th_decision_when_all_are_closed():
    from classifiers.bandit import ROW_CHECK_EVERY

    router = bandit(backoff=16, backoff_max=16)
    assert router.wants_rows and not BatchStats().rows  # open: every batch is inspected
    _saturate(router, 1)                                # closed for 16 decisions
    wanted = []
    for _ in range(12):
        wanted.append(router.wants_rows)
        same = stats([FORM, FORM, RIGHT, RIGHT])          # the batch as it was when the route closed
        d = router.decide(signals(), same if wanted[-1] else BatchStats(prompts=("a", "b", "c", "d")))
        assert d.partition(4) == {"lora": [0, 1, 2, 3]}  # uninspected rows take the default route
    assert [i + 1 for i, w in enumerate(wanted) if w] == [n for n in range(1, 13) if n % ROW_CHECK_EVERY == 0]
    # an inspected batch still sees a shift: the share of form rows rose, the route reopens
    assert "symbolic" in router.closed
    while not router.wants_rows:
        router.decide(signals(), BatchStats(prompts=("a", "b", "c", "d")))
    d = router.decide(signals(), stats([FORM, FORM, FORM, FORM]))
    assert "symbolic" not in router.closed and d.parts.get("symbolic") and router.wants_rows


def test_an_open_route_stops_inspecting_once_no_row_it_could_take_is_seen_and_resumes_when_one_is():
    from classifiers.bandit import ROW_CHECK_EVERY

    router = bandit()
    d = router.decide(signals(), stats([FORM, FORM, CONTENT, RIGHT]))  # tries symbolic on form and content
    router.learn_parts(d, {"symbolic": PartResult(gain_by_kind={"form": 1.0, "content": 0.0}, cost=2.0, rows=3),
                           "lora": PartResult(gain_by_kind={"correct": 0.0}, cost=1.0, rows=1)})
    d = router.decide(signals(), stats([FORM, CONTENT, RIGHT, RIGHT]))  # lora's turn on both
    router.learn_parts(d, {"lora": PartResult(gain_by_kind={"form": 0.1, "content": 0.5, "correct": 0.0},
                                              cost=1.0, rows=4)})
    assert "symbolic" not in router.closed and router.wants_rows  # form rows were just seen
    wanted = []
    for _ in range(12):                                  # the prompt fixed the form: content and right rows only
        wanted.append(router.wants_rows)
        batch = stats([CONTENT, RIGHT, RIGHT, RIGHT]) if wanted[-1] else BatchStats(prompts=("a", "b", "c", "d"))
        d = router.decide(signals(), batch)
        assert "symbolic" not in d.partition(4)         # content rows stay on LoRA; uninspected ones too
        if not wanted[-1]:
            assert "not inspected" in d.reason and "symbolic" not in router.closed  # open, only not looking
    assert wanted[:3] == [True, True, True] and not all(wanted[6:])
    assert all(n % ROW_CHECK_EVERY == 0 for n, w in enumerate(wanted, start=2) if w and n > 8)
    while not router.wants_rows:
        router.decide(signals(), BatchStats(prompts=("a", "b", "c", "d")))
    d = router.decide(signals(), stats([FORM, FORM, RIGHT, RIGHT]))  # form rows again, at an inspection
    assert d.parts.get("symbolic") == [0, 1] and router.wants_rows


def test_bandit_state_round_trips_through_json():
    router = bandit()
    for _ in range(5):
        _saturate(router, 1)
    again = bandit()
    again.load_state_dict(json.loads(json.dumps(router.state_dict())))
    rows = stats([FORM, CONTENT, RIGHT, FORM])
    assert [again.decide(signals(), rows).parts for _ in range(6)] == [router.decide(signals(), rows).parts
                                                                      for _ in range(6)]


def _rows(n, prefix="task"):
    return [Example((("user", f"{prefix} {i}?"),), f"A{i}", f"train.jsonl:{i + 1}") for i in range(n)]


def _refined(parents):
    return [Example((("user", f"rewritten {p.prompt}"),), p.response, f"remake:{j + 1}",
                    {"parent_source": p.source, "parent_prompt": p.prompt}) for j, p in enumerate(parents)]


@pytest.mark.parametrize("placement", ["add", "replace_parent"])
def test_a_refined_row_never_displaces_a_task_row(placement):
    task = _rows(12)
    plain = BatchSource(task, seed=4, per_step=4, mix_ratio=0.5)
    mixed = BatchSource(task, seed=4, per_step=4, mix_ratio=0.5, placement=placement)
    refined = _refined(task[:3])
    mixed.add_refined(refined)
    for _ in range(6):  # two epochs
        want, got = plain.next()[0], mixed.next()[0]
        if placement == "add":  # every task row of the plain run, plus refined rows on top
            assert got[:4] == want and len(got) == 6 and all(ex.source.startswith("remake:") for ex in got[4:])
        else:  # each slot holds its own task row, in its newest rewritten form where there is one
            parents = [ex.meta.get("parent_source", ex.source) for ex in got]
            assert parents == [ex.source for ex in want]
            assert all(ex.prompt.startswith("rewritten") == (ex.meta.get("parent_source") is not None) for ex in got)
    state = json.loads(json.dumps(mixed.state_dict()))
    again = BatchSource(task, seed=4, per_step=4, mix_ratio=0.5, placement=placement)
    again.load_state_dict(state, refined)
    assert [again.next()[0] for _ in range(3)] == [mixed.next()[0] for _ in range(3)]


def test_unknown_placement_is_refused():
    with pytest.raises(ValueError, match="placement"):
        BatchSource(_rows(4), seed=0, per_step=2, mix_ratio=0.0, placement="swap")


def test_every_row_kind_is_a_bandit_arm():
    router = bandit()
    assert {k.split("/")[0] for k in router.arms} == set(ROW_KINDS)


def test_the_random_row_control_partitions_without_reading_the_rows():
    router = make_router(RouterConfig(kind="random_rows", random_p=0.25), seed=3, routes=("lora", "symbolic"))
    assert not router.per_row and not router.learns_from_gain  # no inspection, no probe: no extra cost
    decisions = [router.decide(signals(), BatchStats(prompts=tuple("abcdefgh"))) for _ in range(200)]
    share = sum(len(d.parts.get("symbolic", [])) for d in decisions) / (8 * 200)
    assert 0.2 < share < 0.3
    assert all(sorted(i for ix in d.parts.values() for i in ix) == list(range(8)) for d in decisions)
    assert all(list(d.parts)[-1] == "lora" for d in decisions if len(d.parts) == 2)


def test_the_inspector_takes_a_reproduced_answer_from_the_loss_pass_and_generates_only_the_rest(monkeypatch):
    """A row whose reference is the argmax at every token (EOS included) is the greedy answer: the
    inspector reads it from the reference-loss pass; the answers are the ones generating every row gives."""
    import sys
    from types import SimpleNamespace

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from neurosym.data.render import Renderer
    from neurosym.run import inspect as I
    from neurosym.run.gain import GainProbe

    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "experiments" / "testbed"))
    import world as W

    student = root / "experiments" / "testbed" / "student"
    model, tok = AutoModelForCausalLM.from_pretrained(student), AutoTokenizer.from_pretrained(student)
    split = W.task_splits(W.make_world(0), 0.5)["test"][:24]
    rows = [Example((("user", r["prompt"]),), r["response"]) for r in split]
    rows.append(Example((("user", split[0]["prompt"]),), "X" * 40))  # longer than the generation budget

    class Exact:
        needs_generation = True

        def __call__(self, out, ref):
            return float(out.strip() == ref.strip())

    ctx = SimpleNamespace(model=model, tokenizer=tok, renderer=Renderer(tok, 128, W.hand_prompt()), reward=Exact(),
                          cfg=SimpleNamespace(train=SimpleNamespace(batch_size=8)),
                          runtime=SimpleNamespace(dtype=None))
    probe = GainProbe(rows, ctx, 16, by_loss=True)
    inspector = I.Inspector(rows, ctx, probe.row_forward, 16, True, RowVerdicts())
    every = inspector.answers(rows)
    generated = []
    real = I.answer_examples
    monkeypatch.setattr(I, "answer_examples", lambda m, t, r, exs, *a: generated.extend(exs) or real(m, t, r, exs, *a))
    answers, losses = inspector.answers_and_losses(rows)
    assert answers == every
    assert losses == pytest.approx(probe.row_losses(rows))
    right = [i for i, (a, ex) in enumerate(zip(every, rows)) if a == ex.response]
    assert len(right) >= 6                                 # the student gets these right under the hand prompt
    assert len(generated) == len(rows) - len(right)        # ... and only the others were generated
    assert inspector.reproduced(rows[right[0]]) == rows[right[0]].response
    assert inspector.reproduced(rows[-1]) is None          # a reference past the generation budget: generated
    stats = inspector.batch(rows[:8], with_losses=True)
    assert [r.correct for r in stats.rows] == [a == ex.response for a, ex in zip(every[:8], rows[:8])]
