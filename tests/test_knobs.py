"""model.attn_implementation and lora.init: each value reaches transformers/PEFT; a bad one fails at
load naming the key and the file; what cannot run on this machine is refused with the reason."""
import json

import pytest
import torch

from neurosym.cli import main
from neurosym.config.schema import ConfigError, load_config
from neurosym.model.load import ModelError, load_for_training
from tests.support.jobs import write_config


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_attn_implementation_reaches_the_model(tmp_path, tiny_model_dir, attn):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, model={"attn_implementation": attn}))
    model, *_ = load_for_training(cfg, tmp_path / ".models")
    assert model.get_base_model().config._attn_implementation == attn


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal is for machines without CUDA")
def test_flash_attention_is_refused_on_cpu(tmp_path, tiny_model_dir):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, model={"attn_implementation": "flash_attention_2"}))
    with pytest.raises(ModelError, match="model.attn_implementation: flash_attention_2 needs a CUDA GPU"):
        load_for_training(cfg, tmp_path / ".models")


def test_bad_values_fail_at_load_naming_the_key_and_the_file(tmp_path, tiny_model_dir):
    path = write_config(tmp_path, tiny_model_dir, model={"attn_implementation": "flash"})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:" in str(err.value) and "model.attn_implementation" in str(err.value) and "sdpa" in str(err.value)
    path = write_config(tmp_path, tiny_model_dir, lora={"init": "xavier"})
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:" in str(err.value) and "lora.init" in str(err.value) and "pissa" in str(err.value)
    for init, why in (("eva", "pass over the data"), ("corda", "pass over the data"),
                      ("pissa_niter_4", "randomized SVD")):
        with pytest.raises(ConfigError, match=f"lora.init {init} cannot run here: .*{why}"):
            load_config(write_config(tmp_path, tiny_model_dir, lora={"init": init}))
    with pytest.raises(ConfigError, match="lora.init is a LoRA initialisation"):
        load_config(write_config(tmp_path, tiny_model_dir, lora={"method": "ia3", "init": "pissa"}))


@pytest.mark.parametrize("init", ["gaussian", "olora", "orthogonal"])
def test_lora_init_reaches_peft(tmp_path, tiny_model_dir, init):
    cfg = load_config(write_config(tmp_path, tiny_model_dir, lora={"init": init}))
    model, *_ = load_for_training(cfg, tmp_path / ".models")
    assert model.peft_config["default"].init_lora_weights == init


def test_default_init_is_peft_default(tmp_path, tiny_model_dir):
    model, *_ = load_for_training(load_config(write_config(tmp_path, tiny_model_dir)), tmp_path / ".models")
    assert model.peft_config["default"].init_lora_weights is True
    assert all(float(p.detach().abs().max()) == 0 for n, p in model.named_parameters() if "lora_B" in n)


def test_a_pissa_run_reloads_to_the_model_it_trained(tmp_path, tiny_model_dir, capsys):
    """PiSSA moves the base's principal part into the adapter; PEFT redoes that when a checkpoint loads,
    so `eval` (base + saved adapter) computes the loop's own eval loss."""
    cfg = write_config(tmp_path, tiny_model_dir, lora={"init": "pissa"},
                       train={"max_steps": 2, "save_every": 2, "eval_every": 2})
    assert main(["train", str(cfg), "--quiet"]) == 0
    run = tmp_path / "runs" / "job"
    adapter = json.loads((run / "checkpoints" / "step-2" / "adapter_config.json").read_text())
    assert adapter["init_lora_weights"] == "pissa"
    capsys.readouterr()
    assert main(["eval", str(run)]) == 0
    result = json.loads(capsys.readouterr().out)
    last = [json.loads(line) for line in open(run / "events.jsonl") if '"eval"' in line][-1]
    assert result["loss"] == pytest.approx(last["eval_loss"], rel=1e-5)


def test_loftq_without_bitsandbytes_is_refused_with_the_reason(tmp_path, tiny_model_dir, monkeypatch):
    import importlib.util
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "bitsandbytes" else real(name, *a))
    cfg = load_config(write_config(tmp_path, tiny_model_dir, lora={"init": "loftq"}))
    with pytest.raises(ModelError, match="lora.init: loftq needs bitsandbytes"):
        load_for_training(cfg, tmp_path / ".models")
