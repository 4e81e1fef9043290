"""`neurosym generate` talks to a fine-tune in its chat format (issue 22).

A run, a checkpoint, a merged model and a composition are answered with the tiny tokenizer's chat
template (``[SYS]...\\n[USER]...\\n[BOT]``) and the system prompt they were trained under; the token ids
the model receives are captured at ``generate_batched`` and compared with the training Renderer's own
encoding and with the literal text. ``--raw`` sends the text as it is; batches equal one-by-one greedy
answers; an empty answer is said so, never printed as a blank line.
"""
from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

import neurosym.model.generation as generation
from neurosym.cli import main
from neurosym.compose import compose
from neurosym.data import Renderer
from neurosym.data.examples import Example
from tests.support.jobs import write_config

LEARNED = 'You add integers. Reply "The answer is N."\nNothing else.'
CONFIG_PROMPT = "Add the numbers."  # write_config's data.system_prompt: current in step-1
QUESTION = "What is 2 plus 3?"
STUDENT = Path(__file__).resolve().parents[1] / "experiments" / "testbed" / "student"


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_model_dir):
    """A finished 2-step run whose step-2 checkpoint learned LEARNED (as a symbolic update leaves it),
    its merged model, and a composition of its two checkpoints; returns a dict of paths."""
    tmp = tmp_path_factory.mktemp("generate")
    cfg = write_config(tmp, tiny_model_dir, name="g", train={"max_steps": 2, "save_every": 1, "eval_every": 0})
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp / "runs" / "g"
    state_path = run / "checkpoints" / "step-2" / "state.json"
    state = json.loads(state_path.read_text())
    versions = state["components"]["prompts"]["versions"] + [{"version": 1, "text": LEARNED, "step": 2}]
    state["components"]["prompts"] = {"current": LEARNED, "versions": versions}
    state_path.write_text(json.dumps(state))
    assert main(["merge", str(run), "--out", str(tmp / "merged")]) == 0
    comp = compose([("a", str(run)), ("b", str(run / "checkpoints" / "step-2"))], "output_sum", tmp / "comp")
    return {"tmp": tmp, "run": run, "step-1": run / "checkpoints" / "step-1",
            "step-2": run / "checkpoints" / "step-2", "merged": tmp / "merged", "comp": comp}


@pytest.fixture
def sent(monkeypatch):
    """The prompts (token ids) `generate` hands to the model, per call."""
    calls = []
    original = generation.generate_batched

    def spy(model, tokenizer, prompts, *args, **kwargs):
        calls.append([list(p) for p in prompts])
        return original(model, tokenizer, prompts, *args, **kwargs)

    monkeypatch.setattr(generation, "generate_batched", spy)
    return calls


def gen(*argv) -> int:
    return main(["generate", *map(str, argv), "--conn", "none", "--max-new-tokens", "6"])


def trained_as(tokenizer, system, prompt=QUESTION) -> list:
    """The ids training renders as the prompt of ``prompt`` under ``system`` (the eval reward's prompt)."""
    return Renderer(tokenizer, 512, system).generation_ids(Example((("user", prompt),), "x"))


@pytest.mark.parametrize("target,system", [("run", LEARNED), ("step-2", LEARNED), ("step-1", CONFIG_PROMPT),
                                           ("merged", LEARNED), ("comp", LEARNED)])
def test_generate_renders_the_chat_template_with_the_learned_prompt(made, sent, capsys, tiny_model_dir,
                                                                    target, system):
    from transformers import AutoTokenizer

    assert gen(made[target], "--prompt", QUESTION) == 0
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert sent == [[trained_as(tok, system)]]
    assert tok.decode(sent[0][0]) == f"[SYS]{system}\n[USER]{QUESTION}\n[BOT]"
    err = capsys.readouterr().err
    assert "the tokenizer's chat template; system prompt 'You add" in err or system == CONFIG_PROMPT
    if target == "merged":
        assert "system_prompt.txt" in err
    elif target == "step-1":
        assert "(checkpoint step-1)" in err and repr(CONFIG_PROMPT) in err


def test_raw_sends_the_text_as_it_is_and_system_replaces_the_learned_prompt(made, sent, capsys, tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert gen(made["run"], "--prompt", "12+30=", "--raw") == 0
    assert sent[-1] == [tok("12+30=")["input_ids"]] and "[SYS]" not in tok.decode(sent[-1][0])
    assert "no chat template (--raw)" in capsys.readouterr().err
    assert gen(made["run"], "--prompt", QUESTION, "--system", "Be brief.") == 0
    assert tok.decode(sent[-1][0]) == f"[SYS]Be brief.\n[USER]{QUESTION}\n[BOT]"
    assert gen(made["run"], "--prompt", QUESTION, "--system", "", "--show-prompt") == 0
    assert tok.decode(sent[-1][0]) == f"[USER]{QUESTION}\n[BOT]"
    assert repr(f"[USER]{QUESTION}\n[BOT]") in capsys.readouterr().err  # --show-prompt: what the model receives


@pytest.mark.parametrize("raw", [[], ["--raw"]])
def test_batched_answers_equal_one_by_one_answers_under_greedy(capsys, raw):
    """On the testbed's pretrained student (a random model answers every prompt alike)."""
    questions = ["Brafiklon likes which colour?", "Trebai has which number?", "Draitak lives in which city?",
                 "Gaimun lives in which city? Answer in upper case."]
    singles = []
    for q in questions:
        assert gen(STUDENT, "--prompt", q, "--jsonl", *raw) == 0
        singles.append(json.loads(capsys.readouterr().out)["response"])
    argv = [a for q in questions for a in ("--prompt", q)]
    assert gen(STUDENT, *argv, "--jsonl", "--batch-size", "3", *raw) == 0  # two chunks, left padded
    batched = [json.loads(line)["response"] for line in capsys.readouterr().out.splitlines()]
    assert batched == singles and len(set(singles)) > 1


def test_generate_batched_equals_one_by_one_and_leaves_the_rng_alone(tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    prompts = [tok(t)["input_ids"] for t in ("a", "What is 2 plus 3?", "xyz xyz xyz xyz xyz")]
    state = torch.random.get_rng_state()
    together = generation.generate_batched(model, tok, prompts, 8, batch_size=3)
    alone = [generation.generate_batched(model, tok, [p], 8)[0] for p in prompts]
    assert together == alone
    sampled = [generation.generate_batched(model, tok, prompts, 8, temperature=1.0, top_p=0.9, seed=s)
               for s in (1, 1, 2)]
    assert sampled[0] == sampled[1] and torch.equal(torch.random.get_rng_state(), state)
    assert generation.greedy_generate(model, tok, prompts, 8) == [g.text.strip() for g in together]


def _silent_model(tiny_model_dir, out: Path, allowed: list) -> Path:
    """The tiny model whose generation config suppresses every token but ``allowed`` (names)."""
    from transformers import AutoTokenizer

    shutil.copytree(tiny_model_dir, out)
    tok = AutoTokenizer.from_pretrained(out)
    keep = {tok.convert_tokens_to_ids(t) for t in allowed}
    cfg = json.loads((out / "generation_config.json").read_text())
    cfg["suppress_tokens"] = [i for i in range(len(tok)) if i not in keep]
    (out / "generation_config.json").write_text(json.dumps(cfg))
    return out


def test_an_empty_answer_is_said_so_not_printed_as_a_blank_line(tmp_path, tiny_model_dir, capsys):
    ends = _silent_model(tiny_model_dir, tmp_path / "ends", ["</s>"])
    assert gen(ends, "--prompt", QUESTION) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "empty answer: its first token was the end-of-sequence token '</s>'" in err
    assert gen(ends, "--prompt", QUESTION, "--raw") == 0
    assert "try without --raw" in capsys.readouterr().err
    spaces = _silent_model(tiny_model_dir, tmp_path / "spaces", [" "])
    assert gen(spaces, "--prompt", "a", "--prompt", "b") == 0
    out, err = capsys.readouterr()
    assert out == ">>> a\n(empty answer: see stderr)\n\n>>> b\n(empty answer: see stderr)\n\n"
    assert "[1] empty answer: it wrote only whitespace (6 tokens)" in err
    assert gen(spaces, "--prompt", "a", "--jsonl") == 0
    assert json.loads(capsys.readouterr().out) == {"prompt": "a", "system": None, "response": "",
                                                   "ended": False, "empty": True}


def test_prompts_file_rows_are_read_as_training_reads_them(made, sent, tmp_path, tiny_model_dir, capsys):
    from transformers import AutoTokenizer

    rows = [{"prompt": QUESTION},
            {"prompt": "Hi", "system": "Own prompt."},
            {"messages": [{"role": "user", "content": "One?"}, {"role": "assistant", "content": "1"},
                          {"role": "user", "content": "Two?"}]},
            {"instruction": "Add", "input": "2 and 3", "output": "5"}]
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert gen(made["run"], "--prompts", path, "--jsonl") == 0
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert [tok.decode(ids) for ids in sent[-1]] == [
        f"[SYS]{LEARNED}\n[USER]{QUESTION}\n[BOT]",
        "[SYS]Own prompt.\n[USER]Hi\n[BOT]",                   # a row's own system message wins
        f"[SYS]{LEARNED}\n[USER]One?\n[BOT]1</s>\n[USER]Two?\n[BOT]",
        f"[SYS]{LEARNED}\n[USER]Add\n\n2 and 3\n[BOT]"]
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["prompt"] for o in out] == [QUESTION, "Hi", "Two?", "Add\n\n2 and 3"]
    assert [o["system"] for o in out] == [LEARNED, "Own prompt.", LEARNED, LEARNED]


def test_a_bad_prompts_row_is_refused_with_its_line_before_loading(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    path.write_text('{"prompt": "ok"}\n{"question": "no prompt key"}\n')
    assert gen(tmp_path / "no-model", "--prompts", path) == 2
    err = capsys.readouterr().err
    assert f"{path}:2" in err and "cannot tell the format" in err and "could not load model" not in err
    assert gen(tmp_path / "no-model", "--prompts", tmp_path / "missing.jsonl") == 2
    assert "not found" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--temperature", "-1"], "--temperature must be 0"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--batch-size", "0"], "--batch-size must be at least 1"),
])
def test_sampling_flags_are_checked_before_loading(tmp_path, capsys, argv, message):
    assert gen(tmp_path / "no-model", "--prompt", "hi", *argv) == 2
    err = capsys.readouterr().err
    assert message in err and "could not load model" not in err


def test_sampling_is_reproducible_by_seed(made, capsys):
    outs = []
    for seed in (3, 3):
        assert gen(made["run"], "--prompt", QUESTION, "--temperature", "1.5", "--top-p", "0.95",
                   "--seed", seed, "--jsonl") == 0
        outs.append(json.loads(capsys.readouterr().out)["response"])
    assert outs[0] == outs[1]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_prompts_from_stdin_lines_and_typed_in_a_terminal(made, monkeypatch, capsys):
    assert gen(made["run"], "--prompt", "Hi", "--prompt", QUESTION, "--jsonl") == 0
    expected = [json.loads(line)["response"] for line in capsys.readouterr().out.splitlines()]
    monkeypatch.setattr("sys.stdin", io.StringIO(f"Hi\n\n{QUESTION}\n"))     # a pipe: every line, one batch
    assert gen(made["run"], "--jsonl") == 0
    assert [json.loads(line)["response"] for line in capsys.readouterr().out.splitlines()] == expected
    monkeypatch.setattr("sys.stdin", _Terminal(f"Hi\n\n{QUESTION}\n"))       # a terminal: answered line by line
    assert gen(made["run"], "--jsonl") == 0
    out, err = capsys.readouterr()
    assert [json.loads(line)["response"] for line in out.splitlines()] == expected
    assert err.count("> ") == 4 and "Ctrl-D" in err
    monkeypatch.setattr("sys.stdin", io.StringIO("\n \n"))
    assert gen(made["run"]) == 2
    assert "no prompt: give --prompt TEXT" in capsys.readouterr().err


def test_modules_trained_under_different_prompts_give_none_and_say_so(made, tmp_path, sent, capsys,
                                                                     tiny_model_dir):
    from transformers import AutoTokenizer

    other = tmp_path / "other"
    shutil.copytree(made["step-2"], other)              # out of its run: its system_prompt.txt speaks
    (other / "system_prompt.txt").write_text("Answer in French.")
    comp = compose([("a", str(made["run"])), ("b", str(other))], "output_sum", tmp_path / "comp2")
    assert gen(comp, "--prompt", QUESTION) == 0
    err = capsys.readouterr().err
    assert "trained under different system prompts" in err and "choose one with --system" in err
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    assert tok.decode(sent[-1][0]) == f"[USER]{QUESTION}\n[BOT]"
    assert gen(other, "--prompt", QUESTION) == 0                     # the copied checkpoint alone
    assert tok.decode(sent[-1][0]).startswith("[SYS]Answer in French.\n")


def test_the_gate_answers_a_trigger_ending_the_users_message_in_the_chat_format(tiny_model_dir, sent, capsys):
    assert main(["generate", str(tiny_model_dir), "--prompt", "Q: 4812+977=", "--max-new-tokens", "6",
                 "--conn", "add", "--jsonl"]) == 0
    captured = capsys.readouterr()
    answer = json.loads(captured.out)["response"]
    assert answer.startswith("5789") and not answer[4:5].isdigit(), answer
    assert "[conn] add(4812, 977) -> 5789" in captured.err
    from transformers import AutoTokenizer
    assert AutoTokenizer.from_pretrained(tiny_model_dir).decode(sent[-1][0]) == "[USER]Q: 4812+977=\n[BOT]"


def test_help_reads_as_talking_to_a_fine_tune(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for needle in ("chat format", "learned", "--raw", "--system", "--prompts", "--temperature", "--top-p",
                   "--max-new-tokens", "interactive", "a merged model", "a composition", "--conn"):
        assert needle in text, needle
