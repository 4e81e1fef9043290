"""The symbolic update: TextGrad rewrites the task's system prompt on the rows the student gets wrong
in form, and the teacher rewrites those rows' prompts into new training examples.

One update for a batch of ``k`` examples takes at most three teacher calls, all on the calling
thread, one after the other (so ``with teacher.meter() as m: symbolic_update(...)`` measures it):

0. the student's answers under the current system prompt: ``answers`` when the caller has them
   (the router's features, an asynchronous submission), else one batched greedy generation
   (:meth:`~neurosym.updates.symbolic.student.StudentEngine.answer_batch`); the ``reward`` marks
   the rows it still gets wrong (``reward < 1``; every row with ``neg_loss``);
1. **one** batched evaluation: a ``textgrad.autograd.FormattedLLMCall`` over the system prompt (our
   full-view ``Variable``, ``requires_grad=True``) and the wrong rows, whose answer (the batched
   loss) is one verdict per row, ``correct | form | content`` with a line of feedback
   (:func:`parse_verdicts`: any order, prose around, rows missing; a row without a parseable verdict
   is ``unknown``). Rows the reward already scores 1 are ``correct`` without asking;
2. no ``form`` row: nothing a prompt can fix (``unchanged_reason="no_form_errors"``), no further
   call. Otherwise **one** feedback + optimizer pass: ``loss.backward()`` gives the system prompt one
   textual gradient per ``form`` row, the teacher's feedback on that row in its context (question,
   answer, reference), without a teacher call (the evaluation already asked for it: TextGrad's own
   backward through an LLM call would ask the teacher to say it again), then
   ``textgrad.TGD(..., constraints=symbolic.constraints).step()``: one call;
3. when ``rewrite_examples``: **one** batched rewrite of the ``form`` rows' prompts (at most
   ``max_rewrites_per_batch``), each checked by :func:`~neurosym.remake.guards.check_rewrite`.

So 1 call when no row is wrong in form, 2 without rewrites, 3 with (fewer on cache hits). Teacher
failures (``TeacherUnavailable``, ``BudgetExhausted``, ...) propagate: the caller falls back to a
LoRA step. A malformed optimizer answer (no ``<IMPROVED_VARIABLE>...</IMPROVED_VARIABLE>``, or
nothing between the tags) leaves the prompt unchanged with ``malformed=True`` (and is dropped from
the teacher's cache so it is not replayed; so is an evaluation without a single parseable verdict).
A new system prompt longer than ``symbolic.max_prompt_chars``, stating a batch example's answer, or
still carrying TextGrad's elision marker ``(...)`` is refused (``prompt_rejected``). Whenever the
prompt is left unchanged, ``SymbolicResult.unchanged_reason`` says why.

TextGrad 0.1.8 details handled here:

* TextGrad shows a variable to the optimizer and to the backward prompts through
  ``Variable.get_short_value()``, which elides everything but the first and last 10 words of a value
  over 20 words. The system prompt is a :func:`~neurosym.teacher.tg.full_variable_class` variable,
  shown whole; a proposal that still carries the marker ``(...)`` is refused (``elided``).
* ``TGD.step()`` raises ``IndexError`` when the start tag is missing, but accepts an answer with no
  end tag (everything after the start tag) or with nothing between the tags (an empty prompt);
  both are treated as malformed here and the old prompt is kept.
* A variable's gradients are a ``set`` of objects hashed by id, so the optimizer prompt would list
  the feedback in a different order each run (and miss the response cache on resume); the prompt
  variable's gradients are kept in batch order.
* ``import textgrad`` opens ``./logs/<time>.jsonl`` in the working directory; TextGrad is loaded
  through :func:`neurosym.teacher.tg.load_textgrad`, which avoids that (the teacher engine routes
  the log to ``<run_dir>/teacher/textgrad.jsonl``). Nothing here writes ``os.environ`` or ``$HOME``;
  TextGrad's global backward engine is never set (``backward(engine=teacher)`` is used).
"""
from __future__ import annotations

import re
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Optional

from neurosym.data.examples import Example
from neurosym.remake.guards import check_rewrite, final_number, leaks_answer, prompt_key

PROMPT_ROLE = ("system prompt of the student language model for this task: it is given before every question "
               "of the task, so it must help with all of them (instructions, strategy, answer format)")
QUESTION_ROLE = "question from the training set, asked to the student language model"
ANSWER_ROLE = "the student language model's answer to the question"

ROWS_ROLE = "the batch's questions, reference answers and the student's answers, one row each"
LOSS_ROLE = "the teacher's verdict on each row of the batch (correct, form or content) with its feedback"

VERDICTS = ("correct", "form", "content")   # what the evaluation asks for
UNKNOWN = "unknown"                          # a row the teacher gave no parseable verdict for
EVAL_SYSTEM = (
    "You evaluate a student language model's answers to a batch of questions, each against its reference "
    "answer. For every row give exactly one verdict:\n"
    "- correct: the student's answer is the reference answer;\n"
    "- form: the answer has the reference's content (the same value, fact or result) in another form "
    "(case, punctuation, separators, spacing, wrapping, extra or missing words around it): an instruction "
    "in the system prompt can fix it;\n"
    "- content: the content is wrong or missing (a fact the student lacks, a wrong result): no instruction "
    "in the system prompt can supply it.\n"
    "Reply with one line per row, in row order, and nothing else:\n"
    "ROW <number>: <correct|form|content> - <feedback>\n"
    "where the feedback of a form row says what the system prompt must ask for so that the answer takes "
    "the reference answer's form, in one sentence; for other rows a few words. Be concise and critical."
)
EVAL_FORMAT = ("The student model answered under this system prompt:\n\n<SYSTEM_PROMPT>{prompt}</SYSTEM_PROMPT>"
               "\n\n{rows}")
ROW_FORMAT = ("<ROW {n}>\n<QUESTION>{question}</QUESTION>\n<REFERENCE_ANSWER>{reference}</REFERENCE_ANSWER>\n"
              "<STUDENT_ANSWER>{answer}</STUDENT_ANSWER>\n</ROW {n}>")
CONTEXT_FORMAT = ("<QUESTION>{question}</QUESTION>\n<STUDENT_ANSWER>{answer}</STUDENT_ANSWER>\n"
                  "<REFERENCE_ANSWER>{reference}</REFERENCE_ANSWER>")
FORM_FEEDBACK = "The answer has the reference's content in another form: the system prompt should ask for that form."

REWRITE_TAG = "REWRITTEN_PROMPT"
REWRITE_TAGS = (f"<{REWRITE_TAG}>", f"</{REWRITE_TAG}>")  # the tags of a one-row reply without its number
REWRITE_SYSTEM = (
    "You rewrite training questions for a small student language model so that it learns to answer them. "
    "You never reveal, hint at or compute the answer in a rewritten question."
)
REWRITE_DECLINED = "NO_REWRITE"  # the teacher's answer when rewording cannot help: a decline, not a fault
REWRITE_INSTRUCTION = (
    "The student model answered each question below in the wrong form. Rewrite each question so the student "
    "is more likely to answer it as the reference answer is written:\n"
    "- keep exactly the same task, the same facts and numbers, and the same correct answer;\n"
    "- make the instruction clearer and state the expected answer format explicitly (the format of the "
    "reference answer);\n"
    "- NEVER state the answer, or an intermediate result that gives it away.\n"
    "Each row's REFERENCE_ANSWER is for your understanding only: it must not appear in the rewritten "
    "question.\n\n{rows}\n\n"
    "Reply, for every row, with its rewritten question between <" + REWRITE_TAG + " id=N> and </"
    + REWRITE_TAG + "> tags, N being the row's number. If no rewording can help a row (e.g. the student "
    "lacks a fact the question does not give), put " + REWRITE_DECLINED + " and why between its tags."
)
REWRITE_ROW_FORMAT = ("<ROW {n}>\n<QUESTION>{question}</QUESTION>\n<REFERENCE_ANSWER>{reference}</REFERENCE_ANSWER>\n"
                      "<STUDENT_ANSWER>{output}</STUDENT_ANSWER>\n<EVALUATION>{evaluation}</EVALUATION>\n</ROW {n}>")


@dataclass
class Rewrite:
    """A refined example: ``example`` (new prompt, same response; ``meta`` has ``parent_source`` and
    ``parent_prompt``; ``source`` is assigned by the store) made from ``parent``."""
    example: Example
    parent: Example
    feedback: str


@dataclass
class SymbolicResult:
    """What one symbolic update did."""
    new_system_prompt: Optional[str]          # None when unchanged (malformed, refused or identical)
    rewrites: list[Rewrite] = field(default_factory=list)
    rejected: dict[str, int] = field(default_factory=dict)  # rewrite refusals by reason (+ "malformed", "declined")
    feedback: str = ""                         # the textual gradient on the system prompt
    malformed: bool = False                    # the optimizer's answer could not be used
    outputs: list[str] = field(default_factory=list)        # the student's answers, in batch order
    wrong: list[int] = field(default_factory=list)          # indices the student got wrong
    rewards_before: list[float] = field(default_factory=list)  # per example; [] for neg_loss
    evaluations: list[str] = field(default_factory=list)    # the teacher's feedback on each row ("" if none)
    verdicts: list[str] = field(default_factory=list)       # per row: correct, form, content or unknown
    prompt_rejected: Optional[str] = None      # why a well-formed new prompt was refused (elided, too_long, answer_leak)
    unchanged_reason: Optional[str] = None     # None when changed; else no_form_errors, malformed, a refusal, identical


class _OrderedGradients(set):
    """A ``set`` that iterates in insertion order (TextGrad iterates a variable's gradients)."""

    def __init__(self) -> None:
        super().__init__()
        self._order: list = []

    def add(self, item: Any) -> None:
        if item not in self:
            self._order.append(item)
        super().add(item)

    def __iter__(self) -> Iterator[Any]:
        return iter([x for x in self._order if set.__contains__(self, x)])


class _RecordingEngine:
    """Forwards to ``engine`` and keeps the last (prompt, system_prompt, answer) for inspection."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.model_string = getattr(engine, "model_string", "teacher")
        self.last: Optional[tuple] = None

    def generate(self, prompt: Any, system_prompt: Optional[str] = None, **kwargs: Any) -> str:
        text = self.engine(prompt, system_prompt=system_prompt, **kwargs)
        self.last = (prompt, system_prompt, text)
        return text

    __call__ = generate


def _between(text: Any, start: str, end: str) -> Optional[str]:
    """The stripped text between the first ``start`` tag and the next ``end`` tag, or None."""
    if not isinstance(text, str):
        return None
    m = re.search(re.escape(start) + r"(.*?)" + re.escape(end), text, re.S)
    return m.group(1).strip() if m else None


def _forget(teacher: Any, prompt: Any, system_prompt: Optional[str]) -> None:
    """Drop an unusable answer from the teacher's cache, when it has one."""
    forget = getattr(teacher, "forget", None)
    if callable(forget):
        try:
            forget(prompt, system_prompt=system_prompt)
        except Exception:  # pragma: no cover - best effort
            pass


def _count(d: dict, key: str) -> None:
    d[key] = d.get(key, 0) + 1


class _SeenView:
    """The caller's ``seen`` plus this batch's prompts and accepted rewrites, without copying."""

    def __init__(self, seen: Iterable[str], extra: set):
        self.seen, self.extra = seen, extra

    def __contains__(self, key: str) -> bool:
        return key in self.extra or key in self.seen

    def __iter__(self) -> Iterator[str]:
        yield from list(self.extra)
        yield from list(self.seen)  # a snapshot: another thread may add to it


ELISION_MARKER = "(...)"  # what Variable.get_short_value puts in place of a long value's middle
UNCHANGED_REASONS = ("no_form_errors", "malformed", "elided", "too_long", "answer_leak", "identical")


def refuse_system_prompt(new: str, old: str, batch: list[Example], max_chars: int) -> Optional[str]:
    """Why a new system prompt is refused (``elided``, ``too_long``, ``answer_leak``), or None.

    ``elided``: it carries TextGrad's elision marker ``(...)`` that ``old`` did not have, i.e. it
    was rewritten from an elided view and lost the middle of the prompt.

    A leak is a batch example's reference (or final number) in ``new`` but in neither ``old`` nor the
    example's question. Single-digit final numbers are not checked (prompts number their steps), and
    a reference that is only such a digit is not checked at all.
    """
    if ELISION_MARKER in new and ELISION_MARKER not in old:
        return "elided"
    if len(new) > max_chars:
        return "too_long"
    for ex in batch:
        number = final_number(ex.response)
        small = number is not None and number < 10 and float(number).is_integer()
        if small and re.fullmatch(r"[-+]?\d[\s.]*", ex.response.strip()):
            continue
        if leaks_answer(new, ex.response, old + "\n" + ex.prompt, check_number=not small):
            return "answer_leak"
    return None


_VERDICT_LINE = re.compile(r"\brow\s*(?:#|no\.?|number)?\s*(\d+)\b[^\w\n]*(?:(?:verdict|is)\b[^\w\n]*)*"
                           r"(correct|form|content)\b[^\w\n]*(.*)", re.I)
_VERDICT_JSON = re.compile(r'"row"\s*:\s*"?(\d+)"?\s*,\s*"verdict"\s*:\s*"(correct|form|content)"'
                           r'(?:\s*,\s*"feedback"\s*:\s*"((?:[^"\\]|\\.)*)")?', re.I)


def parse_verdicts(text: Any, rows: Iterable[int]) -> dict[int, tuple[str, str]]:
    """``{row number: (verdict, feedback)}`` for the ``rows`` the teacher's ``text`` gives a verdict for.

    Read line by line (``ROW 3: form - ...``, in any order and case, with markdown or prose around),
    or as JSON objects (``{"row": 3, "verdict": "form", "feedback": "..."}``); the first verdict
    for a row wins; rows not asked for are ignored; rows without one are simply missing."""
    wanted, found = set(rows), {}
    if not isinstance(text, str):
        return found
    for n, verdict, feedback in _VERDICT_JSON.findall(text):
        if int(n) in wanted:
            found.setdefault(int(n), (verdict.lower(), feedback.strip()))
    for line in text.replace("*", "").replace("`", "").splitlines():
        m = _VERDICT_LINE.search(line)
        if m and int(m.group(1)) in wanted:
            found.setdefault(int(m.group(1)), (m.group(2).lower(), m.group(3).strip()))
    return found


def _student_answers(student: Any, batch: list[Example], system_prompt: Optional[str], cfg: Any,
                     answers: Optional[Iterable[str]]) -> list[str]:
    """The caller's ``answers`` (checked against the batch), else one batched generation (an engine
    without ``answer_batch``, e.g. a stand-in, answers row by row in a session)."""
    if answers is not None:
        answers = [str(a) for a in answers]
        if len(answers) != len(batch):
            raise ValueError(f"symbolic_update got {len(answers)} answers for a batch of {len(batch)} rows: "
                             "pass one student answer per row, in batch order (or none to generate them)")
        return answers
    if hasattr(student, "answer_batch"):
        return list(student.answer_batch(batch, system_prompt, max_new_tokens=cfg.max_new_tokens))
    session = student.session(batch, cfg.max_new_tokens) if hasattr(student, "session") else nullcontext()
    with session:
        return [str(student.generate(ex.prompt, system_prompt=system_prompt)) for ex in batch]


def symbolic_update(system_prompt: Optional[str], batch: list[Example], student: Any, teacher: Any, reward: Any,
                    cfg: Any, seen_prompts: set, answers: Optional[Iterable[str]] = None) -> SymbolicResult:
    """Improve ``system_prompt`` on ``batch`` with TextGrad, in at most three teacher calls (see the
    module docstring), and rewrite the prompts of the rows the student gets wrong in form.

    :param student: a :class:`~neurosym.updates.symbolic.student.StudentEngine` over the model being trained.
    :param teacher: a TextGrad engine (:func:`neurosym.teacher.make_teacher`).
    :param reward: :func:`neurosym.reward.make_reward` result; decides which answers are wrong.
    :param cfg: the ``symbolic`` config section (:class:`~neurosym.config.schema.SymbolicConfig`).
    :param seen_prompts: prompts already in the data (raw or :func:`~neurosym.remake.guards.prompt_key`
        normalised), for the duplicate guard; the keys of accepted rewrites are added to it.
    :param answers: the student's answers to ``batch`` under ``system_prompt``, in batch order, when
        the caller already has them (then the student is not run); else generated here.
    """
    from neurosym.teacher.tg import full_variable_class, load_textgrad

    if not batch:
        raise ValueError("symbolic_update needs at least one example")
    tg = load_textgrad()
    old = system_prompt or ""
    outputs = _student_answers(student, batch, system_prompt, cfg, answers)
    if getattr(reward, "needs_generation", True):
        rewards = [float(reward(out, ex.response)) for out, ex in zip(outputs, batch)]
        wrong = [i for i, r in enumerate(rewards) if r < 1.0]
    else:  # neg_loss: no per-answer verdict from text; every example is a rewrite candidate
        rewards, wrong = [], list(range(len(batch)))

    # 1. one batched evaluation (the loss), 2. its backward and one optimizer step on the form rows
    prompt_var = full_variable_class()(old, requires_grad=True, role_description=PROMPT_ROLE)
    prompt_var.gradients = _OrderedGradients()
    verdicts, evaluations = _evaluate(tg, teacher, prompt_var, batch, outputs, wrong)
    form = [i for i, v in enumerate(verdicts) if v == "form"]
    new_system_prompt, prompt_rejected, unchanged, malformed = None, None, "no_form_errors", False
    if form:
        new_system_prompt, prompt_rejected, unchanged, malformed = _optimizer_step(tg, teacher, prompt_var, old,
                                                                                  batch, cfg)
    # 3. one batched rewrite of the form rows' prompts into new training examples
    rewrites, rejected = _rewrite_form_rows(batch, form, outputs, evaluations, teacher, seen_prompts, cfg)

    return SymbolicResult(new_system_prompt=new_system_prompt, rewrites=rewrites, rejected=rejected,
                          feedback=prompt_var.get_gradient_text() if form else "", malformed=malformed,
                          outputs=outputs, wrong=wrong, rewards_before=rewards, evaluations=evaluations,
                          verdicts=verdicts, prompt_rejected=prompt_rejected, unchanged_reason=unchanged)


def _evaluate(tg, teacher, prompt_var, batch: list[Example], outputs: list[str],
              wrong: list[int]) -> tuple[list[str], list[str]]:
    """One teacher call over the ``wrong`` rows (none when there are none): per row its verdict and
    feedback (rows the reward scores right are ``correct``); backward puts one gradient per ``form``
    row on ``prompt_var``."""
    verdicts = ["correct"] * len(batch)
    evaluations = [""] * len(batch)
    if not wrong:
        return verdicts, evaluations
    rows_text = "\n\n".join(ROW_FORMAT.format(n=i + 1, question=batch[i].prompt, reference=batch[i].response,
                                              answer=outputs[i]) for i in wrong)
    rows_var = tg.Variable(rows_text, requires_grad=False, role_description=ROWS_ROLE)
    eval_system = tg.Variable(EVAL_SYSTEM, requires_grad=False, role_description="system prompt of the evaluation")
    call = tg.autograd.FormattedLLMCall(engine=teacher, format_string=EVAL_FORMAT,
                                        fields={"prompt": None, "rows": None}, system_prompt=eval_system)
    loss = call({"prompt": prompt_var, "rows": rows_var}, response_role_description=LOSS_ROLE)
    found = parse_verdicts(loss.value, [i + 1 for i in wrong])
    if not found:  # nothing usable: not replayed from the cache
        _forget(teacher, EVAL_FORMAT.format(prompt=prompt_var.value, rows=rows_text), EVAL_SYSTEM)
    for i in wrong:
        verdicts[i], evaluations[i] = found.get(i + 1, (UNKNOWN, ""))
    form = [i for i in wrong if verdicts[i] == "form"]
    loss.set_grad_fn(tg.autograd.function.BackwardContext(
        backward_fn=_verdict_backward, prompt_var=prompt_var,
        rows=[(CONTEXT_FORMAT.format(question=batch[i].prompt, answer=outputs[i], reference=batch[i].response),
               evaluations[i] or FORM_FEEDBACK) for i in form]))
    loss.backward(engine=teacher)  # no teacher call: see _verdict_backward
    return verdicts, evaluations


def _verdict_backward(prompt_var, rows: list[tuple[str, str]], backward_engine: Any = None) -> None:
    """The evaluation's backward: the system prompt's textual gradient is the teacher's feedback on each
    ``form`` row, in that row's context (what TGD shows the optimizer). The evaluation asked for this
    feedback already, so no teacher call is made (TextGrad's LLM-call backward would ask for it again)."""
    from neurosym.teacher.tg import load_textgrad

    tg = load_textgrad()
    for context, feedback in rows:
        grad = tg.Variable(feedback, requires_grad=False, role_description=f"feedback to {PROMPT_ROLE}")
        prompt_var.gradients.add(grad)
        prompt_var.gradients_context[grad] = {"context": context, "response_desc": ANSWER_ROLE,
                                              "variable_desc": PROMPT_ROLE}


def _optimizer_step(tg, teacher, prompt_var, old: str, batch, cfg) -> tuple[Optional[str], Optional[str],
                                                                                 Optional[str], bool]:
    """TGD's step on the system prompt: (new prompt or None, why a well-formed one was refused,
    why the prompt stays, whether the optimizer's answer was malformed)."""
    recorder = _RecordingEngine(teacher)
    optimizer = tg.TGD(parameters=[prompt_var], engine=recorder, constraints=list(cfg.constraints))
    start, end = optimizer.new_variable_tags
    malformed = False
    try:
        optimizer.step()
    except IndexError:  # TextGrad's "optimizer response could not be indexed": no start tag
        malformed = True
    raw = recorder.last[2] if recorder.last else None
    proposed = _between(raw, start, end)
    if malformed or not proposed:
        malformed = True
        prompt_var.set_value(old)
        if recorder.last:
            _forget(teacher, recorder.last[0], recorder.last[1])
    new_system_prompt, prompt_rejected, unchanged = None, None, "malformed" if malformed else None
    if not malformed and proposed.strip() == old.strip():
        unchanged = "identical"
    elif not malformed:
        prompt_rejected = refuse_system_prompt(proposed, old, batch, cfg.max_prompt_chars)
        if prompt_rejected is None:
            new_system_prompt = proposed
        unchanged = prompt_rejected
    return new_system_prompt, prompt_rejected, unchanged, malformed


def _rewrite_form_rows(batch, form: list[int], outputs: list[str], evaluations: list[str], teacher,
                       seen_prompts: set, cfg) -> tuple[list[Rewrite], dict[str, int]]:
    """One teacher call rewrites the prompts of (at most ``max_rewrites_per_batch``) ``form`` rows; the
    guards refuse leaks, duplicates and overlong prompts. Returns the rewrites and refusals by reason
    (a row the reply has nothing for is ``malformed``; ``NO_REWRITE`` is ``declined``)."""
    rewrites: list[Rewrite] = []
    rejected: dict[str, int] = {}
    if not (cfg.rewrite_examples and cfg.max_rewrites_per_batch > 0 and form):
        return rewrites, rejected
    asked = form[: cfg.max_rewrites_per_batch]
    rows = "\n\n".join(REWRITE_ROW_FORMAT.format(n=i + 1, question=batch[i].prompt, reference=batch[i].response,
                                                 output=outputs[i], evaluation=evaluations[i]) for i in asked)
    request = REWRITE_INSTRUCTION.format(rows=rows)
    text = teacher(request, system_prompt=REWRITE_SYSTEM)
    replies = _rewrite_replies(text, [i + 1 for i in asked])
    if len(replies) < len(asked):  # an incomplete answer is not replayed from the cache
        _forget(teacher, request, REWRITE_SYSTEM)
    local = {prompt_key(ex.prompt) for ex in batch}
    seen = _SeenView(seen_prompts, local)
    for i in asked:
        ex, new_prompt = batch[i], replies.get(i + 1)
        if new_prompt is None or not new_prompt.strip():
            _count(rejected, "malformed")
            continue
        if REWRITE_DECLINED in new_prompt:  # a valid answer
            _count(rejected, "declined")
            continue
        reason = check_rewrite(new_prompt, ex, seen, cfg.max_prompt_chars)
        if reason is not None:
            _count(rejected, reason)
            continue
        new_ex = ex.with_prompt(new_prompt, "", parent_source=ex.source, parent_prompt=ex.prompt)
        rewrites.append(Rewrite(new_ex, ex, evaluations[i]))
        key = prompt_key(new_prompt)
        local.add(key)
        seen_prompts.add(key)
    return rewrites, rejected


def _rewrite_replies(text: Any, rows: list[int]) -> dict[int, str]:
    """``{row number: reply}`` from ``<REWRITTEN_PROMPT id=N>...</REWRITTEN_PROMPT>`` spans (the first
    for a row wins); a reply for a single row may omit its number, or be a bare ``NO_REWRITE``."""
    if not isinstance(text, str):
        return {}
    found: dict[int, str] = {}
    for n, body in re.findall(rf'<{REWRITE_TAG}\s+(?:id\s*=\s*)?["\']?(\d+)["\']?\s*>(.*?)</{REWRITE_TAG}\s*>',
                              text, re.S | re.I):
        if int(n) in rows:
            found.setdefault(int(n), body.strip())
    if len(rows) == 1 and not found:
        bare = _between(text, *REWRITE_TAGS)
        if bare is not None:
            found[rows[0]] = bare
        elif REWRITE_DECLINED in text:
            found[rows[0]] = text.strip()
    return found

__all__ = ["symbolic_update", "SymbolicResult", "Rewrite", "refuse_system_prompt", "parse_verdicts",
           "UNCHANGED_REASONS", "ELISION_MARKER", "VERDICTS", "UNKNOWN"]
