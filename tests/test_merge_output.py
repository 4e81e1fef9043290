"""`neurosym merge` on one small finished run: it never writes into the base model or the run, an
existing folder needs --overwrite, and the learned system prompt leaves with the merged model
(system_prompt.txt, README.md, a chat template that defaults to it)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from neurosym.cli import main
from neurosym.data import Renderer
from neurosym.data.examples import Example
from neurosym.model.merge import plain_chat_template, set_learned_chat_template, template_with_default_system
from neurosym.persist.safe_output import OLD_TAG, TMP_TAG
from neurosym.model.tiny import build_tokenizer
from tests.support.jobs import write_config

# What a teacher may write: quotes, backslashes, Jinja delimiters, new lines, non-ASCII.
LEARNED = ('You add integers. Reply "The answer is N." \\ never {{ N }} or {% raw %} %}\n'
           "Second line: caf\u00e9 \u00d7 \U0001f600 'quoted'")


def tree(path: Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory, tiny_model_dir):
    """A finished 2-step LoRA run whose final checkpoint holds a learned prompt (as a symbolic update
    leaves it: components.prompts in state.json); returns (tmp, run_dir)."""
    tmp = tmp_path_factory.mktemp("merge")
    cfg = write_config(tmp, tiny_model_dir, name="m", train={"max_steps": 2, "save_every": 2, "eval_every": 0})
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp / "runs" / "m"
    state_path = run / "checkpoints" / "step-2" / "state.json"
    state = json.loads(state_path.read_text())
    versions = state["components"]["prompts"]["versions"]
    versions.append({"version": 1, "text": LEARNED, "step": 2})
    state["components"]["prompts"] = {"current": LEARNED, "versions": versions}
    state_path.write_text(json.dumps(state))
    return tmp, run


def merge(run, out, *extra) -> int:
    return main(["merge", str(run), "--out", str(out), *extra])


def test_merge_carries_the_learned_system_prompt(finished, tiny_model_dir, capsys):
    from transformers import AutoTokenizer

    tmp, run = finished
    out = tmp / "merged"
    assert merge(run, out) == 0
    printed = capsys.readouterr().out
    assert f"merged model written to {out}" in printed and "the learned system prompt is the default" in printed
    assert (out / "system_prompt.txt").read_text(encoding="utf-8") == LEARNED
    assert LEARNED in (out / "README.md").read_text(encoding="utf-8")
    tok = AutoTokenizer.from_pretrained(out)
    base = AutoTokenizer.from_pretrained(tiny_model_dir)
    ex = Example((("user", "What is 2 plus 3?"),), "The answer is 5.")
    trained_as = Renderer(base, 512, LEARNED).prompt_text(ex)
    # no system message: the merged model's template renders exactly what the run trained on
    assert tok.apply_chat_template([{"role": "user", "content": ex.prompt}], tokenize=False,
                                   add_generation_prompt=True) == trained_as
    # a caller's own system message wins and renders as the base template would
    own = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": ex.prompt}]
    assert tok.apply_chat_template(own, tokenize=False, add_generation_prompt=True) == \
        base.apply_chat_template(own, tokenize=False, add_generation_prompt=True)
    assert [p.name for p in tmp.iterdir() if TMP_TAG in p.name or OLD_TAG in p.name] == []


def test_merge_refuses_the_base_model_folder_and_the_run(finished, tiny_model_dir, capsys):
    """Was: `merge --out <base folder>` wrote the merged weights over the base (a second merge folded the
    adapter in twice)."""
    tmp, run = finished
    base_before, run_before = tree(tiny_model_dir), tree(run)
    for out in (tiny_model_dir, tiny_model_dir / "merged", tiny_model_dir.parent, run, run / "merged",
                run.parent / ".models"):
        for extra in ([], ["--overwrite"]):
            assert merge(run, out, *extra) == 2
            err = capsys.readouterr().err
            refused = "which this command reads from" in err or "run directory" in err
            assert refused or (not extra and "not empty" in err), err
    assert tree(tiny_model_dir) == base_before and tree(run) == run_before


def test_merging_twice_into_one_folder_needs_overwrite(finished, capsys):
    tmp, run = finished
    out = tmp / "twice"
    assert merge(run, out) == 0
    first = tree(out)
    (out / "mine.txt").write_text("left by the user")
    assert merge(run, out) == 2
    assert "already exists and is not empty; pass --overwrite" in capsys.readouterr().err
    assert (out / "mine.txt").exists() and {k: v for k, v in tree(out).items() if k != "mine.txt"} == first
    assert merge(run, out, "--overwrite") == 0
    assert tree(out) == first  # a fresh merge swapped in whole; the old folder (the target) is gone
    assert [p.name for p in tmp.iterdir() if TMP_TAG in p.name or OLD_TAG in p.name] == []


def test_a_tokenizer_without_a_chat_template_gets_the_layout_the_run_trained_on():
    tok = build_tokenizer(chat_template=False)
    note = set_learned_chat_template(tok, LEARNED)
    assert "plain System/User/Assistant layout" in note
    renderer = Renderer(build_tokenizer(chat_template=False), 512, LEARNED)
    for ex in (Example((("user", "What is 2 plus 3?"),), "5"),
               Example((("system", "Be brief."), ("user", "hi"), ("assistant", "hello"), ("user", "2+3?")), "5")):
        msgs = [{"role": r, "content": c} for r, c in ex.messages]
        ids = tok.apply_chat_template(msgs, tokenize=True, add_generation_prompt=True)
        ids = ids["input_ids"] if isinstance(ids, dict) or hasattr(ids, "keys") else ids
        assert list(ids) == renderer.generation_ids(ex)  # token for token, BOS included
        full = tok.apply_chat_template(msgs + [{"role": "assistant", "content": ex.response}], tokenize=False)
        assert full == renderer.prompt_text(ex) + ex.response + tok.eos_token
    assert "System: " not in tok.apply_chat_template([{"role": "user", "content": "x"}], tokenize=False,
                                                     chat_template=plain_chat_template(tok, None))


def test_default_system_template_escapes_any_prompt():
    tok = build_tokenizer()
    for text in (LEARNED, '"', "\\", "\\n literally", "{{ raise_exception('x') }}", "end %}{% if true %}"):
        wrapped = template_with_default_system(tok.chat_template, text)
        rendered = tok.apply_chat_template([{"role": "user", "content": "q"}], chat_template=wrapped,
                                           tokenize=False, add_generation_prompt=True)
        assert rendered == f"[SYS]{text}\n[USER]q\n[BOT]"
    assert "unchanged" in set_learned_chat_template(build_tokenizer(), None)


def test_export_of_the_finished_lora_only_run_writes_its_training_data(finished, capsys):
    tmp, run = finished
    out = tmp / "export.jsonl"
    assert main(["export", str(run), "--out", str(out), "--schema", "trl"]) == 0
    assert "the training data: this run has no refined examples" in capsys.readouterr().out
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 24 and all(r["prompt"][0] == {"role": "system", "content": LEARNED} for r in rows)
