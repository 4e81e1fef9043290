"""What TextGrad shows the teacher, where its log goes, and why a prompt stays unchanged (issue 10)."""
from __future__ import annotations

import json
import logging
import re

import pytest

from neurosym.config.schema import RewardConfig, SymbolicConfig
from neurosym.reward import make_reward
from neurosym.updates.symbolic.textgrad_step import UNCHANGED_REASONS, symbolic_update
from tests.test_symbolic import Script, q, script, student, teacher_for, tiny  # noqa: F401 - fixtures

SIXTY_WORDS = " ".join([
    "You are a careful arithmetic tutor for short word problems about money, time and quantities.",
    "First restate the quantities given in the question, then decide which operation each sentence implies,",
    "then carry out each operation on its own line, double-check every carry and borrow,",
    "and finally reply with the final number alone, without units, words or any trailing punctuation at all."])


class EditsWhatItSees(Script):
    """An optimizer that edits exactly what it was shown: the text between <VARIABLE> tags, plus
    one sentence. Records every span it was shown (optimizer and backward calls)."""

    ADDED = "Never guess."

    def __init__(self):
        super().__init__()
        self.shown: list[str] = []

    def __call__(self, messages):
        user = messages[-1]["content"]
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        if "<IMPROVED_VARIABLE>" in system:
            span = re.search(r"<VARIABLE>(.*?)</VARIABLE>", user, re.S).group(1).strip()
            self.shown.append(span)
            self.kinds.append("optimizer")
            return f"<IMPROVED_VARIABLE>{span} {self.ADDED}</IMPROVED_VARIABLE>"
        return super().__call__(messages)


@pytest.fixture
def editing(openai_server, monkeypatch):
    from tests.test_symbolic import KEY_ENV
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    s = EditsWhatItSees()
    openai_server.set_responder(s)
    return s


def run(student, server, tmp_path, prompt, **cfg):
    batch = [q(1, "What is 17 + 29?", "46"), q(2, "What is 6 * 7?", "42")]
    teacher = teacher_for(server, tmp_path / "run")
    try:
        return symbolic_update(prompt, batch, student, teacher, make_reward(RewardConfig(kind="exact_match")),
                               SymbolicConfig(max_new_tokens=4, rewrite_examples=False, **cfg), set())
    finally:
        teacher.close()


def test_optimizer_and_backward_see_the_whole_60_word_prompt(student, editing, openai_server, tmp_path):
    assert len(SIXTY_WORDS.split()) >= 60
    res = run(student, openai_server, tmp_path, SIXTY_WORDS)
    assert editing.shown == [SIXTY_WORDS]                       # not "first 10 words (...) last 10 words"
    assert res.new_system_prompt == f"{SIXTY_WORDS} {EditsWhatItSees.ADDED}" and res.unchanged_reason is None
    (evaluation,) = editing.texts["eval"]
    assert SIXTY_WORDS in evaluation  # the evaluation judges the answers under the whole prompt too
    assert "backward" not in editing.texts  # the evaluation's feedback is the gradient: no backward call
    assert not any("(...)" in t for texts in editing.texts.values() for t in texts)


def test_a_proposal_made_from_an_elided_prompt_is_refused(student, editing, openai_server, tmp_path, monkeypatch):
    """With TextGrad's own Variable (what the code did before), the teacher only sees
    'first 10 words (...) last 10 words' and its proposal loses the middle: refused as elided."""
    import neurosym.teacher.tg as tgmod
    monkeypatch.setattr(tgmod, "full_variable_class", lambda: tgmod.load_textgrad().Variable)
    res = run(student, openai_server, tmp_path, SIXTY_WORDS)
    assert "(...)" in editing.shown[0] and len(editing.shown[0].split()) == 21
    assert res.new_system_prompt is None and res.prompt_rejected == "elided" and res.unchanged_reason == "elided"


@pytest.mark.parametrize("answer,reason,extra", [
    ("no tags at all", "malformed", {}),
    ("<IMPROVED_VARIABLE>Answer the question.</IMPROVED_VARIABLE>", "identical", {}),
    ("<IMPROVED_VARIABLE>" + "Be precise. " * 40 + "</IMPROVED_VARIABLE>", "too_long", {"max_prompt_chars": 200}),
    ("<IMPROVED_VARIABLE>Answer the question. Hint: 17 + 29 is 46.</IMPROVED_VARIABLE>", "answer_leak", {}),
    ("<IMPROVED_VARIABLE>Answer the question (...) number only.</IMPROVED_VARIABLE>", "elided", {}),
])
def test_every_unchanged_prompt_says_why(student, script, openai_server, tmp_path, answer, reason, extra):
    script.optimizer = answer
    res = run(student, openai_server, tmp_path, "Answer the question.", **extra)
    assert res.new_system_prompt is None and res.unchanged_reason == reason and reason in UNCHANGED_REASONS


def test_textgrad_logs_to_the_run_not_the_console(student, script, openai_server, tmp_path):
    import io
    root = logging.getLogger()
    stream = io.StringIO()
    console = logging.StreamHandler(stream)   # what `neurosym train` has (logging.basicConfig)
    root.addHandler(console)
    try:
        res = run(student, openai_server, tmp_path, "Answer the question.")
    finally:
        root.removeHandler(console)
    assert res.new_system_prompt is not None
    assert "TextualGradientDescent" not in stream.getvalue() and "LLMCall" not in stream.getvalue()
    lines = (tmp_path / "run" / "teacher" / "textgrad.jsonl").read_text().splitlines()
    msgs = [json.loads(x)["msg"] for x in lines]  # the evaluation (an LLM call) and the optimizer's prompt,
    assert any("LLMCall" in m for m in msgs) and any("TextualGradientDescent" in m for m in msgs)  # answer
