"""Progress display: a tqdm bar on a terminal, a plain line every ``log_every`` steps otherwise."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total: int, start: int, log_every: int, quiet: bool | None = None):
        self.total, self.log_every = total, log_every
        self.quiet = (not sys.stderr.isatty()) if quiet is None else quiet
        self.t0, self.start = time.monotonic(), start
        self.bar = None
        if not self.quiet:
            from tqdm import tqdm
            self.bar = tqdm(total=total, initial=start, dynamic_ncols=True, unit="step")

    def update(self, step: int, metrics: dict) -> None:
        short = {k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in metrics.items()}
        if self.bar is not None:
            self.bar.set_postfix(short, refresh=False)
            self.bar.update(step - self.bar.n)
        elif step % self.log_every == 0 or step == self.total:
            done = step - self.start
            elapsed = time.monotonic() - self.t0
            eta = elapsed / done * (self.total - step) if done else 0.0
            fields = " ".join(f"{k}={v}" for k, v in short.items())
            print(f"step {step}/{self.total} {fields} eta={eta:.0f}s", file=sys.stderr, flush=True)

    def write(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
