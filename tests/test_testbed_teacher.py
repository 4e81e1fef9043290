"""teacher.provider: python (cache, metering, budget, errors, TextGrad path) and the testbed's simulated
teacher answering TextGrad's real prompts."""
from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from neurosym.config.schema import ConfigError, SymbolicConfig, TeacherConfig, load_config
from neurosym.data import Example
from neurosym.reward import ExactMatch
from neurosym.updates.symbolic.textgrad_step import (EVAL_FORMAT, EVAL_SYSTEM, REWRITE_SYSTEM, parse_verdicts,
                                                     symbolic_update)
from neurosym.teacher import (BudgetExhausted, TeacherConfigError, TeacherUnavailable, load_textgrad,
                              make_teacher)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "experiments" / "testbed"))
import teacher as sim  # noqa: E402
import world as W  # noqa: E402

SIM = "experiments.testbed.teacher:simulated"


@pytest.fixture
def echo_module(tmp_path, monkeypatch):
    """A module ``echo_teacher`` on sys.path whose callables record what they are sent."""
    (tmp_path / "echo_teacher.py").write_text(textwrap.dedent("""
        CALLS = []
        def reply(messages, *, model, temperature, max_tokens):
            CALLS.append((messages, model, temperature, max_tokens))
            return "echo: " + messages[-1]["content"]
        def with_tokens(messages, **kw):
            return ("ok", 11, 3)
        def broken(messages, **kw):
            raise RuntimeError("inference server said no")
        def not_text(messages, **kw):
            return {"text": "x"}
        NOT_CALLABLE = 3
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    sys.modules.pop("echo_teacher", None)
    import echo_teacher
    echo_teacher.CALLS.clear()
    return echo_teacher


def cfg(callable_, **kw) -> TeacherConfig:
    return TeacherConfig(provider="python", callable=callable_, model=kw.pop("model", "in-house-7b"), **kw)


def test_python_provider_cache_metering_and_params(echo_module, tmp_path):
    t = make_teacher(cfg("echo_teacher:reply", temperature=0.3, max_tokens=77), tmp_path / "run")
    assert type(t).__name__ == "PythonTeacher"
    assert t("hello there", system_prompt="be brief") == "echo: hello there"
    messages, model, temperature, max_tokens = echo_module.CALLS[0]
    assert messages == [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello there"}]
    assert (model, temperature, max_tokens) == ("in-house-7b", 0.3, 77)
    t("hello there", system_prompt="be brief")  # same request: from the cache, the callable is not called
    t("hello there", system_prompt="be brief", max_tokens=5)  # different params: a new call
    assert len(echo_module.CALLS) == 2 and echo_module.CALLS[1][3] == 5
    u = t.usage.state_dict()
    assert u["calls"] == 2 and u["cache_hits"] == 1
    assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0  # estimated at ~4 chars a token
    assert (tmp_path / "run" / "teacher").is_dir()
    t.close()
    t2 = make_teacher(cfg("echo_teacher:reply", temperature=0.3, max_tokens=77), tmp_path / "run")
    t2("hello there", system_prompt="be brief")  # a resumed run replays from the on-disk cache
    assert len(echo_module.CALLS) == 2
    t2.close()


def test_python_provider_budget_and_reported_tokens(echo_module, tmp_path):
    t = make_teacher(cfg("echo_teacher:with_tokens", price_per_1k_tokens={"input": 1.0, "output": 1.0},
                         budget_usd=0.02), tmp_path / "run")
    with t.meter() as m:
        t("a")
    assert (m.prompt_tokens, m.completion_tokens) == (11, 3)
    assert m.cost_usd == pytest.approx(0.014)
    t("b")  # 0.028 spent: the cap is reached
    with pytest.raises(BudgetExhausted):
        t("c")
    t.close()


@pytest.mark.parametrize("fn,kind", [("broken", "callable_error"), ("not_text", "malformed_response")])
def test_python_provider_failures_become_teacher_unavailable(echo_module, tmp_path, fn, kind):
    t = make_teacher(cfg(f"echo_teacher:{fn}"), tmp_path / "run")
    with pytest.raises(TeacherUnavailable) as exc:
        t("question")
    assert exc.value.kind == kind and "echo_teacher" in str(exc.value)
    assert t.usage.failures == {kind: 1}
    t.close()


@pytest.mark.parametrize("spec,needle", [
    ("no_such_module_xyz:f", "cannot import module 'no_such_module_xyz'"),
    ("echo_teacher:missing", "has no attribute 'missing'"),
    ("echo_teacher:NOT_CALLABLE", "is not callable"),
])
def test_python_provider_bad_callable_says_what_and_how(echo_module, tmp_path, spec, needle):
    with pytest.raises(TeacherConfigError, match=needle):
        make_teacher(cfg(spec), tmp_path / "run")


def test_config_requires_callable_for_python(tmp_path):
    path = tmp_path / "c.yaml"
    (tmp_path / "t.jsonl").write_text(json.dumps({"prompt": "q", "response": "a"}) + "\n")
    path.write_text("model: {name_or_path: tiny://llama}\ndata: {train: t.jsonl}\ntrain: {max_steps: 1}\n"
                    "teacher:\n  provider: python\n  model: x\n")
    with pytest.raises(ConfigError, match=r"c.yaml:4: `teacher`: teacher.provider: python needs teacher.callable"):
        load_config(path)
    path.write_text(path.read_text() + f"  callable: {SIM}\n")
    assert load_config(path).teacher.callable == SIM


# ---- the simulated teacher -------------------------------------------------------------------------

@pytest.mark.parametrize("answer,reference,expected", [
    ("LOWEN_BAY", "LOWEN_BAY", ("correct", [], [])),
    ("Lowen Bay", "LOWEN_BAY", ("format", ["upper", "underscore"], [])),
    ("teal", "TEAL", ("format", ["upper"], [])),
    ("[sky blue]", "SKY_BLUE", ("format", ["upper", "underscore"], ["bracket"])),
    ("yab newol", "LOWEN_BAY", ("format", ["upper", "underscore"], ["reverse"])),
    ("lowen-bay.", "LOWEN_BAY", ("format", ["upper", "underscore"], [])),  # punctuation, separators
    ("42", "33", ("knowledge", [], [])),
    ("Karsk", "LOWEN_BAY", ("knowledge", [], [])),
    ("Lowen Bay", "yaB newoL", ("format", ["reverse"], [])),  # the backwards world: the reference is reversed
    ("yaB newoL", "Lowen Bay", ("format", [], ["reverse"])),
    ("sea green", "neerg aes", ("format", ["reverse"], [])),  # case does not tell: not asked, so missing
    ("24", "42", ("format", [], ["reverse"])),
])
def test_diagnosis(answer, reference, expected):
    assert sim.diagnose(answer, reference) == expected


def test_a_reversal_the_prompt_already_asks_for_is_not_asked_for_again():
    assert sim.diagnose("neerg aes", "sea green", frozenset({"reverse"})) == ("format", [], ["reverse"])
    evaluation = sim.evaluate(sim.EVAL_START, "<SYSTEM_PROMPT>Answer. Write it backwards.</SYSTEM_PROMPT>\n"
                              "<ROW 1>\n<QUESTION>What colour does Brai like?</QUESTION>\n<REFERENCE_ANSWER>sea green"
                              "</REFERENCE_ANSWER>\n<STUDENT_ANSWER>neerg aes</STUDENT_ANSWER>\n</ROW 1>", 0, 0.0)
    assert 'Unwanted instruction: "Write it backwards."' in evaluation and "Missing" not in evaluation


class WorldStudent:
    """A stand-in student that knows the known entities and follows the instructions in its system prompt
    (what pretraining aims for); about new entities it says 10."""

    def __init__(self, world):
        EngineLM = load_textgrad().engine.EngineLM
        self.__class__ = type("WorldStudentEngine", (WorldStudent, EngineLM), {})
        self.facts = {}
        for e in world.known:
            for a in W.ATTRIBUTES:
                for q in W.QUESTIONS[a]:
                    self.facts[q.format(n=e.name)] = (e.value(a), a)
        self.model_string = "world-student"
        self.system_prompt = None

    def generate(self, prompt, system_prompt=None, **kw):
        value, attr = self.facts.get(prompt, ("10", "number"))
        ops = {op for op, phrase in W.INSTRUCTION.items() if phrase in (system_prompt or "")}
        return W.apply_ops(value, attr, ops)

    def __call__(self, prompt, **kw):
        return self.generate(prompt, **kw)


def task_batch(alpha, n=8):
    world = W.make_world(0)
    rows = W.task_splits(world, alpha)["train"][:n]
    return world, [Example((("user", r["prompt"]),), r["response"], f"train.jsonl:{i + 1}") for i, r in enumerate(rows)]


def run_update(tmp_path, alpha, model="simulated", record=None):
    world, batch = task_batch(alpha)
    teacher = make_teacher(cfg(SIM, model=model), tmp_path / "run")
    if record is not None:  # see every request exactly as the callable receives it
        inner = teacher.fn
        teacher.fn = lambda messages, **kw: record.append(messages) or inner(messages, **kw)
        teacher._accepts = None
    result = symbolic_update(W.BASE_PROMPT, batch, WorldStudent(world), teacher, ExactMatch(),
                             SymbolicConfig(max_rewrites_per_batch=8), set())
    return result, batch, teacher


def test_simulated_teacher_fixes_format_errors_through_textgrad(tmp_path):
    sent = []
    result, batch, teacher = run_update(tmp_path, alpha=0.0, record=sent)
    assert result.new_system_prompt == W.hand_prompt() == "Answer. Use upper case. Use underscores for spaces."
    assert result.verdicts == ["form"] * len(batch)  # alpha 0: every error is one of format
    assert all("Missing instruction" in e for i, e in enumerate(result.evaluations) if i in result.wrong)
    # three requests: the batched evaluation, TextGrad's optimizer (TGD), the batched rewrite
    assert len(sent) == 3 and sent[0][0]["content"] == EVAL_SYSTEM
    assert sent[1][0]["content"].startswith("You are part of an optimization system that improves text")
    assert sent[2][0]["content"] == REWRITE_SYSTEM
    assert all(ex.prompt in sent[0][1]["content"] for ex in batch)
    assert result.rewrites and all(r.example.prompt.endswith("Use upper case.") or
                                   r.example.prompt.endswith("Use underscores for spaces.")
                                   for r in result.rewrites)
    assert teacher.usage.calls == len(sent)
    teacher.close()


def test_simulated_teacher_says_needs_new_knowledge_and_keeps_prompt(tmp_path):
    result, batch, teacher = run_update(tmp_path, alpha=1.0)
    assert result.new_system_prompt is None and not result.malformed  # nothing to add: prompt kept as is
    assert result.verdicts == ["content"] * len(batch) and result.unchanged_reason == "no_form_errors"
    assert all(sim.KNOWLEDGE in e for e in result.evaluations)
    assert not result.rewrites and result.rejected == {}  # no form row: nothing to rewrite, nothing asked
    assert teacher.usage.calls == 1  # the evaluation alone
    teacher.close()


def test_simulated_rewrite_declines_a_knowledge_row_and_skips_one_it_cannot_fix():
    user = "\n\n".join(f"<ROW {n}>\n<QUESTION>{q}</QUESTION>\n<REFERENCE_ANSWER>X</REFERENCE_ANSWER>\n"
                       f"<STUDENT_ANSWER>y</STUDENT_ANSWER>\n<EVALUATION>{e}</EVALUATION>\n</ROW {n}>"
                       for n, q, e in [(1, "Colour of A?", sim.MISSING.format("Use upper case.")),
                                       (2, "City of B?", sim.KNOWLEDGE), (3, "City of C?", "hmm")])
    reply = sim.simulated([{"role": "system", "content": REWRITE_SYSTEM}, {"role": "user", "content": user}])
    assert "<REWRITTEN_PROMPT id=1>Colour of A? Use upper case.</REWRITTEN_PROMPT>" in reply
    assert "<REWRITTEN_PROMPT id=2>NO_REWRITE" in reply and "id=3" not in reply


def test_simulated_teacher_noise_gives_wrong_or_no_diagnoses():
    rows = "\n\n".join(f"<ROW {i + 1}>\n<QUESTION>Where is {i}?</QUESTION>\n<REFERENCE_ANSWER>RIVER {i}"
                       f"</REFERENCE_ANSWER>\n<STUDENT_ANSWER>river {i}</STUDENT_ANSWER>\n</ROW {i + 1}>"
                       for i in range(400))

    def ask(model, text=rows):
        reply = sim.simulated([{"role": "system", "content": EVAL_SYSTEM},
                               {"role": "user", "content": EVAL_FORMAT.format(prompt="Answer.", rows=text)}],
                              model=model)
        return reply.splitlines()
    clean, noisy = ask("simulated"), ask("simulated?noise=0.3&seed=1")
    assert len(clean) == len(noisy) == 400
    assert all(c.startswith(f"ROW {i + 1}: form") and 'Missing instruction: "Use upper case."' in c
               for i, c in enumerate(clean))
    # a row's noise depends on that row alone, not on the rest of the batch
    assert ask("simulated?noise=0.3&seed=1", rows.split("\n\n")[7])[0].split(": ", 1)[1] == \
        noisy[7].split(": ", 1)[1]
    bad = [n for n, c in zip(noisy, clean) if n != c]
    assert 0.24 < len(bad) / 400 < 0.36  # about 30% of evaluations are wrong or give no diagnosis
    assert any("cannot tell" in b for b in bad) and any("Missing instruction" in b for b in bad)
    assert all('"Use upper case."' not in b for b in bad)  # a wrong edit, never the right one
    assert noisy == ask("simulated?noise=0.3&seed=1")  # replayable
    assert noisy != ask("simulated?noise=0.3&seed=2")  # the seed matters
    verdicts = parse_verdicts("\n".join(noisy), range(1, 401))
    assert 0.08 < (400 - len(verdicts)) / 400 < 0.22  # no diagnosis: about half the noisy rows are unknown


def test_teacher_never_sees_eval_or_test_answers(tmp_path):
    """Audit: nothing built from the eval/test splits reaches the teacher, a new prompt or a rewrite."""
    sent = []
    world = W.make_world(0)
    splits = W.task_splits(world, 0.5)
    result, batch, teacher = run_update(tmp_path, alpha=0.5, record=sent)
    train_answers = {r["response"] for r in splits["train"]}
    held_out_questions = {r["prompt"] for s in ("eval", "test") for r in splits[s]}
    held_out_answers = {r["response"] for s in ("eval", "test") for r in splits[s]} - train_answers
    texts = [m["content"] for msgs in sent for m in msgs]
    texts += [result.new_system_prompt or ""] + [r.example.prompt for r in result.rewrites]
    for text in texts:
        assert not any(q in text for q in held_out_questions)
        assert not any(a in text for a in held_out_answers)
    assert sent  # the audit looked at something
    teacher.close()
