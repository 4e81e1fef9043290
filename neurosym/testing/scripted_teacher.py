"""The scripted teacher used by tests and benchmarks: TextGrad calls get the OpenAI test server's
default answers; example-rewrite calls get a clearer prompt (optionally one that leaks the answer,
which the guards must refuse). Served over real HTTP by :class:`OpenAIServer`."""
from __future__ import annotations

import re

from neurosym.updates.symbolic.textgrad_step import REWRITE_SYSTEM, REWRITE_TAGS
from neurosym.testing.openai_server import default_responder


class Teacher:
    """TextGrad calls get the server's default answers; rewrite calls get a clearer prompt
    (or, with ``leak=True``, one that gives the answer away, which the guard must refuse)."""

    def __init__(self, leak: bool = False):
        self.leak = leak

    def __call__(self, messages):
        system = "\n".join(str(m.get("content")) for m in messages if m.get("role") == "system")
        user = "\n".join(str(m.get("content")) for m in messages if m.get("role") != "system")
        if system == REWRITE_SYSTEM:
            question = re.search(r"<QUESTION>(.*?)</QUESTION>", user, re.S).group(1).strip()
            hint = ""
            if self.leak:
                ref = re.search(r"<REFERENCE_ANSWER>(.*?)</REFERENCE_ANSWER>", user, re.S)
                nums = re.findall(r"\d+", ref.group(1) if ref else user)
                hint = f" (It is {nums[-1]}.)" if nums else ""
            return f"{REWRITE_TAGS[0]}Compute carefully: {question} Reply as 'The answer is N.'{hint}{REWRITE_TAGS[1]}"
        return default_responder(messages)
