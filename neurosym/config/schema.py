"""The job's configuration: one YAML file, validated with pydantic before anything heavy loads.

Every error names the file, the line, the key and a fix. Unknown keys are refused with a
"did you mean" suggestion (a typo must never be silently ignored). ``--set a.b=v`` overrides any key.
"""
from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union, get_args

import yaml
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PrivateAttr, Tag, ValidationError,
                      field_validator, model_validator)

from classifiers.config import RouterConfig
from neurosym.errors import UserError
from monitors.config import MonitorsConfig


class ConfigError(UserError, ValueError):
    """A configuration problem a user can fix; the message says what, where and how."""


class _Section(BaseModel):
    # inf/nan are refused everywhere: `lr: .inf` must fail here, not end a run with NaN weights
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


class RunConfig(_Section):
    name: str = Field("run", description="Run name; the run directory is <output_dir>/<name>.")
    output_dir: str = Field("runs", description="Parent folder of run directories (relative to the cwd).")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    python_path: list[str] = Field(
        default_factory=list, description="Folders searched first for the modules teacher.callable, reward.function "
                                          "and router.function name (relative to the config file's folder). The "
                                          "nearest folder from the config file's own up that holds such a module is "
                                          "added when the config loads, so the job runs from any directory.")
    collective_timeout_s: int = Field(
        1800, gt=0, description="Several processes: how long one waits for the others (a teacher call or an "
                                "evaluation on the main process included) before the run ends with a message.")

    @field_validator("name")
    @classmethod
    def _safe_name(cls, v: str) -> str:
        if not v or "/" in v or "\\" in v or v in {".", ".."} or any(ord(c) < 32 for c in v):
            raise ValueError("run.name must be a plain folder name (no '/', no control characters)")
        return v

    @field_validator("output_dir")
    @classmethod
    def _safe_dir(cls, v: str) -> str:
        if not v or "\0" in v:
            raise ValueError("run.output_dir must be a folder path")
        return v


class ModelConfig(_Section):
    name_or_path: str = Field(..., description="Local folder (relative to the config file's folder; a local "
                              "folder wins over a hub id of the same name), hub id, or tiny://llama for a local "
                              "tiny model.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    quantization: Literal["none", "4bit"] = "none"
    trust_remote_code: bool = False
    revision: Optional[str] = None
    attn_implementation: Optional[Literal["sdpa", "eager", "flash_attention_2"]] = Field(
        None, description="Attention kernel passed to from_pretrained (default: transformers' choice, sdpa where "
        "supported). flash_attention_2 needs a CUDA GPU and the flash-attn package; packed rows "
        "(data.packing) then take its varlen path.")
    # the local folder load_config looked for when name_or_path is kept as a hub id (for the error
    # that follows when the hub cannot be reached either)
    _local_tried: Optional[str] = PrivateAttr(None)

    def source_problem(self) -> Optional[str]:
        """Why ``name_or_path`` cannot be loaded, when that is known without the hub: a path (not a hub
        id) whose folder does not exist. None otherwise."""
        name = self.name_or_path
        if "://" in name or Path(name).exists() or looks_like_hub_id(name):
            return None
        return (f"model.name_or_path: no local folder {name}, and it is not a hub id (org/name). Paths are "
                f"relative to the config file's folder.")

    def local_tried(self) -> Optional[str]:
        return self._local_tried


# lora.init -> PEFT's init_lora_weights ("default" is PEFT's True: B = 0, the adapter starts as a no-op)
LORA_INITS = ("default", "gaussian", "pissa", "olora", "orthogonal", "loftq")
LORA_INITS_REFUSED = {
    "eva": "EVA initialises from activations of a pass over the data (peft.initialize_lora_eva_weights), "
           "which neurosym does not run; use pissa or default",
    "corda": "CorDA needs a covariance pass over the data (peft preprocess_corda), which neurosym does not run; "
             "use pissa or default",
    "pissa_niter": "fast PiSSA (randomized SVD) is redone differently when a checkpoint loads, so the adapter "
                   "would not reload to the model that was trained; use pissa (full SVD)",
    "false": "random A and B make the adapter change the model before training; use gaussian or default",
}


class LoraConfig(_Section):
    """The trained adapter (section name kept for old configs): LoRA, with DoRA/rsLoRA flags, or (IA)3."""
    method: Literal["lora", "ia3"] = Field("lora", description="lora (also DoRA/rsLoRA via the flags) or ia3.")
    r: int = Field(8, gt=0, description="LoRA rank (ignored by ia3).")
    alpha: float = Field(16, gt=0, description="LoRA alpha: scaling alpha/r, or alpha/sqrt(r) with use_rslora.")
    dropout: float = Field(0.05, ge=0, lt=1, description="LoRA dropout (ignored by ia3).")
    target_modules: Union[Literal["all-linear"], list[str]] = Field("all-linear", min_length=1)
    use_dora: bool = Field(False, description="DoRA: weight-decomposed LoRA (PEFT's use_dora).")
    use_rslora: bool = Field(False, description="rsLoRA: scale by alpha/sqrt(r) instead of alpha/r.")
    init: str = Field(
        "default", description="LoRA weight initialisation, PEFT's init_lora_weights: default (B = 0), gaussian, "
        "pissa, olora, orthogonal, or loftq (needs bitsandbytes; model.quantization: none). pissa/olora "
        "start from the base's principal directions (PEFT redoes that at load, so checkpoints load as usual).")
    loftq_bits: int = Field(4, ge=2, le=8, description="lora.init: loftq only: bits of LoftQ's quantization.")
    feedforward_modules: Optional[list[str]] = Field(
        None, description="ia3 only: modules whose input (not output) is rescaled; default: PEFT's choice "
                          "for the architecture (e.g. down_proj on Llama).")

    @field_validator("init")
    @classmethod
    def _known_init(cls, v: str) -> str:
        if v in LORA_INITS:
            return v
        key = "pissa_niter" if v.startswith("pissa_niter") else str(v).lower()
        if key in LORA_INITS_REFUSED:
            raise ValueError(f"lora.init {v} cannot run here: {LORA_INITS_REFUSED[key]}")
        raise ValueError(f"lora.init must be one of {', '.join(LORA_INITS)}")

    @model_validator(mode="after")
    def _method_knobs(self):
        if self.method == "ia3" and self.init != "default":
            raise ValueError("lora.init is a LoRA initialisation; with lora.method: ia3 remove it")
        if self.method == "ia3":
            bad = [k for k in ("use_dora", "use_rslora") if getattr(self, k)]
            if bad:
                raise ValueError(f"lora.{bad[0]} is a LoRA flag; with lora.method: ia3 remove it "
                                 f"(or set lora.method: lora)")
        elif self.feedforward_modules is not None:
            raise ValueError("lora.feedforward_modules only applies to lora.method: ia3; remove it")
        return self


class DataFields(_Section):
    """Names of the fields in your records, if they differ from the defaults."""
    prompt: str = "prompt"
    response: str = "response"
    completion: str = "completion"
    system: str = "system"
    instruction: str = "instruction"
    input: str = "input"
    output: str = "output"
    messages: str = "messages"
    conversations: str = "conversations"
    role: Optional[str] = Field(None, description="Role key of a message: `role` (chat) / `from` (ShareGPT).")
    content: Optional[str] = Field(None, description="Text key of a message: `content` (chat) / `value` (ShareGPT).")


DATA_FORMATS = ("auto", "prompt_response", "prompt_completion", "alpaca", "chat", "sharegpt")
DataFormat = Literal["auto", "prompt_response", "prompt_completion", "alpaca", "chat", "sharegpt"]


class DataSource(_Section):
    """One dataset: a file, a `save_to_disk` folder, a local dataset folder or a hub id."""
    path: str = Field(..., description="JSONL/JSON(.gz), .parquet, a dataset folder, or a hub id (org/name).")
    weight: float = Field(1.0, gt=0, allow_inf_nan=False, description="Mixing weight among data.train sources.")
    format: Optional[DataFormat] = Field(None, description="Default: data.format.")
    fields: Optional[DataFields] = Field(None, description="Default: data.fields when the source takes data.format, "
                                         "else the default field names.")
    split: Optional[str] = Field(None, description="For dataset folders / hub ids (default: train).")
    subset: Optional[str] = Field(None, description="Dataset configuration name (datasets' `name`).")
    revision: Optional[str] = None


def _path_or_sources(value) -> str:
    return "path" if isinstance(value, str) else "sources"


# `train: a.jsonl` stays a string; a mapping or a list becomes a list of DataSource. The discriminator
# makes pydantic report only the errors of the shape the user wrote (not one per union member).
_SOURCE_TAGS = ("path", "sources", "source")
TrainSpec = Annotated[Union[Annotated[str, Tag("path")], Annotated[list[DataSource], Tag("sources")]],
                      Discriminator(_path_or_sources)]
EvalSpec = Annotated[Union[Annotated[str, Tag("path")], Annotated[DataSource, Tag("source")]],
                     Discriminator(lambda v: "path" if isinstance(v, str) else "source")]


class DataConfig(_Section):
    train: TrainSpec = Field(
        ..., description="A path or hub id, or a list of {path, weight, format, fields, split, subset} to mix.")
    eval: Optional[EvalSpec] = None
    format: DataFormat = "auto"
    fields: DataFields = DataFields()
    system_prompt: Optional[str] = Field(None, description="Task system prompt (the symbolic route rewrites it).")
    max_length: int = Field(512, gt=8)
    train_on: Literal["last_turn", "assistant", "all"] = Field(
        "last_turn", description="Loss on the last assistant turn, every assistant turn, or every token.")
    packing: bool = Field(False, description="Pack each step's examples into rows of max_length (no cross-attention).")
    on_error: Literal["raise", "skip"] = "raise"

    @field_validator("train", mode="before")
    @classmethod
    def _one_shape(cls, v):
        if isinstance(v, dict):
            v = [v]
        if isinstance(v, list):
            if not v:
                raise ValueError("data.train is an empty list: give at least one path")
            v = [{"path": item} if isinstance(item, str) else item for item in v]
        return v

    def sources(self, split: str = "train") -> list[DataSource]:
        """``data.train`` (or ``data.eval``) as a list of sources with format/fields filled in."""
        return self.resolve(getattr(self, split))

    def resolve(self, value) -> list[DataSource]:
        """A path, a source or a list of them, as sources. A source without its own format takes this
        section's format and fields; one that names another format takes the default field names unless
        it names its own fields (``data.fields`` describe the records of ``data.format``: a chat eval file
        beside a renamed training file must not be read with the training file's names)."""
        if value is None:
            return []
        out = []
        for item in value if isinstance(value, list) else [value]:
            src = DataSource(path=str(item)) if isinstance(item, (str, os.PathLike)) else item
            own_format = src.format is not None and src.format != self.format
            fields = src.fields or (DataFields() if own_format else self.fields)
            out.append(src.model_copy(update={"format": src.format or self.format, "fields": fields}))
        return out


class TrainConfig(_Section):
    batch_size: int = Field(4, gt=0)
    grad_accum: int = Field(1, gt=0)
    global_batch_size: Optional[int] = Field(
        None, gt=0, description="Examples per optimizer step over all processes. Unset: batch_size x grad_accum x "
                                "the number of processes (batch_size is per device). Set it to keep the same step "
                                "whatever the number of processes (resume on another number of GPUs); batch_size "
                                "is then the micro-batch.")
    lr: float = Field(2e-4, gt=0, le=1.0)
    optimizer: Literal["adamw", "adamw_8bit", "paged_adamw_8bit", "paged_adamw_32bit"] = Field(
        "adamw", description="The 8-bit and paged variants are bitsandbytes' (CUDA only).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward (less memory).")
    shared_prefix: bool = Field(True, description="Run the tokens every row of a micro-batch starts with (chat template, "
                                "system prompt) once and share their KV cache with the rows: same loss and gradients, "
                                "less compute under a long system prompt. Used with one process, padded rows, no "
                                "gradient checkpointing and, in a gradient step, no dropout (lora.dropout: 0); "
                                "elsewhere every row runs in full.")
    weight_decay: float = Field(0.0, ge=0)
    scheduler: Literal["constant", "linear", "cosine"] = "cosine"
    warmup: int = Field(0, ge=0, description="Warm-up steps (optimizer steps).")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Warm-up as a share of all steps (if warmup is 0).")
    max_steps: Optional[int] = Field(None, gt=0, le=10**9)
    epochs: Optional[float] = Field(None, gt=0, le=10**6)
    max_grad_norm: Optional[float] = Field(1.0, gt=0, description="Clip threshold; null disables clipping.")
    eval_every: int = Field(0, ge=0, description="0 = only at the end.")
    save_every: int = Field(50, ge=0, description="0 = only at the end (and on Ctrl-C).")
    keep_last_n: int = Field(3, gt=0)
    log_every: int = Field(10, gt=0, description="Progress lines in non-interactive mode.")
    early_stopping_patience: int = Field(0, ge=0, description="Stop after N evaluations without improvement; 0 = off.")
    early_stopping_metric: Literal["eval_loss", "eval_reward"] = "eval_loss"
    early_stopping_min_delta: float = Field(0.0, ge=0)

    @model_validator(mode="after")
    def _steps_or_epochs(self):
        if (self.max_steps is None) == (self.epochs is None):
            raise ValueError("set exactly one of train.max_steps and train.epochs")
        if self.warmup and self.warmup_ratio:
            raise ValueError("set train.warmup (steps) or train.warmup_ratio, not both")
        return self


TRACKING_BACKENDS = ("wandb", "tensorboard", "mlflow")


class TrackingConfig(_Section):
    backends: list[Literal["wandb", "tensorboard", "mlflow"]] = Field(
        ["wandb"], description="Where metrics go, behind the same recorder: wandb (W&B: online or offline "
        "files, see mode), tensorboard (event files in RUN/tensorboard), mlflow (a SQLite store RUN/mlflow.db, "
        "or mlflow_uri). mode: disabled turns them all off.")
    mode: Optional[Literal["disabled", "offline", "online"]] = Field(
        None, description="disabled: no tracker at all. offline/online is W&B's mode. Default: $WANDB_MODE, "
        "else online when WANDB_API_KEY is set, else offline.")
    project: Optional[str] = Field(None, description="W&B project and MLflow experiment (default neurosym).")
    entity: Optional[str] = None
    tags: list[str] = []
    mlflow_uri: Optional[str] = Field(
        None, description="MLflow tracking URI (a server http://..., or sqlite:///...). Default: "
        "$MLFLOW_TRACKING_URI, else sqlite:///RUN/mlflow.db with artifacts in RUN/mlartifacts.")

    @field_validator("backends")
    @classmethod
    def _unique(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError("tracking.backends names a backend twice")
        return v

    def resolved_mode(self) -> str:
        if self.mode:
            return self.mode
        env = os.environ.get("WANDB_MODE")
        if env in {"disabled", "offline", "online"}:
            return env
        if env == "dryrun":
            return "offline"
        return "online" if os.environ.get("WANDB_API_KEY") else "offline"

    def resolved_project(self) -> str:
        return self.project or os.environ.get("WANDB_PROJECT") or "neurosym"


class Price(_Section):
    """USD per 1k tokens. Both unset (the default): the price LiteLLM's bundled cost map gives
    ``teacher.model`` (read offline), else 0 with a warning that ``budget_usd`` cannot be enforced.
    One set: the other is 0."""
    input: Optional[float] = Field(None, ge=0, allow_inf_nan=False, description="USD per 1k prompt tokens.")
    output: Optional[float] = Field(None, ge=0, allow_inf_nan=False, description="USD per 1k completion tokens.")


class TeacherConfig(_Section):
    provider: Literal["openai", "local", "python"] = "openai"
    model: str = "gpt-4o-mini"
    callable: Optional[str] = Field(None, description="provider python: 'module:function' called with "
                                    "(messages, model=, temperature=, max_tokens=) that returns the reply text.")
    base_url: Optional[str] = Field(None, description="OpenAI-compatible endpoint; None = api.openai.com.")
    api_key_env: str = Field("OPENAI_API_KEY", description="Name of the environment variable holding the key.")
    timeout_s: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0)
    max_concurrency: int = Field(4, gt=0)
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(1024, gt=0)
    price_per_1k_tokens: Price = Price()
    budget_usd: Optional[float] = Field(None, ge=0, allow_inf_nan=False)
    max_response_chars: int = Field(20_000, gt=0, description="Longest teacher answer accepted; a longer "
                                    "one is a teacher fault (never stored).")

    @model_validator(mode="after")
    def _callable_for_python(self):
        if self.provider == "python" and (not self.callable or self.callable.count(":") != 1):
            raise ValueError("teacher.provider: python needs teacher.callable as 'module:function'")
        return self


class SymbolicConfig(_Section):
    async_: bool = Field(False, alias="async", description="Run symbolic updates on a worker pool.")
    max_inflight: int = Field(2, gt=0)
    land_after_steps: Optional[int] = Field(
        None, gt=0, description="With async: an update submitted at step s lands at step s+N, the loop waiting "
        "for the teacher if it is slower, so the run is the same whatever the speed of the teacher, the machine "
        "or the number of processes. Unset: an update lands at the first step after it finished.")
    constraints: list[str] = ["Keep the prompt under 120 words.", "Never state the answer to any example."]
    max_prompt_chars: int = Field(2000, gt=0)
    rewrite_examples: bool = True
    max_rewrites_per_batch: int = Field(4, ge=0)
    max_new_tokens: int = Field(32, gt=0, description="Student generation length during symbolic updates.")
    validate_prompt: bool = Field(
        False, description="Keep a new system prompt only if the student's reward (reward.kind) on the batch + "
        "the probe set (reward.probe) is no worse under it (on a tie, the reference answers' loss decides); "
        "otherwise the old prompt stays and the event says why. A wrong edit by the teacher then costs its calls, not the run.")
    on_teacher_down: Literal["continue", "stop"] = Field(
        "continue", description="A teacher that refuses us for good mid-run (401/403/404): continue LoRA-only "
        "(said loudly) or stop the run.")
    down_after_failures: int = Field(3, gt=0, description="Consecutive teacher failures before the route pauses.")
    down_for_steps: int = Field(20, ge=0, description="Steps the route stays paused before it is tried again.")

    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    @model_validator(mode="after")
    def _land_after_needs_async(self):
        if self.land_after_steps is not None and not self.async_:
            raise ValueError("symbolic.land_after_steps needs symbolic.async: true (a synchronous update lands "
                             "at once); set async: true or remove land_after_steps")
        return self


class RemakeConfig(_Section):
    mix_ratio: float = Field(0.0, ge=0, le=1, description="placement=add: refined examples added on top of each "
                                                          "batch's task rows, as a share of the batch (0.25 of 8 rows: 2 "
                                                          "more). 0: refined examples are stored with their provenance "
                                                          "and exported (neurosym export), not trained on (issue 20: on "
                                                          "the testbed 0.25 cost the hybrid 30% more compute for no "
                                                          "accuracy a paired test could see).")
    placement: Literal["add", "replace_parent"] = Field(
        "add", description="Where refined examples go: 'add' puts them on top of the task rows (the batch grows); "
                           "'replace_parent' trains a drawn row in its newest rewritten form instead. Neither takes "
                           "a task row's slot.")


class RewardConfig(_Section):
    kind: Literal["exact_match", "numeric_match", "regex", "neg_loss", "function"] = "neg_loss"
    pattern: Optional[str] = None
    function: Optional[str] = Field(None, description="module:function(output, reference) -> float")
    probe: Optional[str] = Field(None, description="JSONL of held-out probe examples (default: from eval).")
    probe_size: int = Field(8, gt=0)
    gain_from: Literal["reward", "loss"] = Field(
        "reward", description="How a learning router's gain is measured: the reward itself (generation rewards "
                              "answer batch + probe before and after), or the loss of the reference answers "
                              "(one forward pass; a cheaper proxy of the same direction).")
    gain_every: int = Field(1, gt=0, description="Measure the gain (and let the router learn) every N steps, and on "
                                                 "every step while the router warms up or has a route it never learnt from.")

    @model_validator(mode="after")
    def _needs(self):
        if self.kind == "regex" and not self.pattern:
            raise ValueError("reward.kind=regex needs reward.pattern")
        if self.kind == "function" and (not self.function or ":" not in self.function):
            raise ValueError("reward.kind=function needs reward.function as 'module:function'")
        return self


class Config(_Section):
    run: RunConfig = RunConfig()
    model: ModelConfig
    lora: LoraConfig = LoraConfig()
    data: DataConfig
    train: TrainConfig
    tracking: TrackingConfig = TrackingConfig()
    teacher: TeacherConfig = TeacherConfig()
    symbolic: SymbolicConfig = SymbolicConfig()
    remake: RemakeConfig = RemakeConfig()
    router: RouterConfig = RouterConfig()
    monitors: MonitorsConfig = MonitorsConfig()
    reward: RewardConfig = RewardConfig()

    @property
    def run_dir(self) -> Path:
        return Path(self.run.output_dir) / self.run.name

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True)


# ----------------------------------------------------------------------------------------------
# Loading

SECRET_KEY = re.compile(r"(^|_)(api_?key|token|secret|password|auth)$")
SECRET_PARAM = re.compile(r"(^|[_-])(api_?key|key|token|secret|password|auth|sig|signature|code)$", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<userinfo>[^/?#\s]*)@")
_URL_QUERY_PARAM = re.compile(r"(?P<sep>[?&;])(?P<name>[^=&#\s]+)=(?P<value>[^&#\s]*)")


def redact_url(text: str) -> str:
    """``text`` with URL credentials replaced by ``***``: the user info of every URL in it
    (``https://user:pass@host`` -> ``https://***@host``) and secret-looking query parameters
    (``?api-key=...``, ``&token=...``, ``&sig=...``)."""
    if not isinstance(text, str) or "://" not in text:
        return text
    text = _URL_USERINFO.sub(lambda m: f"{m['scheme']}***@", text)
    return _URL_QUERY_PARAM.sub(
        lambda m: f"{m['sep']}{m['name']}=***" if SECRET_PARAM.search(m["name"]) else m.group(0), text)


def url_secrets(url: Optional[str]) -> list[str]:
    """The credential strings inside ``url`` (user, password, secret query values), to scrub them
    from any text (an error message that quotes them without the URL around them)."""
    if not url or "://" not in url:
        return []
    from urllib.parse import unquote

    found = []
    m = _URL_USERINFO.search(url)
    if m and m["userinfo"]:
        for part in m["userinfo"].split(":", 1):
            if part:
                found += [part, unquote(part)]
    for q in _URL_QUERY_PARAM.finditer(url):
        if SECRET_PARAM.search(q["name"]) and q["value"]:
            found += [q["value"], unquote(q["value"])]
    return sorted({s for s in found if len(s) >= 3}, key=len, reverse=True)


def redact(obj: Any, key: str = "") -> Any:
    """Replace string values of secret-looking keys (``api_key``, ``hf_token``; not ``api_key_env``,
    which names a variable, nor ``max_tokens``), and the credentials inside any URL value
    (``teacher.base_url: https://user:pass@host`` is written ``https://***@host``)."""
    if isinstance(obj, dict):
        return {k: redact(v, k) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v, key) for v in obj]
    if isinstance(obj, str) and obj and SECRET_KEY.search(key.lower()):
        return "***"
    if isinstance(obj, str):
        return redact_url(obj)
    return obj


def _key_lines(node, prefix=()) -> dict[tuple, int]:
    """Map each key path in a composed YAML document to its 1-based line number."""
    lines: dict[tuple, int] = {}
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            path = prefix + (k.value,)
            lines[path] = k.start_mark.line + 1
            lines.update(_key_lines(v, path))
    elif isinstance(node, yaml.SequenceNode):  # list items (data.train sources) as path + (index,)
        for i, v in enumerate(node.value):
            lines[prefix + (str(i),)] = v.start_mark.line + 1
            lines.update(_key_lines(v, prefix + (str(i),)))
    return lines


def _parse_override(item: str) -> tuple[list[str], Any]:
    if "=" not in item:
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.lr=1e-4")
    key, raw = item.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw != "" else ""
    except yaml.YAMLError:
        value = raw
    return key.strip().split("."), value


def _apply_override(raw: dict, path: list[str], value: Any, item: str) -> None:
    node = raw
    for part in path[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ConfigError(f"--set {item}: `{part}` is not a section")
        node = nxt
    node[path[-1]] = value


def _model_at(loc: tuple) -> type[BaseModel] | None:
    """The pydantic model that owns the last element of ``loc`` (for suggestions)."""
    model: Any = Config
    for part in loc[:-1]:
        if part.isdigit():  # an index into a list of sections (data.train.0)
            continue
        field = model.model_fields.get(part) if hasattr(model, "model_fields") else None
        if field is None:
            return None
        model = _section_in(field.annotation)
        if model is None:
            return None
    return model


def _section_in(annotation):
    """The section model inside an annotation (itself, or inside Optional/Union/list/Annotated)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in get_args(annotation):
        found = _section_in(arg)
        if found is not None:
            return found
    return None


# Names other tools use for our keys, so a habit from HF Trainer or axolotl gets a useful hint.
SYNONYMS = {
    "learning_rate": "lr", "lr_scheduler": "scheduler", "lr_scheduler_type": "scheduler",
    "warmup_steps": "warmup", "gradient_accumulation_steps": "grad_accum", "micro_batch_size": "batch_size",
    "per_device_train_batch_size": "batch_size", "num_epochs": "epochs", "num_train_epochs": "epochs",
    "max_seq_length": "max_length", "sequence_len": "max_length", "lora_r": "r", "lora_alpha": "alpha",
    "lora_dropout": "dropout", "base_model": "name_or_path", "model_name": "name_or_path",
    "torch_dtype": "dtype", "load_in_4bit": "quantization", "eval_steps": "eval_every",
    "save_steps": "save_every", "save_total_limit": "keep_last_n", "wandb_project": "project",
}


def suggest(key: str, names: list[str]) -> str | None:
    """Closest valid key to a misspelt one, also through common synonyms (learnig_rate -> lr)."""
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    if close:
        return close[0]
    for alias in difflib.get_close_matches(key, list(SYNONYMS), n=3, cutoff=0.75):
        if SYNONYMS[alias] in names:
            return SYNONYMS[alias]
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
    return close[0] if close else None


def _field_names(model: type[BaseModel]) -> list[str]:
    return [f.alias or n for n, f in model.model_fields.items()]


def _format_errors(err: ValidationError, source: str, lines: dict, overridden: dict) -> str:
    out = []
    for e in err.errors():
        loc = tuple(str(p) for p in e["loc"] if p not in _SOURCE_TAGS)  # drop union tags (data.train)
        dotted = ".".join(loc)
        where = source
        if loc in overridden:
            where = f"--set {overridden[loc]}"
        else:
            for n in range(len(loc), 0, -1):
                if loc[:n] in lines:
                    where = f"{source}:{lines[loc[:n]]}"
                    break
        if e["type"] == "extra_forbidden":
            owner = _model_at(loc)
            hint = ""
            if owner is not None:
                names = _field_names(owner)
                close = suggest(loc[-1], names)
                section = ".".join(loc[:-1])
                prefix = f"{section}." if section else ""
                hint = (f" Did you mean `{prefix}{close}`?" if close
                        else f" Valid keys here: {', '.join(names)}.")
            out.append(f"{where}: unknown key `{dotted}`.{hint}")
        elif e["type"] == "missing":
            out.append(f"{where}: missing required key `{dotted}`. Add it to the config.")
        else:
            got = e.get("input")
            got_s = f" (got {got!r})" if not isinstance(got, dict) else ""
            msg = e["msg"]
            if msg.startswith("Value error, "):
                msg = msg[len("Value error, "):]
            key = f"`{dotted}`: " if dotted else ""
            out.append(f"{where}: {key}{msg}{got_s}")
    return "\n".join(out)


def load_config(path: str | os.PathLike, overrides: list[str] | tuple = (), check_files: bool = True) -> Config:
    """Read, override, validate. Data paths are resolved relative to the config file's folder."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file not found: {path}")
    if path.is_dir():
        raise ConfigError(f"{path} is a folder; pass a YAML config file (e.g. experiments/tiny.yaml)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (UTF-8) file; pass a YAML config file") from None
    if "\0" in text:
        raise ConfigError(f"{path} contains NUL bytes; pass a YAML config file")
    try:
        doc = yaml.compose(text)
        raw = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections (run:, model:, data:, ...)")
    lines = _key_lines(doc) if doc is not None else {}
    overridden: dict[tuple, str] = {}
    for item in overrides:
        keys, value = _parse_override(item)
        if _is_text_key(keys) and not isinstance(value, str):
            value = item.split("=", 1)[1]  # a text key keeps the text as typed ("Solve it: show steps")
        _apply_override(raw, keys, value, item)
        overridden[tuple(keys)] = item
    base = path.resolve().parent
    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("train", "eval"):
            if key in data:
                data[key] = _resolve_sources(data[key], base)
    reward = raw.get("reward")
    if isinstance(reward, dict) and isinstance(reward.get("probe"), str):
        reward["probe"] = _resolve(reward["probe"], base)
    _resolve_python_path(raw, base)
    model, tried = raw.get("model"), None
    if isinstance(model, dict) and isinstance(model.get("name_or_path"), str):
        model["name_or_path"], tried = resolve_model_path(model["name_or_path"], base)
    try:
        cfg = Config.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(f"invalid config {path}:\n" + _format_errors(err, str(path), lines, overridden)) from None
    cfg.model._local_tried = tried
    if check_files:
        # (section, key, index in a list of sources or None, path)
        paths = [("data", split, i if isinstance(getattr(cfg.data, split), list) else None, s.path)
                 for split in ("train", "eval") for i, s in enumerate(cfg.data.sources(split))]
        paths.append(("reward", "probe", None, cfg.reward.probe))
        missing = []  # every missing path in one message, not the first one per run
        for section, key, i, value in paths:
            if value and not Path(value).exists() and not (key != "probe" and looks_like_dataset_id(value)):
                loc = (section, key)
                line = lines.get(loc + (str(i), "path"), lines.get(loc + (str(i),))) if i is not None else None
                where = (f"--set {overridden[loc]}" if loc in overridden
                         else f"{path}:{line or lines.get(loc, '?')}")
                name = f"{section}.{key}" + (f".{i}.path" if i is not None else "")  # as the schema errors say
                missing.append(f"{where}: `{name}` points to a missing file: {value}")
        if missing:
            raise ConfigError("\n".join(missing) + f"\n  Paths are relative to the config file's folder ({base}).")
    return cfg


def _is_text_key(keys: list[str]) -> bool:
    """Whether the field at ``keys`` takes only text (str or Optional[str]), so YAML must not parse it."""
    import typing
    owner = _model_at(tuple(keys))
    field = owner.model_fields.get(keys[-1]) if owner is not None else None
    if field is None:
        return False
    ann = field.annotation
    return ann is str or (typing.get_origin(ann) is Union and set(typing.get_args(ann)) <= {str, type(None)})


_DATASET_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[\w.-]+)?$")
_FILE_SUFFIXES = (".jsonl", ".json", ".gz", ".parquet", ".csv", ".txt", ".bz2", ".xz", ".zst")


def looks_like_dataset_id(value: str) -> bool:
    """`org/name` or `name` with no data-file suffix: a hub id for `datasets.load_dataset`."""
    return bool(_DATASET_ID.match(value)) and not value.lower().endswith(_FILE_SUFFIXES)


_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


def looks_like_hub_id(value: str) -> bool:
    """``org/name`` or ``name`` as the hub spells a repository id (no ``./``, ``..``, ``~`` or absolute path)."""
    return bool(_HUB_ID.match(value)) and ".." not in value and not value.endswith(".")


PLUGIN_KEYS = (("teacher", "callable"), ("reward", "function"), ("router", "function"))


def _resolve_python_path(raw: dict, base: Path) -> None:
    """``run.python_path`` made absolute (relative to the config file's folder), plus, for each module a
    plugin key names, the nearest folder from ``base`` up that holds it (``pkg/mod.py`` or
    ``pkg/mod/__init__.py``), so that the import does not depend on the current directory."""
    run = raw.get("run")
    if run is not None and not isinstance(run, dict):
        return  # validation names the bad section
    given = (run or {}).get("python_path", [])
    if not isinstance(given, list) or not all(isinstance(p, str) for p in given):
        return  # validation names the bad key
    folders = [_resolve(p, base) for p in given]
    for section, key in PLUGIN_KEYS:
        spec = (raw.get(section) or {}).get(key) if isinstance(raw.get(section), dict) else None
        if not isinstance(spec, str) or spec.count(":") != 1 or not spec.split(":")[0]:
            continue
        rel = Path(*spec.split(":")[0].split("."))
        for folder in (base, *base.parents):
            if (folder / rel).with_suffix(".py").is_file() or (folder / rel / "__init__.py").is_file():
                if str(folder) not in folders:
                    folders.append(str(folder))
                break
    if folders:
        raw.setdefault("run", {})["python_path"] = folders


def resolve_model_path(value: str, base: Path) -> tuple[str, Optional[str]]:
    """``model.name_or_path`` by the rule every path of a config follows: relative to the config file's
    folder ``base``. A local folder there wins (made absolute); else a hub id stays a hub id, and the
    local path that was tried is returned beside it (for the error if the hub cannot be reached
    either); else (a path that does not exist) the absolute path, for the error to name.
    ``tiny://``/``testbed://`` names pass unchanged."""
    if "://" in value or not value.strip():
        return value, None
    local = _resolve(value, base)
    if Path(local).exists():
        return local, None
    if looks_like_hub_id(value):
        return value, local
    return local, local


def _resolve_sources(value, base: Path):
    """Data paths relative to the config's folder; a hub id that is not a local path stays as it is."""
    def one(path: str) -> str:
        resolved = _resolve(path, base)
        return path if not Path(resolved).exists() and looks_like_dataset_id(path) else resolved
    if isinstance(value, str):
        return one(value)
    if isinstance(value, dict) and isinstance(value.get("path"), str):
        return {**value, "path": one(value["path"])}
    if isinstance(value, list):
        return [_resolve_sources(v, base) for v in value]
    return value


def _resolve(value: str, base: Path) -> str:
    p = Path(os.path.expanduser(value))
    return str(p if p.is_absolute() else (base / p).resolve())


def save_resolved(cfg: Config, path: Path) -> None:
    """Write the resolved config (secrets redacted) so `neurosym resume` can rebuild the job."""
    from neurosym.persist.atomic import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(redact(cfg.to_dict()), sort_keys=False))
