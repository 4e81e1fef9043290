"""The symbolic update: TextGrad rewrites the task's system prompt, and the teacher rewrites the prompts
of examples the student still gets wrong into new training examples.

One update for a batch of ``k`` examples (all teacher calls on the calling thread, one after the
other, so ``with teacher.meter() as m: symbolic_update(...)`` measures it):

1. the student (the local model, through :class:`~neurosym.updates.symbolic.student.StudentEngine`) answers each
   question under the current system prompt, a ``textgrad.Variable(requires_grad=True)``; the
   ``reward`` marks the answers it still gets wrong (``reward < 1``; every example with ``neg_loss``);
2. ``k`` teacher calls: ``textgrad.TextLoss`` evaluates each answer against the reference answer;
3. ``2k`` teacher calls: backward through the evaluation and through the student call
   (the feedback on the system prompt);
4. 1 teacher call: ``textgrad.TGD(..., constraints=symbolic.constraints).step()``;
5. up to ``min(len(wrong), max_rewrites_per_batch)`` teacher calls (when ``rewrite_examples``):
   a rewrite of each wrong example's prompt, checked by :func:`~neurosym.remake.guards.check_rewrite`.

So ``3k + 1 + r`` calls (fewer on cache hits). Teacher failures (``TeacherUnavailable``,
``BudgetExhausted``, ...) propagate: the caller falls back to a LoRA step. A malformed optimizer
answer (no ``<IMPROVED_VARIABLE>...</IMPROVED_VARIABLE>``, or nothing between the tags) leaves the
prompt unchanged with ``malformed=True`` (and is dropped from the teacher's cache so it is not
replayed). A new system prompt longer than ``symbolic.max_prompt_chars``, stating a batch example's
answer, or still carrying TextGrad's elision marker ``(...)`` is refused (``prompt_rejected``).
Whenever the prompt is left unchanged, ``SymbolicResult.unchanged_reason`` says why.

TextGrad 0.1.8 details handled here:

* TextGrad shows a variable to the optimizer and to the backward prompts through
  ``Variable.get_short_value()``, which elides everything but the first and last 10 words of a value
  over 20 words. The system prompt is a :func:`~neurosym.teacher.tg.full_variable_class` variable,
  shown whole; a proposal that still carries the marker ``(...)`` is refused (``elided``).

* ``TGD.step()`` raises ``IndexError`` when the start tag is missing, but accepts an answer with no
  end tag (everything after the start tag) or with nothing between the tags (an empty prompt);
  both are treated as malformed here and the old prompt is kept.
* ``textgrad.sum(losses).backward()`` gives each loss two empty-text gradients, so
  ``get_gradient_text() == "\\n"`` and the evaluation's backward takes the "chain" prompt with an
  empty objective instead of the "evaluation" prompt. ``Sum`` is an identity in TextGrad, so each
  loss is back-propagated on its own instead (same graph, same number of calls, correct prompt).
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

EVAL_INSTRUCTION = (
    "You evaluate a student language model's answer (the text you receive) to the question below, "
    "against the reference answer. In a few sentences: is the student's final answer correct; is it in the "
    "same format as the reference answer; and, if not, what went wrong (misread question, wrong method, "
    "arithmetic slip, wrong format, rambling). Be concise and critical.\n\n"
    "<QUESTION>{question}</QUESTION>\n\n<REFERENCE_ANSWER>{reference}</REFERENCE_ANSWER>"
)

REWRITE_TAGS = ("<REWRITTEN_PROMPT>", "</REWRITTEN_PROMPT>")
REWRITE_SYSTEM = (
    "You rewrite training questions for a small student language model so that it learns to answer them. "
    "You never reveal, hint at or compute the answer in a rewritten question."
)
REWRITE_DECLINED = "NO_REWRITE"  # the teacher's answer when rewording cannot help: a decline, not a fault
REWRITE_INSTRUCTION = (
    "The student model answered the question below incorrectly. Rewrite the question so the student is more "
    "likely to answer it correctly:\n"
    "- keep exactly the same task, the same facts and numbers, and the same correct answer;\n"
    "- make the instruction clearer and state the expected answer format explicitly (the format of the "
    "reference answer);\n"
    "- if it helps, break the problem into explicit steps for the student to follow;\n"
    "- NEVER state the answer, or an intermediate result that gives it away.\n\n"
    "<QUESTION>{question}</QUESTION>\n\n"
    "<REFERENCE_ANSWER>{reference}</REFERENCE_ANSWER> (for your understanding only: it must not appear in "
    "the rewritten question)\n\n"
    "<STUDENT_ANSWER>{output}</STUDENT_ANSWER>\n\n"
    "<EVALUATION>{evaluation}</EVALUATION>\n\n"
    "Reply with only the rewritten question between " + REWRITE_TAGS[0] + " and " + REWRITE_TAGS[1] + " tags. "
    "If no rewording can help (e.g. the student lacks a fact the question does not give), reply with "
    + REWRITE_DECLINED + " and why, without tags."
)


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
    evaluations: list[str] = field(default_factory=list)    # the teacher's evaluation of each answer
    prompt_rejected: Optional[str] = None      # why a well-formed new prompt was refused (elided, too_long, answer_leak)
    unchanged_reason: Optional[str] = None     # None when changed; else malformed, the refusal reason, or identical


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
UNCHANGED_REASONS = ("malformed", "elided", "too_long", "answer_leak", "identical")


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


def symbolic_update(system_prompt: Optional[str], batch: list[Example], student: Any, teacher: Any, reward: Any,
                    cfg: Any, seen_prompts: set) -> SymbolicResult:
    """Improve ``system_prompt`` on ``batch`` with TextGrad and rewrite the prompts the student gets wrong.

    :param student: a :class:`~neurosym.updates.symbolic.student.StudentEngine` over the model being trained.
    :param teacher: a TextGrad engine (:func:`neurosym.teacher.make_teacher`).
    :param reward: :func:`neurosym.reward.make_reward` result; decides which answers are wrong.
    :param cfg: the ``symbolic`` config section (:class:`~neurosym.config.schema.SymbolicConfig`).
    :param seen_prompts: prompts already in the data (raw or :func:`~neurosym.remake.guards.prompt_key`
        normalised), for the duplicate guard; the keys of accepted rewrites are added to it.
    """
    from neurosym.teacher.tg import full_variable_class, load_textgrad

    if not batch:
        raise ValueError("symbolic_update needs at least one example")
    tg = load_textgrad()
    old = system_prompt or ""

    # 1. the student answers under the current system prompt
    prompt_var = full_variable_class()(old, requires_grad=True, role_description=PROMPT_ROLE)
    prompt_var.gradients = _OrderedGradients()
    llm = tg.BlackboxLLM(engine=student, system_prompt=prompt_var)
    session = student.session(batch, cfg.max_new_tokens) if hasattr(student, "session") else nullcontext()
    answers = []
    with session:
        for ex in batch:
            question = tg.Variable(ex.prompt, requires_grad=False, role_description=QUESTION_ROLE)
            answer = llm(question)
            answer.set_role_description(ANSWER_ROLE)
            answers.append(answer)
    outputs = [str(a.value) for a in answers]
    if getattr(reward, "needs_generation", True):
        rewards = [float(reward(out, ex.response)) for out, ex in zip(outputs, batch)]
        wrong = [i for i, r in enumerate(rewards) if r < 1.0]
    else:  # neg_loss: no per-answer verdict from text; every example is a rewrite candidate
        rewards, wrong = [], list(range(len(batch)))

    # 2-3. evaluate each answer, then back-propagate the feedback to the system prompt
    losses = []
    for ex, answer in zip(batch, answers):
        instruction = EVAL_INSTRUCTION.format(question=ex.prompt, reference=ex.response)
        losses.append(tg.TextLoss(instruction, engine=teacher)(answer))
    evaluations = [str(loss.value) for loss in losses]
    for loss in losses:  # not tg.sum(losses).backward(): see the module docstring
        loss.backward(engine=teacher)
    feedback = prompt_var.get_gradient_text()

    # 4. the optimizer step
    new_system_prompt, prompt_rejected, unchanged, malformed = _optimizer_step(tg, teacher, prompt_var, old, batch, cfg)

    # 5. rewrite the prompts of wrong examples into new training examples
    rewrites, rejected = _rewrite_wrong(batch, wrong, outputs, evaluations, teacher, seen_prompts, cfg)

    return SymbolicResult(new_system_prompt=new_system_prompt, rewrites=rewrites, rejected=rejected,
                          feedback=feedback, malformed=malformed, outputs=outputs, wrong=wrong,
                          rewards_before=rewards, evaluations=evaluations, prompt_rejected=prompt_rejected,
                          unchanged_reason=unchanged)



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


def _rewrite_wrong(batch, wrong: list[int], outputs: list[str], evaluations: list[str], teacher, seen_prompts: set,
                   cfg) -> tuple[list[Rewrite], dict[str, int]]:
    """The teacher rewrites the prompts of (at most ``max_rewrites_per_batch``) wrong examples; the
    guards refuse leaks, duplicates and overlong prompts. Returns the rewrites and refusals by reason."""
    rewrites: list[Rewrite] = []
    rejected: dict[str, int] = {}
    if not (cfg.rewrite_examples and cfg.max_rewrites_per_batch > 0 and wrong):
        return rewrites, rejected
    local = {prompt_key(ex.prompt) for ex in batch}
    seen = _SeenView(seen_prompts, local)
    for i in wrong[: cfg.max_rewrites_per_batch]:
        ex = batch[i]
        request = REWRITE_INSTRUCTION.format(question=ex.prompt, reference=ex.response, output=outputs[i],
                                             evaluation=evaluations[i])
        text = teacher(request, system_prompt=REWRITE_SYSTEM)
        new_prompt = _between(text, *REWRITE_TAGS)
        if new_prompt is None and REWRITE_DECLINED in text:  # a valid answer: kept in the cache
            _count(rejected, "declined")
            continue
        if new_prompt is None:
            _count(rejected, "malformed")
            _forget(teacher, request, REWRITE_SYSTEM)
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

__all__ = ["symbolic_update", "SymbolicResult", "Rewrite", "refuse_system_prompt", "UNCHANGED_REASONS",
           "ELISION_MARKER"]
