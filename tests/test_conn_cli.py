"""`neurosym conn info|run` and `neurosym generate`, through argparse and as a subprocess."""
from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from neurosym.conn.cli import register


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="neurosym")
    register(parser.add_subparsers())
    args = parser.parse_args(argv)
    return args.func(args)


@pytest.mark.parametrize("argv,answer", [
    (["parity", "0110101"], "0"),
    (["reverse", "31415"], "51413"),
    (["add", "123", "456"], "579"),
    (["subtract", "456", "123"], "333"),
    (["subtract", "123", "456"], "-333"),
    (["add", "--max-len", "40", "9" * 40, "1"], "1" + "0" * 40),
])
def test_conn_run_prints_the_answer_last(capsys, argv, answer):
    assert run_cli(["conn", "run", *argv]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == answer


@pytest.mark.parametrize("argv,message", [
    (["parity", "0121"], "characters '2' are not allowed"),
    (["add", "1" * 33, "1"], "exceeds the compiled maximum of 32"),
    (["add", "1"], "takes 2 operand"),
    (["divide", "1", "2"], "unknown operation 'divide'"),
])
def test_conn_run_refuses_with_exit_1(capsys, argv, message):
    assert run_cli(["conn", "run", *argv]) == 2  # a refused input is a user error: exit 2, as from every verb
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_conn_info_lists_every_op(capsys):
    assert run_cli(["conn", "info", "--no-precision"]) == 0
    rows = {line.split()[0]: line.split() for line in capsys.readouterr().out.splitlines()[1:5]}
    assert set(rows) == {"parity", "reverse", "add", "subtract"}
    assert rows["add"][1:3] == ["32", "28"] and rows["parity"][1:3] == ["64", "3"]  # max len, layers


@pytest.mark.parametrize("argv", [["conn"], ["conn", "run"], ["conn", "info"], ["generate"]])
def test_help_has_description_and_examples(capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        run_cli([*argv, "--help"])
    assert exit_.value.code == 0
    assert "examples:" in capsys.readouterr().out


def test_module_entry_point_subprocess():
    proc = subprocess.run([sys.executable, "-m", "neurosym.conn.cli", "conn", "run", "add", "123", "456"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "579"


def test_generate_with_and_without_the_gate(capsys, tiny_model_dir):
    assert run_cli(["generate", str(tiny_model_dir), "--prompt", "123+456=", "--max-new-tokens", "5",
                    "--conn", "add,subtract"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().splitlines()[-1].startswith("579")
    assert "[conn] add(123, 456) -> 579" in captured.err
    assert run_cli(["generate", str(tiny_model_dir), "--prompt", "123+456=", "--max-new-tokens", "5",
                    "--conn", "none"]) == 0
    assert not capsys.readouterr().out.strip().startswith("579")


def test_generate_with_a_peft_adapter(capsys, tiny_model_dir, tmp_path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = get_peft_model(model, LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    lora.save_pretrained(tmp_path / "adapter")
    assert run_cli(["generate", str(tiny_model_dir), "--adapter", str(tmp_path / "adapter"),
                    "--prompt", "7-9=", "--max-new-tokens", "3"]) == 0
    assert capsys.readouterr().out.strip().startswith("-2")


def test_generate_reports_unloadable_model(capsys, tmp_path):
    assert run_cli(["generate", str(tmp_path / "missing"), "--prompt", "1+1="]) == 2
    assert "could not load model" in capsys.readouterr().err


def test_generate_rejects_unknown_conn(capsys):
    assert run_cli(["generate", "m", "--prompt", "x", "--conn", "add,multiply"]) == 2
    assert "unknown operation(s) multiply" in capsys.readouterr().err


@pytest.mark.parametrize("argv,message", [
    (["--prompt", ""], "--prompt is empty"),
    (["--prompt", "  "], "--prompt is empty"),
    (["--prompt", "1+1=", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0"),
    (["--prompt", "1+1=", "--max-new-tokens", "-3"], "--max-new-tokens must be at least 1, got -3"),
    (["--prompt", "1+1=", "--device", "banana"], "is not a torch device"),
    (["--prompt", "1+1=", "--ops-module", "/nonexistent/ops.py"], "no such file"),
])
def test_generate_usage_errors_before_loading_the_model(capsys, tmp_path, argv, message):
    # the model path does not exist: an error about loading it would mean the check came too late
    assert run_cli(["generate", str(tmp_path / "no-model"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "could not load model" not in err and "Traceback" not in err


def test_generate_on_cuda_without_cuda_is_a_usage_error(capsys, tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)  # what a CPU-only build reports
    assert run_cli(["generate", str(tmp_path / "no-model"), "--prompt", "1+1=", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.parametrize("verb", [["run", "add", "1", "1"], ["info", "add"]])
def test_max_len_is_capped_before_compiling(capsys, verb):
    assert run_cli(["conn", verb[0], "--max-len", "2000", *verb[1:]]) == 2
    err = capsys.readouterr().err
    assert "--max-len 2000 is outside 1..256" in err and "compose" in err


def test_generate_ends_the_number(capsys, tiny_model_dir):
    """The issue's case: the tiny model alone writes 57899999; the answer must stop at 5789."""
    assert run_cli(["generate", str(tiny_model_dir), "--prompt", "Q: 4812+977=", "--max-new-tokens", "8"]) == 0
    captured = capsys.readouterr()
    out = captured.out.strip().splitlines()[-1]
    assert out.startswith("5789") and not out[4:5].isdigit(), out
    assert "[conn] add(4812, 977) -> 5789" in captured.err
    assert run_cli(["generate", str(tiny_model_dir), "--prompt", "Q: 4812+977=", "--max-new-tokens", "8",
                    "--conn", "none"]) == 0
    assert not capsys.readouterr().out.startswith("5789")  # the LM alone does not know it


OPS_MODULE = """
from neurosym.conn import register
from neurosym.conn.programs import reverse

register("mirror", lambda n: reverse(n, alphabet="abc"), arity=1, alphabet="abc", default_max_len=8,
         trigger=r"\\bmirror\\(([abc]+)\\)", example=("abc",), replace=True)
"""


@pytest.fixture
def ops_module(tmp_path):
    from neurosym.conn import unregister

    path = tmp_path / "my_ops.py"
    path.write_text(OPS_MODULE)
    yield path
    unregister("mirror")


def test_a_registered_op_is_used_by_conn_run_info_and_generate(capsys, ops_module, tiny_model_dir):
    assert run_cli(["conn", "run", "mirror", "abcc", "--ops-module", str(ops_module)]) == 0
    assert capsys.readouterr().out.strip() == "ccba"
    assert run_cli(["conn", "info", "mirror", "--no-precision", "--ops-module", str(ops_module)]) == 0
    assert capsys.readouterr().out.splitlines()[1].split()[:2] == ["mirror", "8"]
    assert run_cli(["generate", str(tiny_model_dir), "--prompt", "so mirror(aab)=", "--conn", "mirror",
                    "--max-new-tokens", "4", "--ops-module", str(ops_module)]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip().startswith("baa") and "[conn] mirror(aab) -> baa" in captured.err


def test_a_broken_ops_module_is_a_usage_error(capsys, tmp_path):
    bad = tmp_path / "bad_ops.py"
    bad.write_text("raise RuntimeError('boom')\n")
    assert run_cli(["conn", "run", "add", "1", "2", "--ops-module", str(bad)]) == 2
    assert "failed to load: RuntimeError: boom" in capsys.readouterr().err
