"""Where the numbers run: one process (``local.LocalRuntime``), several through accelerate
(``accelerate.AccelerateRuntime``, DDP or FSDP2), and the ``--nproc`` launcher (``launch``). The loop gets
one of them from ``start_runtime`` / ``make_runtime`` and never knows how many processes there are.
``launched`` needs no torch (the CLI asks it before anything loads)."""
from __future__ import annotations

import os


def launched() -> bool:
    """Started by torchrun / accelerate launch with more than one process."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        return False


def start_runtime(cfg):
    """The runtime for this process: the multi-process one under a launcher, else ``None`` (the
    run then makes a :class:`LocalRuntime` on the device its model was loaded on)."""
    if not launched():
        return None
    from neurosym.runtime.accelerate import AccelerateRuntime
    return AccelerateRuntime(cfg)


def make_runtime(device, dtype):
    from neurosym.runtime.local import LocalRuntime
    return LocalRuntime(device, dtype)
