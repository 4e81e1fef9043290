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

        return LoraConfig(r=lora_cfg.r, lora_alpha=lora_cfg.alpha, lora_dropout=lora_cfg.dropout,
                          target_modules=lora_cfg.target_modules, use_dora=lora_cfg.use_dora,
                          use_rslora=lora_cfg.use_rslora, task_type="CAUSAL_LM")
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


def peft_kind(peft_config) -> str:
    """``lora`` or ``ia3`` for a loaded PEFT config (other PEFT types are named as PEFT names them)."""
    kind = getattr(peft_config, "peft_type", None)
    kind = getattr(kind, "value", kind)
    return str(kind).lower()
