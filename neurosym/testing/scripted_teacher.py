"""The scripted teacher used by tests and benchmarks: TextGrad calls and the batched evaluation get the
OpenAI test server's default answers (every wrong row ``form``); the batched example-rewrite call gets a
clearer prompt per row (optionally one that leaks the answer, which the guards must refuse). Served over
real HTTP by :class:`OpenAIServer`."""
from __future__ import annotations

import re

from neurosym.updates.symbolic.textgrad_step import REWRITE_SYSTEM, REWRITE_TAG
from neurosym.testing.openai_server import default_responder

_REWRITE_ROW = re.compile(r"<ROW (\d+)>\s*<QUESTION>(.*?)</QUESTION>\s*<REFERENCE_ANSWER>(.*?)</REFERENCE_ANSWER>", re.S)


class Teacher:
    """TextGrad calls get the server's default answers; rewrite calls get a clearer prompt per row
    (or, with ``leak=True``, one that gives the answer away, which the guard must refuse)."""

    def __init__(self, leak: bool = False):
        self.leak = leak

    def __call__(self, messages):
        system = "\n".join(str(m.get("content")) for m in messages if m.get("role") == "system")
        user = "\n".join(str(m.get("content")) for m in messages if m.get("role") != "system")
        if system == REWRITE_SYSTEM:
            replies = []
            for n, question, reference in _REWRITE_ROW.findall(user):
                nums = re.findall(r"\d+", reference)
                hint = f" (It is {nums[-1]}.)" if self.leak and nums else ""
                replies.append(f"<{REWRITE_TAG} id={n}>Compute carefully: {question.strip()} "
                               f"Reply as 'The answer is N.'{hint}</{REWRITE_TAG}>")
            return "\n".join(replies)
        return default_responder(messages)
