"""The optimizer, by name: AdamW (torch), or bitsandbytes' 8-bit and paged variants on CUDA."""
from __future__ import annotations

import torch

from neurosym.errors import UserError

BNB = {"adamw_8bit": "AdamW8bit", "paged_adamw_8bit": "PagedAdamW8bit", "paged_adamw_32bit": "PagedAdamW32bit"}


def make_optimizer(train_cfg, model, device: torch.device):
    params = [p for p in model.parameters() if p.requires_grad]
    kw = dict(lr=train_cfg.lr, weight_decay=train_cfg.weight_decay)
    if train_cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, **kw)
    if device.type != "cuda":
        raise UserError(f"train.optimizer: {train_cfg.optimizer} runs bitsandbytes kernels that need a CUDA GPU. "
                        f"Use train.optimizer: adamw on this machine.")
    try:
        import bitsandbytes as bnb
    except ImportError:
        raise UserError(f"train.optimizer: {train_cfg.optimizer} needs bitsandbytes: pip install 'neurosym[qlora]'") from None
    return getattr(bnb.optim, BNB[train_cfg.optimizer])(params, **kw)
