"""The adapter a job trains: LoRA (DoRA, rsLoRA flags) or (IA)3, from the ``lora:`` config section."""
from __future__ import annotations

import json

import pytest
import yaml

from neurosym.model.adapters import build_peft_config
from neurosym.config.schema import ConfigError, LoraConfig, load_config
from tests.support.jobs import write_config


def test_old_lora_section_still_loads_as_plain_lora(tmp_path, tiny_model_dir):
    cfg = load_config(write_config(tmp_path, tiny_model_dir))
    assert cfg.lora.method == "lora" and not cfg.lora.use_dora and not cfg.lora.use_rslora
    peft_cfg = build_peft_config(cfg.lora)
    assert type(peft_cfg).__name__ == "LoraConfig"
    assert (peft_cfg.r, peft_cfg.lora_alpha, peft_cfg.lora_dropout) == (4, 8, 0.1)


def test_dora_and_rslora_flags_reach_peft():
    peft_cfg = build_peft_config(LoraConfig(r=16, alpha=8, use_dora=True, use_rslora=True))
    assert peft_cfg.use_dora is True and peft_cfg.use_rslora is True and peft_cfg.r == 16


def test_ia3_uses_peft_defaults_unless_targets_are_written():
    default = build_peft_config(LoraConfig(method="ia3"))
    assert type(default).__name__ == "IA3Config" and default.target_modules is None  # PEFT picks per model
    explicit = build_peft_config(LoraConfig(method="ia3", target_modules=["v_proj", "down_proj"],
                                            feedforward_modules=["down_proj"]))
    assert set(explicit.target_modules) == {"v_proj", "down_proj"}
    assert set(explicit.feedforward_modules) == {"down_proj"}
    with pytest.raises(ValueError, match="not in lora.target_modules"):
        build_peft_config(LoraConfig(method="ia3", target_modules=["v_proj"], feedforward_modules=["down_proj"]))


@pytest.mark.parametrize("bad, message", [
    ({"method": "ia3", "use_dora": True}, "use_dora is a LoRA flag"),
    ({"method": "lora", "feedforward_modules": ["down_proj"]}, "only applies to lora.method: ia3"),
    ({"method": "prefix"}, "lora.method"),
])
def test_bad_adapter_settings_are_refused_with_the_key(tmp_path, tiny_model_dir, bad, message):
    path = write_config(tmp_path, tiny_model_dir, lora=bad)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize("lora", [
    {"method": "ia3"},
    {"use_dora": True, "use_rslora": True},
], ids=["ia3", "dora+rslora"])
def test_the_job_trains_and_saves_each_kind(tmp_path, tiny_model_dir, lora):
    from neurosym.train import train

    cfg = load_config(write_config(tmp_path, tiny_model_dir, lora=lora,
                                   train={"max_steps": 3, "save_every": 3, "eval_every": 0}))
    out = train(cfg, quiet=True)
    ckpt = sorted((out.run_dir / "checkpoints").iterdir())[-1]
    saved = json.loads((ckpt / "adapter_config.json").read_text())
    if lora.get("method") == "ia3":
        assert saved["peft_type"] == "IA3"
        assert set(saved["target_modules"]) == {"k_proj", "v_proj", "down_proj"}
    else:
        assert saved["peft_type"] == "LORA" and saved["use_dora"] and saved["use_rslora"]
    assert yaml.safe_load((out.run_dir / "config.yaml").read_text())["lora"]["method"] == lora.get("method", "lora")
