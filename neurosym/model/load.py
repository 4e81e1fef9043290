"""Loading the base model and tokenizer, and putting a LoRA (or QLoRA) adapter on it."""
from __future__ import annotations

import logging
import warnings
from contextlib import contextmanager
from pathlib import Path

import torch

from neurosym.errors import UserError
from neurosym.model.tiny import resolve_tiny

log = logging.getLogger(__name__)


class ModelError(UserError, RuntimeError):
    """The model cannot be loaded as configured; the message says how to fix it."""


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def resolve_dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":  # bf16 on a GPU that has it; fp16 (with a GradScaler, see runtime) on one that has not
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def model_source(model_cfg, cache_dir: Path) -> str:
    """What ``from_pretrained`` loads: a local folder, a hub id, or the built tiny model. A path whose
    folder does not exist is refused here, before transformers turns it into a hub error."""
    problem = model_cfg.source_problem() if hasattr(model_cfg, "source_problem") else None
    if problem:
        raise ModelError(problem)
    return resolve_tiny(model_cfg.name_or_path, cache_dir)


def load_tokenizer(model_cfg, cache_dir: Path):
    from transformers import AutoTokenizer

    src = model_source(model_cfg, cache_dir)
    try:
        tok = AutoTokenizer.from_pretrained(src, trust_remote_code=model_cfg.trust_remote_code,
                                            revision=model_cfg.revision)
    except (OSError, ValueError) as exc:
        raise ModelError(_load_hint(model_cfg, exc)) from None
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return tok


def _load_hint(model_cfg, exc: Exception) -> str:
    name = model_cfg.name_or_path
    tried = model_cfg.local_tried() if hasattr(model_cfg, "local_tried") else None
    local = (f"  No local folder {tried} (paths are relative to the config file's folder), so it was taken as a "
             f"hub id.\n" if tried else "")
    return (f"could not load model.name_or_path={name!r}: {str(exc).splitlines()[0]}\n{local}"
            f"  No network or no access to the Hugging Face hub? Use a local folder, or run the offline "
            f"example: neurosym train experiments/tiny.yaml")


@contextmanager
def _loading_bar():
    """transformers' weight-loading bar on a terminal (a large base takes minutes), none in a log file or
    a pipe, where it is one more line of noise; its global switch is put back as it was."""
    import sys

    from transformers.utils import logging as hf_logging

    was = hf_logging.is_progress_bar_enabled()
    if was and not sys.stderr.isatty():
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was and not hf_logging.is_progress_bar_enabled():
            hf_logging.enable_progress_bar()


def load_base_model(model_cfg, cache_dir: Path, device: torch.device):
    from transformers import AutoModelForCausalLM

    dtype = resolve_dtype(model_cfg.dtype, device)
    kwargs = dict(trust_remote_code=model_cfg.trust_remote_code, revision=model_cfg.revision, dtype=dtype)
    if getattr(model_cfg, "attn_implementation", None):
        kwargs["attn_implementation"] = model_cfg.attn_implementation
    if model_cfg.quantization == "4bit":
        kwargs["quantization_config"] = qlora_config(dtype)
        # the process's own GPU (several processes: accelerate made it the current device of each)
        kwargs["device_map"] = {"": device.index if device.index is not None else torch.cuda.current_device()}
    src = model_source(model_cfg, cache_dir)
    try:
        with _loading_bar():
            model = AutoModelForCausalLM.from_pretrained(src, **kwargs)
    except (OSError, ValueError) as exc:
        raise ModelError(_load_hint(model_cfg, exc)) from None
    if model_cfg.quantization == "4bit":
        from peft import prepare_model_for_kbit_training
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    else:
        model.to(device)
    return model, dtype


def check_attention(model_cfg) -> None:
    """Fail early (before any download) when ``model.attn_implementation`` cannot run on this machine."""
    if getattr(model_cfg, "attn_implementation", None) != "flash_attention_2":
        return
    if not torch.cuda.is_available():
        raise ModelError("model.attn_implementation: flash_attention_2 needs a CUDA GPU (flash-attn has no CPU "
                         "kernels). Use sdpa (or eager), or run on a machine with a GPU.")
    import importlib.util
    if importlib.util.find_spec("flash_attn") is None:
        raise ModelError("model.attn_implementation: flash_attention_2 needs the flash-attn package: "
                         "pip install flash-attn --no-build-isolation. Or use sdpa.")


def check_lora_init(lora_cfg, model_cfg) -> None:
    """Fail early when ``lora.init`` cannot run as configured here (LoftQ: bitsandbytes, no 4-bit base)."""
    if getattr(lora_cfg, "init", "default") != "loftq":
        return
    if model_cfg.quantization == "4bit":
        raise ModelError("lora.init: loftq quantizes the base itself: set model.quantization: none (PEFT's LoftQ "
                         "must be given the unquantized model)")
    import importlib.util
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ModelError("lora.init: loftq needs bitsandbytes (PEFT's LoftQ quantizes with it): "
                         "pip install 'neurosym[qlora]'. Or use lora.init: pissa")


def check_quantization(model_cfg) -> None:
    """Fail early (before any download) when 4-bit, or the attention kernel, cannot work on this machine."""
    check_attention(model_cfg)
    if model_cfg.quantization != "4bit":
        return
    if not torch.cuda.is_available():
        raise ModelError("model.quantization: 4bit (QLoRA) needs a CUDA GPU: bitsandbytes NF4 kernels do not run "
                         "on CPU. Set model.quantization: none, or run on a machine with a GPU.")
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ModelError("model.quantization: 4bit needs bitsandbytes: pip install 'neurosym[qlora]'") from None


def qlora_config(compute_dtype: torch.dtype):
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype if compute_dtype != torch.float32 else torch.bfloat16)


@contextmanager
def peft_on_new_transformers():
    """PEFT wrapping a model reads ``model.is_gradient_checkpointing``, which transformers 5 deprecated
    (renamed ``is_activation_checkpointing``): the FutureWarning is PEFT's, raised by our call, and
    says nothing a user can act on. Only that warning is hidden, only around the wrapping."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def peft_from_pretrained(model, adapter_dir, **kwargs):
    """``PeftModel.from_pretrained`` (kwargs passed on: ``adapter_name``, ``is_trainable``) without the
    deprecation warning our call raises (:func:`peft_on_new_transformers`); every load of a saved
    adapter goes through here."""
    from peft import PeftModel

    with peft_on_new_transformers():
        return PeftModel.from_pretrained(model, str(adapter_dir), **kwargs)


def add_lora(model, lora_cfg):
    from peft import get_peft_model

    from neurosym.model.adapters import build_peft_config  # LoRA (DoRA, rsLoRA) or (IA)3

    config = build_peft_config(lora_cfg, model)
    try:
        with peft_on_new_transformers():
            return get_peft_model(model, config)
    except ValueError as exc:
        if "target" not in str(exc).lower():
            raise
        names = sorted({n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ModelError(f"lora.target_modules {lora_cfg.target_modules!r} matches no layer of this model. Its "
                         f"linear layers are: {', '.join(names)} (or use all-linear).") from None


def load_for_training(cfg, cache_dir: Path):
    """Base model + fresh LoRA adapter, on the best device. The LoRA init uses the torch RNG."""
    check_quantization(cfg.model)
    check_lora_init(cfg.lora, cfg.model)
    device = pick_device()
    tokenizer = load_tokenizer(cfg.model, cache_dir)
    model, dtype = load_base_model(cfg.model, cache_dir, device)
    if cfg.train.gradient_checkpointing:
        # recompute activations in backward: memory for time; inputs must require grad for PEFT's frozen base
        if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x; the old name warns
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model = add_lora(model, cfg.lora)
    return model, tokenizer, device, dtype


def base_identity(model, model_cfg) -> dict:
    """What the adapter was trained on: the base's name, revision, a hash of its architecture config
    and a fingerprint of its frozen weights (a few tensors' leading values), so that a resume or a
    composition onto another base of the same shapes is caught."""
    import hashlib
    import json

    conf = model.config.to_dict() if hasattr(model, "config") else {}
    conf = {k: v for k, v in conf.items() if k not in {"_name_or_path", "transformers_version", "torch_dtype",
                                                       "dtype", "use_cache", "quantization_config"}}
    frozen = [(n, p) for n, p in model.named_parameters() if not p.requires_grad]
    h = hashlib.sha256()
    for name, p in frozen[:3] + frozen[-1:]:
        h.update(name.encode())
        whole = p.full_tensor() if hasattr(p, "full_tensor") else p  # FSDP2 shard: every process gathers it
        h.update(whole.detach().reshape(-1)[:4096].float().cpu().numpy().tobytes())
    return {"name_or_path": model_cfg.name_or_path, "revision": model_cfg.revision,
            "config_sha256": hashlib.sha256(json.dumps(conf, sort_keys=True, default=str).encode()).hexdigest()[:16],
            "weights_sha256": h.hexdigest()[:16]}


def identity_mismatch(saved: dict, current: dict) -> str:
    """Why two base identities differ ('' if they match; a moved folder with the same weights matches)."""
    if not saved:
        return ""
    for key, what in (("config_sha256", "architecture config"), ("weights_sha256", "weights")):
        if saved.get(key) != current.get(key):
            return f"its {what} differ: trained on {saved.get('name_or_path')}"
    return ""


def load_with_adapter(cfg, cache_dir: Path, adapter_dir: Path, trainable: bool = False):
    """Base model + a saved adapter (eval, merge, generate)."""
    check_quantization(cfg.model)
    check_lora_init(cfg.lora, cfg.model)  # PEFT redoes a LoftQ/PiSSA/OLoRA initialisation when it loads
    device = pick_device()
    tokenizer = load_tokenizer(cfg.model, cache_dir)
    model, dtype = load_base_model(cfg.model, cache_dir, device)
    model = peft_from_pretrained(model, adapter_dir, is_trainable=trainable)
    return model, tokenizer, device, dtype
