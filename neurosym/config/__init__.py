"""The job's configuration: the typed schema, loading a YAML file with ``--set`` overrides, and the
redaction of secrets (``schema``). ``from neurosym.config import load_config, Config, ConfigError``."""
from neurosym.config.schema import (ConfigError, RunConfig, ModelConfig, LoraConfig, DataFields,
                                    DataSource, DataConfig, TrainConfig, TrackingConfig, Price,
                                    TeacherConfig, SymbolicConfig, RemakeConfig, RewardConfig,
                                    Config, redact_url, url_secrets, redact, suggest, load_config,
                                    looks_like_dataset_id, save_resolved)

__all__ = ["ConfigError", "RunConfig", "ModelConfig", "LoraConfig", "DataFields", "DataSource",
           "DataConfig", "TrainConfig", "TrackingConfig", "Price", "TeacherConfig",
           "SymbolicConfig", "RemakeConfig", "RewardConfig", "Config", "redact_url", "url_secrets",
           "redact", "suggest", "load_config", "looks_like_dataset_id", "save_resolved"]
