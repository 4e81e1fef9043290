"""What a symbolic update costs (issue 20): at most three teacher calls per batch (one batched evaluation,
one optimizer step when a row is wrong in form, one batched rewrite when asked), one student generation
(none when the caller passes the answers), and a verdict per row that survives a messy teacher."""
from __future__ import annotations

import pytest

from neurosym.config.schema import RewardConfig, SymbolicConfig
from neurosym.data import Example
from neurosym.reward import make_reward
from neurosym.testing.openai_server import evaluation_rows
from neurosym.testing.scripted_teacher import Teacher
from neurosym.updates.symbolic.textgrad_step import EVAL_SYSTEM, parse_verdicts, symbolic_update
from tests.test_symbolic import KEY_ENV, q, student, teacher_for, tiny  # noqa: F401 - fixtures

BATCH = [q(1, "What is 17 + 29?", "46"), q(2, "What is 6 * 7?", "42"), q(3, "What is 9 - 4?", "5"),
         q(4, "What is 8 / 2?", "4")]


@pytest.fixture
def server(openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    openai_server.set_responder(Teacher())
    return openai_server


@pytest.fixture
def generations(tiny, monkeypatch):
    """Counts ``model.generate`` calls (each one is a batched generation over its rows)."""
    model, _ = tiny
    calls = []
    real = model.generate

    def counting(*args, **kwargs):
        calls.append(kwargs["input_ids"].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", counting)
    return calls


def update(student, server, tmp_path, verdict=None, answers=None, batch=BATCH, prompt="Answer.", **cfg):
    server.set_verdicts(verdict)
    teacher = teacher_for(server, tmp_path / "run")
    try:
        with teacher.meter() as meter:
            res = symbolic_update(prompt, batch, student, teacher, make_reward(RewardConfig(kind="exact_match")),
                                  SymbolicConfig(max_new_tokens=4, max_rewrites_per_batch=8, **cfg), set(),
                                  answers=answers)
        return res, meter.calls
    finally:
        teacher.close()


def kinds(server) -> list[str]:
    out = []
    for r in server.chat_requests:
        system = r["json"]["messages"][0]["content"]
        out.append("eval" if system == EVAL_SYSTEM else "optimizer" if "IMPROVED_VARIABLE" in system else
                   "rewrite" if "rewrite training questions" in system else "other")
    return out


@pytest.mark.parametrize("verdict", ["content", "correct"])
def test_one_call_when_no_row_is_wrong_in_form(student, server, tmp_path, generations, verdict):
    res, calls = update(student, server, tmp_path, verdict=lambda row: verdict)
    assert calls == 1 and kinds(server) == ["eval"]
    assert res.verdicts == [verdict] * len(BATCH) and res.unchanged_reason == "no_form_errors"
    assert res.new_system_prompt is None and res.rewrites == [] and res.feedback == ""
    assert generations == [len(BATCH)]  # the student answered the whole batch in one generation


def test_two_calls_without_rewrites_three_with(student, server, tmp_path, generations):
    verdict = {1: "form", 2: "content", 3: "form", 4: "correct"}
    res, calls = update(student, server, tmp_path / "a", verdict=lambda row: verdict[row["n"]],
                        rewrite_examples=False)
    assert calls == 2 and kinds(server) == ["eval", "optimizer"]
    assert res.verdicts == ["form", "content", "form", "correct"] and res.new_system_prompt is not None
    server.reset()
    res, calls = update(student, server, tmp_path / "b", verdict=lambda row: verdict[row["n"]])
    assert calls == 3 and kinds(server) == ["eval", "optimizer", "rewrite"]
    rewrite_text = server.chat_requests[-1]["json"]["messages"][-1]["content"]
    assert "<ROW 1>" in rewrite_text and "<ROW 3>" in rewrite_text  # the form rows only
    assert "<ROW 2>" not in rewrite_text and "<ROW 4>" not in rewrite_text
    assert sorted(r.parent.prompt for r in res.rewrites) == sorted([BATCH[0].prompt, BATCH[2].prompt])
    assert generations == [len(BATCH), len(BATCH)]  # one generation per update


def test_given_answers_are_not_generated_again(student, server, tmp_path, generations):
    answers = ["46", "forty-two", "5", "4.0"]
    res, calls = update(student, server, tmp_path, answers=answers, verdict=lambda row: "form")
    assert generations == [] and res.outputs == answers
    assert res.wrong == [1, 3] and res.verdicts == ["correct", "form", "correct", "form"]
    (request, *_) = server.chat_requests
    rows = evaluation_rows(request["json"]["messages"])  # only the rows the reward scores wrong are asked
    assert [(r["n"], r["answer"]) for r in rows] == [(2, "forty-two"), (4, "4.0")]
    with pytest.raises(ValueError, match="3 answers for a batch of 4 rows"):
        update(student, server, tmp_path / "b", answers=answers[:3])


def test_every_row_right_asks_nothing(student, server, tmp_path, generations):
    res, calls = update(student, server, tmp_path, answers=[ex.response for ex in BATCH])
    assert calls == 0 and res.verdicts == ["correct"] * 4 and res.unchanged_reason == "no_form_errors"


def test_a_long_prompt_and_a_big_batch_are_one_evaluation_request(student, server, tmp_path):
    prompt = ("Read the question, find the operation, compute it and reply with the number alone. " * 100)[:8000]
    batch = [q(i, f"What is {i} + {i}?", str(2 * i)) for i in range(16)]
    res, calls = update(student, server, tmp_path, prompt=prompt, batch=batch, rewrite_examples=False,
                        max_prompt_chars=20000, verdict=lambda row: "form" if row["n"] % 2 else "content")
    assert calls == 2 and kinds(server) == ["eval", "optimizer"]
    for request in server.chat_requests:  # the whole prompt, not TextGrad's elided view
        assert prompt.strip() in request["json"]["messages"][-1]["content"]
    assert len(evaluation_rows(server.chat_requests[0]["json"]["messages"])) == len(res.wrong)
    assert res.verdicts == ["form" if (i + 1) % 2 else "content" for i in range(16)]


def test_verdicts_survive_a_messy_teacher():
    text = """Sure! Here is my evaluation of each row.

    **Row 3**: FORM - the answer should be upper case.
    row 1 is Content — the student does not know this city.
    ROW #4: verdict: correct
    Row 7: form - (not a row that was asked)
    Row 3: content - a second opinion on row 3 is ignored
    Overall the student is doing fine, but row 2 needs work.
    """
    found = parse_verdicts(text, [1, 2, 3, 4])
    assert found == {3: ("form", "the answer should be upper case."),
                     1: ("content", "the student does not know this city."), 4: ("correct", "")}
    assert 2 not in found  # missing row: the update calls it unknown
    json_text = '[{"row": 2, "verdict": "Form", "feedback": "say \\"YES\\""}, {"row": 1, "verdict": "CONTENT"}]'
    assert parse_verdicts(json_text, [1, 2]) == {2: ("form", 'say \\"YES\\"'), 1: ("content", "")}
    assert parse_verdicts(None, [1]) == {} and parse_verdicts("no verdicts at all", [1]) == {}


def test_rows_without_a_verdict_are_unknown_and_a_reply_with_none_is_not_cached(student, server, tmp_path):
    server.set_responder(lambda messages: "I would rather not say." if messages[0]["content"] == EVAL_SYSTEM
                         else Teacher()(messages))
    teacher = teacher_for(server, tmp_path / "run")
    reward = make_reward(RewardConfig(kind="exact_match"))
    cfg = SymbolicConfig(max_new_tokens=4)
    res = symbolic_update("Answer.", BATCH[:2], student, teacher, reward, cfg, set(), answers=["x", "y"])
    assert res.verdicts == ["unknown", "unknown"] and res.unchanged_reason == "no_form_errors"
    symbolic_update("Answer.", BATCH[:2], student, teacher, reward, cfg, set(), answers=["x", "y"])
    assert len(server.chat_requests) == 2  # asked again, not replayed from the cache
    teacher.close()


def test_answer_batch_gives_the_per_row_answers(tiny, generations):
    from neurosym.updates.symbolic.student import make_student_engine
    model, tok = tiny
    engine = make_student_engine(model, tok, max_length=256, max_new_tokens=8)
    rows = [Example((("user", p),), "", f"t:{i}") for i, p in enumerate(
        ["Hi", "What is 2+2?", "Name a colour that is often used for the sky on a clear summer day.",
         "x" * 300])]  # different lengths (left padding) and one over max_length (truncated)
    rows.append(Example((("user", "Hi"), ("assistant", "Hello"), ("user", "What is 2+2?")), "4", "c:1"))
    for prompt in (None, "Be brief."):
        one_by_one = [engine.answer(ex, prompt) for ex in rows]
        generations.clear()
        assert engine.answer_batch(rows, prompt) == one_by_one
        # one batched generation, or two when some rows start unlike the others (the largest group that
        # starts alike shares its prefix: neurosym.model.shared_prefix)
        assert sum(generations) == len(rows) and len(generations) <= 2
    assert engine.answer_batch([], "Be brief.") == []
