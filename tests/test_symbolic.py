"""The symbolic update end to end: the tiny local model as the TextGrad student, the scripted
OpenAI-compatible server (neurosym/testing/openai_server.py) as the teacher."""
from __future__ import annotations

import os
import random
import re

import numpy as np
import pytest
import torch

from neurosym.config.schema import RewardConfig, SymbolicConfig, TeacherConfig
from neurosym.data import Example
from neurosym.remake import prompt_key
from neurosym.reward import make_reward
from neurosym.updates.symbolic.textgrad_step import EVAL_SYSTEM, REWRITE_SYSTEM, symbolic_update
from neurosym.updates.symbolic.student import make_student_engine
from neurosym.teacher import BudgetExhausted, TeacherUnavailable, make_teacher

KEY_ENV = "NEUROSYM_TEST_TEACHER_KEY"
OLD_PROMPT = "Answer the question."
NEW_PROMPT = "Solve the arithmetic problem step by step, then reply with the final number only."


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    return model, tok


@pytest.fixture
def student(tiny):
    model, tok = tiny
    model.train()
    return make_student_engine(model, tok, max_length=256, max_new_tokens=6)


class Script:
    """The teacher's answers, by kind of call; records which kinds were asked.

    ``verdicts``: the batched evaluation's verdict per question (default ``form``, with ``FEEDBACK``);
    ``rewrites``: the batched rewrite's reply per question (the text between that row's tags; a
    question missing from it gets no reply)."""

    FEEDBACK = "Incorrect: the reference answer is a bare number; the student wrote symbols."

    def __init__(self):
        self.optimizer = f"<IMPROVED_VARIABLE>{NEW_PROMPT}</IMPROVED_VARIABLE>"
        self.verdicts: dict[str, str] = {}
        self.rewrites: dict[str, str] = {}
        self.kinds: list[str] = []
        self.texts: dict[str, list[str]] = {}

    def __call__(self, messages):
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        user = messages[-1]["content"]
        rows = re.findall(r"<ROW (\d+)>\s*<QUESTION>(.*?)</QUESTION>", user, re.S)
        if "<IMPROVED_VARIABLE>" in system:
            kind, answer = "optimizer", self.optimizer
        elif "gradient (feedback) engine" in system:
            kind, answer = "backward", "Tell the student to reply with a bare number and nothing else."
        elif system == EVAL_SYSTEM:
            kind = "eval"
            answer = "\n".join(f"ROW {n}: {self.verdicts.get(q, 'form')} - {self.FEEDBACK}" for n, q in rows)
        elif system == REWRITE_SYSTEM:
            kind = "rewrite"
            answer = "\n".join(f"<REWRITTEN_PROMPT id={n}>{self.rewrites[q]}</REWRITTEN_PROMPT>"
                               for n, q in rows if q in self.rewrites)
        else:
            kind, answer = "unexpected", "?"
        self.kinds.append(kind)
        self.texts.setdefault(kind, []).append(user)
        return answer


@pytest.fixture
def script(openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    s = Script()
    openai_server.set_responder(s)
    return s


def teacher_for(server, run_dir, **kw):
    cfg = dict(model=server.model, base_url=server.base_url, api_key_env=KEY_ENV, timeout_s=5.0, max_retries=0)
    cfg.update(kw)
    return make_teacher(TeacherConfig(**cfg), run_dir)


def q(i, prompt, answer):
    return Example((("user", prompt),), answer, f"train.jsonl:{i}")


def test_prompt_updated_wrong_examples_rewritten_and_guarded(student, script, openai_server, tmp_path,
                                                             monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path)
    env_before = dict(os.environ)
    teacher = teacher_for(openai_server, tmp_path / "run")
    # one example the student gets right: its reference is exactly what the student answers
    right_prompt = "What is 5 + 5?"
    with student.session():
        said = student.generate(right_prompt, system_prompt=OLD_PROMPT)
    batch = [q(1, right_prompt, said), q(2, "What is 17 + 29?", "46"), q(3, "What is 6 * 7?", "42")]
    script.rewrites = {
        "What is 17 + 29?": "Add 17 and 29. Reply with the number only.",
        "What is 6 * 7?": "Multiply 6 by 7 (you should get 42).",
    }
    seen = {"What is 17 + 29?"}
    cfg = SymbolicConfig(max_new_tokens=6)
    res = symbolic_update(OLD_PROMPT, batch, student, teacher, make_reward(RewardConfig(kind="exact_match")),
                          cfg, seen)

    assert res.new_system_prompt == NEW_PROMPT and not res.malformed and res.prompt_rejected is None
    assert res.outputs[0] == said and len(res.outputs) == 3
    assert res.rewards_before == [1.0, 0.0, 0.0] and res.wrong == [1, 2]
    assert res.verdicts == ["correct", "form", "form"]  # the right row by the reward, the others by the teacher
    assert "bare number" in res.feedback and res.evaluations == ["", Script.FEEDBACK, Script.FEEDBACK]
    # accepted rewrite: new prompt, same reference, provenance in meta
    (rw,) = res.rewrites
    assert rw.example.prompt == "Add 17 and 29. Reply with the number only." and rw.example.response == "46"
    assert rw.parent is batch[1] and rw.example.meta["parent_source"] == "train.jsonl:2"
    assert rw.example.meta["parent_prompt"] == "What is 17 + 29?" and "Incorrect" in rw.feedback
    assert res.rejected == {"answer_leak": 1}
    assert prompt_key(rw.example.prompt) in seen
    # three teacher calls: the batched evaluation (wrong rows only), one optimizer step, the batched rewrite
    assert script.kinds == ["eval", "optimizer", "rewrite"] and len(openai_server.chat_requests) == 3
    (eval_text,) = script.texts["eval"]
    assert right_prompt not in eval_text and "<ROW 2>" in eval_text and "<ROW 3>" in eval_text
    assert OLD_PROMPT in eval_text  # the evaluation sees the prompt the answers were given under
    # the optimizer sees the constraints and the batch's feedback in batch order, with each row's context
    (opt_prompt,) = script.texts["optimizer"]
    assert "Never state the answer to any example." in opt_prompt and Script.FEEDBACK in opt_prompt
    positions = [opt_prompt.index(e.prompt) for e in batch[1:]]
    assert positions == sorted(positions) and right_prompt not in opt_prompt
    # nothing written to $HOME, the cwd (TextGrad's ./logs) or the environment
    assert not home.exists() and not (tmp_path / "logs").exists()
    assert dict(os.environ) == env_before
    teacher.close()


@pytest.mark.parametrize("answer", [
    "I looked at it and I think it is fine as it is.",   # no tags: TextGrad raises IndexError
    "<IMPROVED_VARIABLE>   </IMPROVED_VARIABLE>",         # empty: TextGrad would set an empty prompt
    "<IMPROVED_VARIABLE>Reply with the number only.",     # no end tag: TextGrad would take the rest
    "",                                                    # empty answer
])
def test_malformed_optimizer_answer_leaves_prompt_unchanged(student, script, openai_server, tmp_path, answer):
    script.optimizer = answer
    teacher = teacher_for(openai_server, tmp_path / "run")
    batch = [q(1, "What is 17 + 29?", "46")]
    cfg = SymbolicConfig(rewrite_examples=False, max_new_tokens=4)
    reward = make_reward(RewardConfig(kind="numeric_match"))
    res = symbolic_update(OLD_PROMPT, batch, student, teacher, reward, cfg, set())
    assert res.malformed and res.new_system_prompt is None and res.rewrites == []
    assert res.feedback  # the feedback was still computed
    assert len(openai_server.chat_requests) == 2  # the evaluation and the optimizer, no rewrites
    # the unusable answer is not cached: the same update again asks only the optimizer again
    res2 = symbolic_update(OLD_PROMPT, batch, student, teacher, reward, cfg, set())
    assert res2.malformed and len(openai_server.chat_requests) == 3
    assert openai_server.chat_requests[-1]["json"]["messages"][0]["content"].count("IMPROVED_VARIABLE") >= 1
    teacher.close()


def test_system_prompt_that_states_an_answer_is_refused(student, script, openai_server, tmp_path):
    script.optimizer = "<IMPROVED_VARIABLE>Reply with the number only; e.g. 17 + 29 is 46.</IMPROVED_VARIABLE>"
    teacher = teacher_for(openai_server, tmp_path / "run")
    res = symbolic_update(OLD_PROMPT, [q(1, "What is 17 + 29?", "46")], student, teacher,
                          make_reward(RewardConfig(kind="exact_match")),
                          SymbolicConfig(rewrite_examples=False, max_new_tokens=4), set())
    assert res.new_system_prompt is None and res.prompt_rejected == "answer_leak" and not res.malformed
    script.optimizer = f"<IMPROVED_VARIABLE>{'x' * 60}</IMPROVED_VARIABLE>"
    res = symbolic_update(OLD_PROMPT, [q(1, "What is 17 + 30?", "47")], student, teacher,
                          make_reward(RewardConfig(kind="exact_match")),
                          SymbolicConfig(rewrite_examples=False, max_new_tokens=4, max_prompt_chars=50), set())
    assert res.new_system_prompt is None and res.prompt_rejected == "too_long"
    teacher.close()


def test_a_teacher_that_declines_a_rewrite_is_not_a_fault(student, script, openai_server, tmp_path):
    """The rewrite prompt lets the teacher decline (NO_REWRITE, e.g. a missing fact): counted as declined,
    not malformed; a row the reply says nothing about is still malformed."""
    from neurosym.updates.symbolic.textgrad_step import REWRITE_INSTRUCTION
    assert "NO_REWRITE" in REWRITE_INSTRUCTION
    teacher = teacher_for(openai_server, tmp_path / "run")
    batch = [q(1, "What is 8 / 2?", "4"), q(2, "What is 9 - 4?", "5")]
    script.rewrites = {"What is 8 / 2?": "NO_REWRITE: the student lacks nothing a rewording could give."}
    res = symbolic_update(OLD_PROMPT, batch, student, teacher, make_reward(RewardConfig(kind="neg_loss")),
                          SymbolicConfig(max_rewrites_per_batch=4, max_new_tokens=4), set())
    assert res.rewrites == [] and res.rejected == {"declined": 1, "malformed": 1}
    teacher.close()


def test_rewrite_duplicates_malformed_and_the_per_batch_cap(student, script, openai_server, tmp_path):
    teacher = teacher_for(openai_server, tmp_path / "run")
    batch = [q(1, "What is 17 + 29?", "46"), q(2, "What is 6 * 7?", "42"), q(3, "What is 9 - 4?", "5"),
             q(4, "What is 8 / 2?", "4"), q(5, "What is 3 + 3?", "6")]
    script.rewrites = {
        "What is 17 + 29?": "  what IS 17 +\n29? ",                # = parent
        "What is 6 * 7?": "Multiply six by seven. Number only.",   # seen
        "What is 9 - 4?": "What is 3 + 3?",                        # another batch prompt
        # "What is 8 / 2?": no reply for its row
        "What is 3 + 3?": "Add 3 and 3.",                          # over the cap: never asked
    }
    seen = {prompt_key("Multiply six by seven.  Number only.")}
    cfg = SymbolicConfig(max_rewrites_per_batch=4, max_new_tokens=4)
    # neg_loss gives no verdict from text: every example is a candidate, no rewards measured
    res = symbolic_update(OLD_PROMPT, batch, student, teacher, make_reward(RewardConfig(kind="neg_loss")), cfg, seen)
    assert res.wrong == [0, 1, 2, 3, 4] and res.rewards_before == [] and res.verdicts == ["form"] * 5
    assert res.rewrites == [] and res.rejected == {"duplicate": 3, "malformed": 1}
    assert script.kinds.count("rewrite") == 1  # one request for the four rows under the cap
    (rewrite_text,) = script.texts["rewrite"]
    assert "<ROW 4>" in rewrite_text and "<ROW 5>" not in rewrite_text
    assert len(seen) == 1
    # rewrite_examples: false asks for no rewrite at all
    script.kinds.clear()
    res = symbolic_update(OLD_PROMPT, batch[:1], student, teacher, make_reward(RewardConfig(kind="neg_loss")),
                          SymbolicConfig(rewrite_examples=False, max_new_tokens=4), seen)
    assert "rewrite" not in script.kinds and res.rewrites == []
    teacher.close()


def test_teacher_failure_propagates(student, script, openai_server, tmp_path):
    teacher = teacher_for(openai_server, tmp_path / "run")
    openai_server.inject("500", times=3)
    batch = [q(1, "What is 17 + 29?", "46")]
    reward = make_reward(RewardConfig(kind="exact_match"))
    with pytest.raises(TeacherUnavailable):
        symbolic_update(OLD_PROMPT, batch, student, teacher, reward, SymbolicConfig(max_new_tokens=4), set())
    teacher.close()
    broke = teacher_for(openai_server, tmp_path / "run2", budget_usd=0.0, price_per_1k_tokens={"input": 1.0})
    with pytest.raises(BudgetExhausted):
        symbolic_update(OLD_PROMPT, batch, student, broke, reward, SymbolicConfig(max_new_tokens=4), set())
    broke.close()


def test_student_generation_leaves_rng_and_train_mode_alone(tiny):
    model, tok = tiny
    model.train()
    model.model.layers[0].eval()  # a submodule deliberately in eval mode stays so
    seen = {}
    real_generate = model.generate

    def generate(*args, **kwargs):  # a generate that consumes every RNG and records the context
        seen.update(training=model.training, grad=torch.is_grad_enabled(), ids=kwargs["input_ids"][0].tolist(),
                    max_new=kwargs["max_new_tokens"])
        torch.rand(3), random.random(), np.random.rand()
        return real_generate(*args, **kwargs)

    model.generate = generate
    try:
        student = make_student_engine(model, tok, max_length=256, max_new_tokens=5)
        torch.manual_seed(123), random.seed(123), np.random.seed(123)
        states = (torch.get_rng_state(), random.getstate(), np.random.get_state()[1].copy())
        first = student.generate("What is 2+2?", system_prompt="Be brief.")
        second = student("What is 2+2?", system_prompt="Be brief.")
        assert first == second and isinstance(first, str)
        assert torch.equal(torch.get_rng_state(), states[0]) and random.getstate() == states[1]
        assert np.array_equal(np.random.get_state()[1], states[2])
        assert seen["training"] is False and seen["grad"] is False
        assert "[SYS]Be brief." in tok.decode(seen["ids"]) and "[USER]What is 2+2?" in tok.decode(seen["ids"])
        assert model.training and not model.model.layers[0].training and model.model.layers[1].training
        # without a system prompt none is rendered (not TextGrad's default one)
        student.generate("What is 2+2?")
        assert "[SYS]" not in tok.decode(seen["ids"])
        # in a session, a known prompt is answered in its example's context (earlier turns)
        chat = Example((("user", "Hi"), ("assistant", "Hello"), ("user", "What is 2+2?")), "4", "c:1")
        assert seen["max_new"] == 5
        with student.session([chat], max_new_tokens=2):
            student.generate("What is 2+2?")
            assert "[USER]Hi\n[BOT]Hello" in tok.decode(seen["ids"]) and seen["max_new"] == 2
            assert len(student.answer(chat, "Be brief.")) <= 2 and seen["max_new"] == 2
            assert "[SYS]Be brief.\n[USER]Hi" in tok.decode(seen["ids"])
        student.generate("What is 2+2?")
        assert "[USER]Hi" not in tok.decode(seen["ids"]) and seen["max_new"] == 5
    finally:
        del model.generate
        model.train()
