"""Where a module comes from: a run directory, a checkpoint folder or any PEFT adapter folder.

Everything here reads small JSON/YAML files only, so every check can run before a model loads.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from neurosym.model.load import ModelError
from neurosym.persist.rundir import RunDir

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HASHED_FILES = (ADAPTER_CONFIG, ADAPTER_WEIGHTS)
_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,63}$")


class ComposeError(ModelError):
    """A composition cannot be built as asked; the message says which module, why, and how to fix it."""


@dataclass(frozen=True)
class BaseRef:
    """The base model a module was trained on (what the manifest records and ``load`` loads)."""
    name_or_path: str
    revision: Optional[str] = None
    quantization: str = "none"
    dtype: str = "auto"
    trust_remote_code: bool = False

    def model_config(self, **update):
        from neurosym.config.schema import ModelConfig
        fields = dict(name_or_path=self.name_or_path, revision=self.revision, quantization=self.quantization,
                      dtype=self.dtype, trust_remote_code=self.trust_remote_code)
        fields.update(update)
        return ModelConfig(**fields)

    def as_dict(self) -> dict:
        return {"name_or_path": self.name_or_path, "revision": self.revision, "quantization": self.quantization,
                "dtype": self.dtype, "trust_remote_code": self.trust_remote_code}

    @property
    def identity(self) -> tuple[str, Optional[str]]:
        """What must match between modules: the base's name (a local path resolved) and its revision."""
        name = self.name_or_path
        if "://" not in name and Path(name).exists():
            name = str(Path(name).resolve())
        return name, self.revision


@dataclass
class AdapterSource:
    name: str
    given: str                    # the path as the user gave it
    adapter_dir: Path             # the folder holding adapter_config.json + adapter_model.safetensors
    config: dict                  # adapter_config.json
    base: BaseRef
    run_dir: Optional[Path] = None
    weight: float = 1.0
    hashes: dict = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return str(self.config.get("peft_type", "?")).lower()

    @property
    def rank(self) -> int:
        r = int(self.config.get("r") or 0)
        pattern = self.config.get("rank_pattern") or {}
        return max([r, *pattern.values()]) if pattern else r

    @property
    def target_modules(self) -> str:
        t = self.config.get("target_modules")
        return ", ".join(sorted(t)) if isinstance(t, (list, tuple, set)) else str(t)

    @property
    def scaling(self) -> float:
        """LoRA's scale s (alpha/r, or alpha/sqrt(r) with rsLoRA)."""
        r, alpha = int(self.config["r"]), float(self.config["lora_alpha"])
        return alpha / (r ** 0.5) if self.config.get("use_rslora") else alpha / r


def file_hashes(adapter_dir: Path) -> dict:
    """sha256 of the files that define a module (its config and its weights)."""
    out = {}
    for fname in HASHED_FILES:
        h = hashlib.sha256()
        with open(adapter_dir / fname, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        out[fname] = h.hexdigest()
    return out


def _json_kind(value) -> str:
    return {list: "list", str: "string", int: "number", float: "number", bool: "boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def _run_model(run_dir: Path) -> BaseRef:
    from neurosym.config.schema import load_config

    m = load_config(RunDir(run_dir).config, check_files=False).model
    return BaseRef(m.name_or_path, m.revision, m.quantization, m.dtype, m.trust_remote_code)


def local_first(name_or_path: str) -> str:
    """A base named on the command line or in an adapter's config, read as ``from_pretrained`` reads it:
    an existing local path (relative to the working directory) made absolute, so it means the same
    folder from anywhere; a hub id or ``tiny://`` name unchanged."""
    if "://" not in name_or_path and name_or_path.strip() and Path(name_or_path).exists():
        return str(Path(name_or_path).resolve())
    return name_or_path


def resolve(name: str, path: str, weight: float = 1.0, base: Optional[str] = None) -> AdapterSource:
    """One module from a run directory (its newest complete checkpoint), a checkpoint or a PEFT folder.

    ``base``: the base model (hub id or folder) of a PEFT folder whose config does not name one."""
    from neurosym.persist.checkpoint import latest_checkpoint

    if not _NAME.match(name):
        raise ComposeError(f"--adapter {name}={path}: the name must start with a letter and hold only letters, "
                           f"digits, '_' or '-' (it becomes a PEFT adapter name)")
    p = Path(path)
    if not p.exists():
        raise ComposeError(f"--adapter {name}={path}: no such file or folder")
    run_dir = None
    if RunDir(p).config.is_file() and RunDir(p).checkpoints.is_dir():
        run_dir = p
        adapter_dir = latest_checkpoint(p)
        if adapter_dir is None:
            raise ComposeError(f"--adapter {name}={path}: run directory with no complete checkpoint yet "
                               f"(train it, or pass a PEFT adapter folder)")
    else:
        adapter_dir = p
        owner = RunDir.of_checkpoint(p)
        run_dir = owner.path if owner else None
    if not (adapter_dir / ADAPTER_CONFIG).is_file():
        raise ComposeError(f"--adapter {name}={path}: not a run directory, checkpoint or PEFT adapter folder "
                           f"(no {ADAPTER_CONFIG} in {adapter_dir})")
    if not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        extra = (" (adapter_model.bin is a pickle, which neurosym never loads: re-save it with "
                 "safe_serialization=True)") if (adapter_dir / "adapter_model.bin").exists() else ""
        raise ComposeError(f"--adapter {name}={path}: {ADAPTER_WEIGHTS} is missing in {adapter_dir}{extra}")
    cfg_path = adapter_dir / ADAPTER_CONFIG
    try:
        config = json.loads(cfg_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ComposeError(f"{cfg_path}: not valid JSON ({exc}); re-save the adapter with "
                           f"PeftModel.save_pretrained") from None
    except OSError as exc:
        raise ComposeError(f"--adapter {name}={path}: cannot read {cfg_path} ({exc.strerror or exc})") from None
    if not isinstance(config, dict):
        raise ComposeError(f"{cfg_path}: expected a JSON object (PEFT's adapter config: "
                           f'{{"peft_type": "LORA", "r": 8, ...}}), got a JSON {_json_kind(config)}; re-save the '
                           f"adapter with PeftModel.save_pretrained, or pass the folder of the right adapter")
    for key, types in (("peft_type", (str,)), ("base_model_name_or_path", (str, type(None))),
                       ("revision", (str, type(None))), ("r", (int, type(None)))):
        if key in config and (not isinstance(config[key], types) or isinstance(config[key], bool)):
            raise ComposeError(f"{cfg_path}: key {key!r} is {config[key]!r}, not a "
                               f"{' or '.join('null' if t is type(None) else t.__name__ for t in types)}; "
                               f"re-save the adapter with PeftModel.save_pretrained")
    if run_dir is not None:
        ref = _run_model(run_dir)     # its config's paths are already absolute (load_config resolved them)
    else:
        named = config.get("base_model_name_or_path") or base
        if not named:
            raise ComposeError(f"{adapter_dir / ADAPTER_CONFIG} does not name its base model "
                               f"(base_model_name_or_path); pass --base NAME_OR_PATH (compose(..., base=...))")
        ref = BaseRef(local_first(named), config.get("revision"))
    return AdapterSource(name=name, given=str(path), adapter_dir=adapter_dir, config=config, base=ref,
                         run_dir=run_dir, weight=weight, hashes=file_hashes(adapter_dir))
