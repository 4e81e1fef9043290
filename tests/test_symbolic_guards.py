"""The rewrite guard that keeps a question's facts: numbers and named entities (issue 8)."""
from __future__ import annotations

from neurosym.data import Example
from neurosym.remake import check_rewrite
from neurosym.remake.guards import missing_facts, named_entities


def ex(prompt, response):
    return Example((("user", prompt),), response, "train.jsonl:1")


def test_guard_reason_order_leak_before_lost_facts():
    parent = ex("What is 2 + 2?", "4")
    assert check_rewrite("Add 2 and 2: the sum is 4.", parent, set(), 100) == "answer_leak"
    assert check_rewrite("Add them: the sum is 4.", parent, set(), 100) == "answer_leak"


def test_guard_rewrite_must_keep_numbers_and_names():
    """A rewrite keeps the question: its numbers and named entities (issue 8)."""
    parent = ex("What is 12 plus 5?", "17")
    assert check_rewrite("Read the question slowly and do the arithmetic step by step.", parent, set(), 200) \
        == "lost_facts"
    assert missing_facts("Read the question slowly and do the arithmetic step by step.", parent.prompt) == ["12", "5"]
    assert check_rewrite("Add 12 and five. Reply with the number only.", parent, set(), 200) is None
    gsm = ex("Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. "
             "How many clips did Natalia sell altogether in April and May?", "72")
    kept = "Natalia sold 48 clips in April and half as many in May. Add the two amounts: how many in all?"
    assert check_rewrite(kept, gsm, set(), 400) is None
    assert missing_facts("She sold 48 clips in April and half as many in May. How many in all?", gsm.prompt) \
        == ["Natalia"]
    assert missing_facts("Natalia sold 1,200 clips.", "Natalia sold 1200 clips.") == []
    # a sentence-initial word is a name only if the question names it again ("Yesterday" is not)
    weng = "Weng earns $12 an hour for babysitting. Yesterday, she did 50 minutes of babysitting. How much did she earn?"
    assert named_entities(weng) == []
    assert check_rewrite("Pay is $12 per hour; she worked 50 minutes. What did she earn, in dollars?",
                         ex(weng, "10"), set(), 400) is None


def test_teacher_written_prompts_are_terminal_safe():
    """A prompt with ANSI escapes, a bell, a carriage return or a bidi override prints as visible
    escapes (issue 8: `neurosym prompts` printed them raw); newlines, tabs and text stay as they are."""
    from neurosym.observe.prompt_history import terminal_safe
    evil = "Solve it.\x1b[2J\x1b]0;pwned\x07\rAnswer:\tnumber\nonly \u202etxt.exe é"
    safe = terminal_safe(evil)
    assert not any(c in safe for c in "\x1b\x07\r\u202e")
    assert safe == "Solve it.\\x1b[2J\\x1b]0;pwned\\x07\\x0dAnswer:\tnumber\nonly \\u202etxt.exe é"
    assert terminal_safe(None) == "" and terminal_safe("plain text") == "plain text"
