"""`neurosym merge`: fold the LoRA adapter into the base weights (``merge_and_unload``), with the
system prompt the run learned.

The merged folder holds the model, the tokenizer, ``system_prompt.txt`` (the prompt current in the
merged checkpoint) and a ``README.md`` stating it. The saved chat template defaults to that prompt:
a conversation with no system message renders exactly as the run rendered its training examples; one
with its own system message renders as the base template would. A tokenizer without a chat template
gets one that reproduces the plain ``System:/User:/Assistant:`` layout the run trained on.

The output follows :class:`neurosym.persist.safe_output.OutputTarget`: never the base model's folder, the run
directory or the model cache (merging into the base folder would fold the adapter in twice on the next
merge); an existing non-empty folder only with ``overwrite``; written beside the target and swapped in
once complete. All checks run before the model is loaded.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import NamedTuple, Optional

from neurosym.persist.checkpoint import find_checkpoint
from neurosym.config.schema import Config
from neurosym.model.load import ModelError
from neurosym.persist.rundir import RunDir
from neurosym.persist.safe_output import OutputTarget, model_paths

log = logging.getLogger(__name__)

SYSTEM_PROMPT_FILE = "system_prompt.txt"
_PLAIN_NAMES = {"system": "System", "user": "User", "assistant": "Assistant"}


def _jinja_string(text: str) -> str:
    """``text`` as a Jinja string literal (Jinja decodes literals with Python's unicode-escape after
    turning non-ASCII into escapes, so only backslash, quote and line breaks need escaping)."""
    escaped = (text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n").replace("\r", "\\r"))
    return f'"{escaped}"'


def _default_system_prefix(system: str) -> str:
    return ("{%- if not (messages and messages[0]['role'] == 'system') %}"
            "{%- set messages = [{'role': 'system', 'content': " + _jinja_string(system) + "}] + messages %}"
            "{%- endif %}")


def template_with_default_system(template: str, system: str) -> str:
    """``template`` with ``system`` as the system message of any conversation that has none."""
    return _default_system_prefix(system) + template


def plain_chat_template(tokenizer, system: Optional[str]) -> str:
    """A chat template rendering :class:`neurosym.data.Renderer`'s plain layout (used when the base
    tokenizer has no template): ``System: ...\\nUser: ...\\nAssistant: `` after the BOS token the
    tokenizer adds, a final assistant message followed by EOS."""
    ids_with = tokenizer("x", add_special_tokens=True)["input_ids"]
    ids_without = tokenizer("x", add_special_tokens=False)["input_ids"]
    bos = (tokenizer.bos_token_id is not None and len(ids_with) == len(ids_without) + 1
           and ids_with[0] == tokenizer.bos_token_id)
    names = "{" + ", ".join(f"'{k}': '{v}'" for k, v in _PLAIN_NAMES.items()) + "}"
    return ((_default_system_prefix(system) if system else "")
            + "{%- set names = " + names + " %}"
            + ("{{- bos_token }}" if bos else "")
            + "{%- for m in messages %}"
            + "{%- if m['role'] == 'assistant' and loop.last and not add_generation_prompt %}"
            + "{{- 'Assistant: ' + m['content'] + (eos_token or '') }}"
            + "{%- else %}{{- names[m['role']] + ': ' + m['content'] + '\\n' }}{%- endif %}"
            + "{%- endfor %}"
            + "{%- if add_generation_prompt %}{{- 'Assistant: ' }}{%- endif %}")


def _renders(tokenizer, template: str, messages: list[dict]) -> str:
    return tokenizer.apply_chat_template(messages, chat_template=template, tokenize=False,
                                         add_generation_prompt=True)


def set_learned_chat_template(tokenizer, system: Optional[str]) -> str:
    """Give ``tokenizer`` a chat template defaulting to ``system``; returns what was done, in words.

    The wrapped template is checked on a sample conversation: without a system message it must render
    what the original renders with ``system`` as the system message, and with one exactly what the
    original renders. A template that does not pass keeps its original form (with a warning);
    ``system_prompt.txt`` still carries the prompt.
    """
    original = getattr(tokenizer, "chat_template", None)
    if not original:
        tokenizer.chat_template = plain_chat_template(tokenizer, system)
        return ("no chat template in the base tokenizer: wrote one with the plain System/User/Assistant "
                "layout the run trained on" + (", the learned system prompt as its default" if system else ""))
    if not system:
        return "chat template unchanged (the run has no system prompt)"
    if not isinstance(original, str):
        return "chat template unchanged (the tokenizer has several named templates)"
    wrapped = template_with_default_system(original, system)
    user = [{"role": "user", "content": "What is 2 plus 3?"}]
    other = [{"role": "system", "content": "Answer in French."}] + user
    try:
        same = (_renders(tokenizer, wrapped, user) == _renders(tokenizer, original, [
                    {"role": "system", "content": system}] + user)
                and _renders(tokenizer, wrapped, other) == _renders(tokenizer, original, other))
    except Exception as exc:  # a template that rejects the sample (e.g. no system role)
        log.warning("chat template kept as is: it does not render a system message (%s)", exc)
        return "chat template unchanged (it does not render a system message); see system_prompt.txt"
    if not same:
        log.warning("chat template kept as is: a default system message changes how it renders other turns")
        return "chat template unchanged (a default system message would change it); see system_prompt.txt"
    tokenizer.chat_template = wrapped
    return "chat template: the learned system prompt is the default system message"


def model_card(cfg: Config, ckpt: Path, system: Optional[str]) -> str:
    from neurosym.observe.prompt_history import data_system_summary, learned_prompt_card
    try:  # what system messages the training rows carried (the data may have moved since: then unsaid)
        from neurosym.data import load_examples
        data = data_system_summary(load_examples(cfg.data.train, cfg.data, on_error="skip")[0])
    except Exception:  # noqa: BLE001 - a card without that line rather than no merge
        data = None
    return (f"# {cfg.run.name} (merged)\n\n"
            f"Base model `{cfg.model.name_or_path}` with the LoRA adapter of neurosym run `{cfg.run.name}` "
            f"(checkpoint `{ckpt.name}`) merged in (`merge_and_unload`).\n\n" + learned_prompt_card(system, data))


def protected_paths(cfg: Config, run_dir: Path) -> list[Path]:
    """What a merge reads: the run directory, the base model folder (a local path), the model caches."""
    return [Path(run_dir), RunDir(run_dir).models_cache] + model_paths(cfg.model.name_or_path)


class Merged(NamedTuple):
    path: Path
    system_prompt: Optional[str]
    chat_template: str  # what was done to the chat template, in words


def merge_run(cfg: Config, run_dir: Path, out: Path, checkpoint: str | None = None,
              dequantize: bool = False, overwrite: bool = False) -> Merged:
    """Merge the adapter of ``checkpoint`` (default the newest complete one) into the base and save it
    with the learned system prompt to ``out``.

    :raises neurosym.persist.safe_output.OutputError: ``out`` may not be written (checked before loading anything).
    """
    run_dir = Path(run_dir)
    ckpt = find_checkpoint(run_dir, checkpoint)
    if cfg.model.quantization == "4bit" and not dequantize:
        raise ModelError(
            "this run trained on a 4-bit (QLoRA) base: merging into 4-bit weights rounds the adapter away. "
            "Pass --dequantize to merge into a bf16 copy of the base instead (needs memory for the full model).")
    target = OutputTarget(out, kind="dir", overwrite=overwrite, protect=protected_paths(cfg, run_dir))
    from neurosym.observe.prompt_history import learned_prompt
    system = learned_prompt(run_dir, ckpt)
    model_cfg = cfg.model.model_copy(update={"quantization": "none"}) if dequantize else cfg.model
    merge_cfg = cfg.model_copy(update={"model": model_cfg})
    from neurosym.model.load import load_with_adapter
    model, tokenizer, _, _ = load_with_adapter(merge_cfg, run_dir.parent / ".models", ckpt)
    merged = model.merge_and_unload()
    template_note = set_learned_chat_template(tokenizer, system)
    with target.writing() as tmp:
        merged.save_pretrained(str(tmp))
        tokenizer.save_pretrained(str(tmp))
        if system is not None:
            (tmp / SYSTEM_PROMPT_FILE).write_text(system, encoding="utf-8")
        (tmp / "README.md").write_text(model_card(cfg, ckpt, system), encoding="utf-8")
    return Merged(Path(out), system, template_note)


__all__ = ["merge_run", "Merged", "set_learned_chat_template", "template_with_default_system",
           "plain_chat_template", "protected_paths", "model_card", "SYSTEM_PROMPT_FILE"]
