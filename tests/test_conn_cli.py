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
    assert run_cli(["conn", "run", *argv]) == 1
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_conn_info_lists_every_op(capsys):
    assert run_cli(["conn", "info"]) == 0
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
    assert run_cli(["generate", str(tmp_path / "missing"), "--prompt", "1+1="]) == 1
    assert "could not load model" in capsys.readouterr().err


def test_generate_rejects_unknown_conn(capsys):
    with pytest.raises(SystemExit):
        run_cli(["generate", "m", "--prompt", "x", "--conn", "add,multiply"])
    assert "unknown operation(s) multiply" in capsys.readouterr().err
