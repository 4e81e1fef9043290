"""Weights & Biases: one run per run directory, resumed by the id stored in ``wandb_run_id``.

``tracking.mode: disabled`` never imports wandb. Offline runs are written under the run directory
(or $WANDB_DIR) and can be synced later with the command printed at the end.
"""
from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Optional

from neurosym.config.schema import Config, redact
from neurosym.persist.atomic import atomic_write_text

log = logging.getLogger(__name__)
ID_FILE = "wandb_run_id"


def check_tracking(cfg: Config) -> None:
    """Fail before any model loads when W&B cannot work as configured."""
    from neurosym.errors import UserError

    if cfg.tracking.resolved_mode() != "online":
        return
    has_netrc = any((Path(os.path.expanduser(p))).exists() for p in ("~/.netrc", "~/_netrc"))
    if not os.environ.get("WANDB_API_KEY") and not has_netrc:
        raise UserError("tracking.mode is online but no W&B key is set (WANDB_API_KEY, or `wandb login`). "
                        "Set the key, or use tracking.mode: offline (sync later) or disabled.")


class Tracker:
    def __init__(self, cfg: Config, run_dir: Path):
        self.mode = cfg.tracking.resolved_mode()
        self.run = None
        self.run_dir = Path(run_dir)
        if self.mode == "disabled":
            return
        import wandb

        id_path = self.run_dir / ID_FILE
        run_id = id_path.read_text().strip() if id_path.exists() else secrets.token_hex(6)
        if not id_path.exists():
            atomic_write_text(id_path, run_id + "\n")
        self.root = Path(os.environ.get("WANDB_DIR") or str(self.run_dir)) / "wandb"
        self.run = wandb.init(
            project=cfg.tracking.resolved_project(), entity=cfg.tracking.entity, tags=cfg.tracking.tags or None,
            name=cfg.run.name, id=run_id, resume="allow", mode=self.mode,
            dir=os.environ.get("WANDB_DIR") or str(self.run_dir), config=redact(cfg.to_dict()),
            # no 2-minute stall when the server cannot be reached; our console is ours (no stdout capture)
            settings=wandb.Settings(init_timeout=30, console="off", silent=True),
        )
        self.run.define_metric("*", step_metric="train/step")

    @property
    def run_id(self) -> Optional[str]:
        return self.run.id if self.run else None

    def log(self, metrics: dict, step: int) -> None:
        # An explicit step (the training step) keeps W&B's _step monotonic across a resume: a resumed
        # offline run writes a second file that continues at step N+1 instead of restarting at 0.
        if self.run:
            self.run.log({**metrics, "train/step": step}, step=step)

    def log_table(self, key: str, columns: list, rows: list, step: int) -> None:
        if self.run and rows:
            import wandb
            self.run.log({key: wandb.Table(columns=columns, data=rows), "train/step": step}, step=step)

    def log_artifact(self, files: list, name: str, kind: str, metadata: Optional[dict] = None) -> None:
        if not self.run:
            return
        import wandb
        art = wandb.Artifact(name, type=kind, metadata=metadata)
        for f in files:
            if Path(f).exists():
                art.add_file(str(f))
        self.run.log_artifact(art)

    def finish(self, exit_code: int = 0) -> Optional[str]:
        """Close the run; for offline runs return the `wandb sync` command to upload it."""
        if not self.run:
            return None
        import wandb

        run_id, project, entity = self.run.id, self.run.project, self.run.entity
        self.run.finish(exit_code=exit_code)
        wandb.teardown()  # the service flushes and exits: every record is on disk when train() returns
        if self.mode != "offline":
            return None
        return sync_command(self.root, run_id, project, entity)


def sync_command(root: Path, run_id: str, project: str, entity: Optional[str]) -> Optional[str]:
    """One `wandb sync` that uploads every offline file of this run (one per start or resume) into one
    W&B run, in order: ``--id`` makes W&B sync several files into the same run by start time."""
    parts = sorted(Path(root).glob(f"offline-run-*-{run_id}"))
    if not parts:
        return None
    ent = f" -e {entity}" if entity else ""
    return f"wandb sync --id {run_id} -p {project}{ent} " + " ".join(str(p) for p in parts)
