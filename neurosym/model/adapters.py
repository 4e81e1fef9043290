"""The PEFT config of the adapter a job trains, built from the ``lora:`` section of its config.

One place maps our keys to PEFT's: ``method: lora`` gives a ``peft.LoraConfig`` (``use_dora`` and
``use_rslora`` are PEFT's own flags, passed through), ``method: ia3`` a ``peft.IA3Config``. Nothing
here reimplements an adapter: PEFT builds and runs both.
"""
from __future__ import annotations

ADAPTER_KINDS = ("lora", "ia3")


def build_peft_config(lora_cfg, model=None):
    """``peft.LoraConfig`` or ``peft.IA3Config`` for ``lora_cfg`` (a :class:`neurosym.config.schema.LoraConfig`).

    ``model`` is accepted so a caller can pass the base model (future per-architecture choices); the
    configs built today do not need it: PEFT resolves ``all-linear`` and (IA)3 defaults itself.
    """
    del model
    method = getattr(lora_cfg, "method", "lora")
    if method == "lora":
        from peft import LoraConfig

        init = getattr(lora_cfg, "init", "default")
        extra = {}
        if init == "loftq":
            from peft import LoftQConfig
            extra["loftq_config"] = LoftQConfig(loftq_bits=lora_cfg.loftq_bits)
        return LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                          target_modules=lora_cfg.target_modules, use_dora=lora_cfg.use_dora,
                          use_rslora=lora_cfg.use_rslora, task_type="CAUSAL_LM",
                          init_lora_weights=peft_init(init), **extra)
    if method == "ia3":
        from peft import IA3Config

        # target_modules left at its default ("all-linear", the LoRA default) means PEFT's (IA)3
        # choice for the architecture (k_proj, v_proj, down_proj on Llama, as in the (IA)3 paper);
        # written out in the config, it is taken as given.
        explicit = "target_modules" in lora_cfg.model_fields_set
        target = lora_cfg.target_modules if explicit else None
        ff = lora_cfg.feedforward_modules
        if target is not None and target != "all-linear" and ff is not None:
            missing = sorted(set(ff) - set(target))
            if missing:
                raise ValueError(f"lora.feedforward_modules {missing} are not in lora.target_modules {target}: "
                                 f"(IA)3 rescales the input of feed-forward modules it targets; add them to "
                                 f"target_modules or remove them from feedforward_modules")
        return IA3Config(target_modules=target, feedforward_modules=ff, task_type="CAUSAL_LM")
    raise ValueError(f"lora.method must be one of {ADAPTER_KINDS}, got {method!r}")


def peft_init(init: str):
    """PEFT's ``init_lora_weights`` for ``lora.init``, refused (naming the key) when the installed PEFT
    does not know it."""
    if init == "default":
        return True
    from peft import LoraConfig

    known = _literal_names(LoraConfig)
    if known and init not in known:
        import peft

        from neurosym.config.schema import ConfigError
        raise ConfigError(f"lora.init {init}: the installed PEFT {peft.__version__} does not know it "
                         f"(it knows {', '.join(sorted(known))}); upgrade peft or choose another")
    return init


def _literal_names(cls) -> set:
    """The string values of the ``init_lora_weights`` annotation of a PEFT config class."""
    import typing

    try:
        hints = typing.get_type_hints(cls)
    except Exception:  # noqa: BLE001 - an annotation this Python cannot evaluate: no check
        return set()
    found, todo = set(), [hints.get("init_lora_weights")]
    while todo:
        t = todo.pop()
        for arg in typing.get_args(t):
            (found.add(arg) if isinstance(arg, str) else todo.append(arg))
    return found


def peft_kind(peft_config) -> str:
    """``lora`` or ``ia3`` for a loaded PEFT config (other PEFT types are named as PEFT names them)."""
    kind = getattr(peft_config, "peft_type", None)
    kind = getattr(kind, "value", kind)
    return str(kind).lower()
