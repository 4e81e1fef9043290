import pytest

from neurosym.config.schema import ConfigError, load_config, redact
from tests.support.jobs import write_config


def _cfg_text(tmp_path, body: str):
    (tmp_path / "train.jsonl").write_text('{"prompt": "p", "response": "r"}\n')
    path = tmp_path / "c.yaml"
    path.write_text(body)
    return path


BASE = """\
model:
  name_or_path: tiny://llama
data:
  train: train.jsonl
train:
  max_steps: 3
"""


def test_valid_config_resolves_data_paths_relative_to_the_file(tmp_path):
    cfg = load_config(_cfg_text(tmp_path, BASE))
    assert cfg.data.train == str(tmp_path / "train.jsonl")
    assert cfg.train.max_steps == 3 and cfg.lora.target_modules == "all-linear"
    assert cfg.model.trust_remote_code is False and cfg.model.quantization == "none"


def test_misspelt_key_names_file_line_and_suggests(tmp_path):
    path = _cfg_text(tmp_path, BASE + "  learnig_rate: 1.0e-4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert f"{path}:7" in msg and "unknown key `train.learnig_rate`" in msg and "did you mean `train.lr`" in msg.lower()


def test_unknown_section_and_wrong_type(tmp_path):
    path = _cfg_text(tmp_path, BASE + "  batch_size: four\ntrackin:\n  mode: offline\n")
    msg = str(pytest.raises(ConfigError, load_config, path).value)
    assert f"{path}:7: `train.batch_size`" in msg and "'four'" in msg
    assert "unknown key `trackin`" in msg and "`tracking`" in msg


def test_missing_data_file_names_key_and_line(tmp_path):
    path = _cfg_text(tmp_path, BASE.replace("train.jsonl", "nope.jsonl"))
    msg = str(pytest.raises(ConfigError, load_config, path).value)
    assert f"{path}:4" in msg and "`data.train`" in msg and "nope.jsonl" in msg


def test_steps_or_epochs_exclusive(tmp_path):
    path = _cfg_text(tmp_path, BASE + "  epochs: 2\n")
    assert "exactly one of train.max_steps and train.epochs" in str(pytest.raises(ConfigError, load_config, path).value)


def test_land_after_steps_needs_async(tmp_path):
    path = _cfg_text(tmp_path, BASE + "symbolic:\n  land_after_steps: 2\n")
    msg = str(pytest.raises(ConfigError, load_config, path).value)
    assert "symbolic.land_after_steps needs symbolic.async: true" in msg
    assert load_config(path, ["symbolic.async=true"]).symbolic.land_after_steps == 2


def test_set_overrides_any_key_and_errors_name_the_flag(tmp_path):
    path = _cfg_text(tmp_path, BASE)
    cfg = load_config(path, ["run.name=x", "train.max_steps=40", "tracking.mode=disabled", "train.lr=1e-4",
                             "lora.target_modules=[q_proj, v_proj]"])
    assert (cfg.run.name, cfg.train.max_steps, cfg.tracking.mode, cfg.train.lr) == ("x", 40, "disabled", 1e-4)
    assert cfg.lora.target_modules == ["q_proj", "v_proj"]
    msg = str(pytest.raises(ConfigError, load_config, path, ["train.lr=fast"]).value)
    assert "--set train.lr=fast" in msg
    msg = str(pytest.raises(ConfigError, load_config, path, ["train.gradient_accumulation_steps=2"]).value)
    assert "did you mean `train.grad_accum`" in msg.lower()
    assert "KEY=VALUE" in str(pytest.raises(ConfigError, load_config, path, ["train.lr"]).value)


def test_invalid_yaml_reports_line(tmp_path):
    path = _cfg_text(tmp_path, BASE + "  lr: [1\n")
    assert f"{path}:" in str(pytest.raises(ConfigError, load_config, path).value)


def test_tracking_mode_default(tmp_path, monkeypatch):
    cfg = load_config(_cfg_text(tmp_path, BASE))
    assert cfg.tracking.resolved_mode() == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "k")
    assert cfg.tracking.resolved_mode() == "online"
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert cfg.tracking.resolved_mode() == "disabled"
    monkeypatch.setenv("WANDB_PROJECT", "proj")
    assert cfg.tracking.resolved_project() == "proj"


def test_redact_hides_secret_values_but_keeps_env_names():
    out = redact({"teacher": {"api_key_env": "OPENAI_API_KEY", "api_key": "sk-123", "max_tokens": 5},
                  "x": {"hf_token": "t", "tokens": "many"}})
    assert out == {"teacher": {"api_key_env": "OPENAI_API_KEY", "api_key": "***", "max_tokens": 5},
                   "x": {"hf_token": "***", "tokens": "many"}}


def test_generated_test_config_is_valid(tmp_path, tiny_model_dir):
    cfg = load_config(write_config(tmp_path, tiny_model_dir))
    assert cfg.run_dir == tmp_path / "runs" / "job"


def test_a_plugin_module_beside_or_above_the_config_imports_from_any_directory(tmp_path, tiny_model_dir, monkeypatch):
    """teacher.callable / reward.function / router.function name modules like experiments.testbed.teacher:
    the nearest folder from the config's own up that holds one goes into run.python_path (absolute, so
    the resolved config resumes anywhere), and a job started from another directory imports it."""
    from neurosym.reward import make_reward
    from tests.support.jobs import write_config as job_config

    project = tmp_path / "project"
    (project / "plugins").mkdir(parents=True)
    (project / "plugins" / "__init__.py").write_text("")
    (project / "plugins" / "scores.py").write_text("def half(out, ref):\n    return 0.5\n")
    (project / "configs").mkdir()
    path = job_config(project / "configs", tiny_model_dir, reward={"kind": "function", "function": "plugins.scores:half"},
                      run={"python_path": ["../extra"]})
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    cfg = load_config(path)
    assert cfg.run.python_path == [str(project / "extra"), str(project)]  # relative to the config's folder
    assert make_reward(cfg.reward, cfg.run.python_path)("a", "b") == 0.5
    plain = load_config(job_config(tmp_path / "plain", tiny_model_dir))
    assert plain.run.python_path == []  # nothing to find: nothing added
