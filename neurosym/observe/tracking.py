"""Experiment trackers behind one :class:`Tracker`: W&B, TensorBoard and MLflow (``tracking.backends``).

- ``wandb`` (the default): one run per run directory, resumed by the id stored in ``wandb_run_id``.
  Offline runs are written under the run directory (or $WANDB_DIR) and can be synced later with
  the command printed at the end.
- ``tensorboard``: ``torch.utils.tensorboard.SummaryWriter`` event files in ``RUN/tensorboard``
  (``tensorboard --logdir RUN/tensorboard``); a resume purges the steps after its checkpoint.
- ``mlflow``: ``MlflowClient`` on ``tracking.mlflow_uri`` (default $MLFLOW_TRACKING_URI, else a SQLite
  store ``RUN/mlflow.db`` with artifacts in ``RUN/mlartifacts``: MLflow 3 refuses its old file store
  unless told otherwise), one MLflow run per run directory, resumed by the id in ``mlflow_run_id``.

``tracking.mode: disabled`` imports none of them. Each backend receives the config redacted
(:func:`neurosym.config.schema.redact`), never a secret. A backend whose package is missing is refused by
:func:`check_tracking`, before any model loads, with the pip command that installs it.
"""
from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import secrets
import time
from pathlib import Path
from typing import Optional

from neurosym.config.schema import Config, redact
from neurosym.persist.atomic import atomic_write_text
from neurosym.persist.rundir import RunDir

log = logging.getLogger(__name__)
# backend -> (module that must be importable, how to install it)
PACKAGES = {"wandb": ("wandb", "pip install wandb"),
            "tensorboard": ("tensorboard", "pip install 'neurosym[tensorboard]'  (the tensorboard package)"),
            "mlflow": ("mlflow", "pip install 'neurosym[mlflow]'  (mlflow-skinny with SQLAlchemy and Alembic, "
                                 "or the full mlflow)")}


def active_backends(cfg: Config) -> list[str]:
    """The backends this run writes to: none when tracking is disabled."""
    return [] if cfg.tracking.resolved_mode() == "disabled" else list(cfg.tracking.backends)


def check_tracking(cfg: Config) -> None:
    """Fail before any model loads when a tracker cannot work as configured."""
    from neurosym.errors import UserError

    for name in active_backends(cfg):
        module, how = PACKAGES[name]
        if importlib.util.find_spec(module) is None:
            raise UserError(f"tracking.backends includes {name}, but the {module} package is not installed: "
                            f"{how}. Or remove {name} from tracking.backends (tracking.mode: disabled turns "
                            f"every tracker off).")
        if name == "mlflow" and importlib.util.find_spec("sqlalchemy") is None and not _mlflow_uri_is_remote(cfg):
            raise UserError("tracking.backends includes mlflow, whose local store (sqlite) needs SQLAlchemy and "
                            f"Alembic: {how}. Or set tracking.mlflow_uri to an MLflow server (http://...).")
    if "wandb" not in active_backends(cfg) or cfg.tracking.resolved_mode() != "online":
        return
    has_netrc = any((Path(os.path.expanduser(p))).exists() for p in ("~/.netrc", "~/_netrc"))
    if not os.environ.get("WANDB_API_KEY") and not has_netrc:
        raise UserError("tracking.mode is online but no W&B key is set (WANDB_API_KEY, or `wandb login`). "
                        "Set the key, or use tracking.mode: offline (sync later) or disabled.")


def _mlflow_uri_is_remote(cfg: Config) -> bool:
    uri = cfg.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    return uri.startswith(("http://", "https://", "databricks"))


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v
    return out


def _scalars(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v and abs(v) != float("inf")}


class WandbBackend:
    name = "wandb"

    def __init__(self, cfg: Config, run_dir: Path, mode: str):
        import wandb

        self.mode = mode
        id_path = RunDir(run_dir).wandb_id
        run_id = id_path.read_text().strip() if id_path.exists() else secrets.token_hex(6)
        if not id_path.exists():
            atomic_write_text(id_path, run_id + "\n")
        self.root = Path(os.environ.get("WANDB_DIR") or str(run_dir)) / "wandb"
        # wandb's own notices (e.g. its Weave advert when openai/litellm are imported) follow the settings of
        # wandb.setup, not of wandb.init: silence them there too
        wandb.setup(settings=wandb.Settings(silent=True))
        self.run = wandb.init(
            project=cfg.tracking.resolved_project(), entity=cfg.tracking.entity, tags=cfg.tracking.tags or None,
            name=cfg.run.name, id=run_id, resume="allow", mode=mode,
            dir=os.environ.get("WANDB_DIR") or str(run_dir), config=redact(cfg.to_dict()),
            # no 2-minute stall when the server cannot be reached; our console is ours (no stdout capture)
            settings=wandb.Settings(init_timeout=30, console="off", silent=True),
        )
        self.run.define_metric("*", step_metric="train/step")

    @property
    def run_id(self) -> str:
        return self.run.id

    def log(self, metrics: dict, step: int) -> None:
        # An explicit step (the training step) keeps W&B's _step monotonic across a resume: a resumed
        # offline run writes a second file that continues at step N+1 instead of restarting at 0.
        self.run.log({**metrics, "train/step": step}, step=step)

    def log_table(self, key: str, columns: list, rows: list, step: int) -> None:
        import wandb
        self.run.log({key: wandb.Table(columns=columns, data=rows), "train/step": step}, step=step)

    def log_artifact(self, files: list, name: str, kind: str, metadata: Optional[dict]) -> None:
        import wandb
        art = wandb.Artifact(name, type=kind, metadata=metadata)
        for f in files:
            if Path(f).exists():
                art.add_file(str(f))
        self.run.log_artifact(art)

    def finish(self, exit_code: int) -> Optional[str]:
        import wandb

        run_id, project, entity = self.run.id, self.run.project, self.run.entity
        self.run.finish(exit_code=exit_code)
        wandb.teardown()  # the service flushes and exits: every record is on disk when train() returns
        if self.mode != "offline":
            return None
        return sync_command(self.root, run_id, project, entity)


def _markdown_table(columns: list, rows: list, limit: int = 200) -> str:
    def cell(v) -> str:
        return str(v).replace("|", "\\|").replace("\n", " ")[:300]
    lines = ["| " + " | ".join(map(cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows[:limit]]
    return "\n".join(lines)


class TensorBoardBackend:
    name = "tensorboard"

    def __init__(self, cfg: Config, run_dir: Path, start_step: int):
        from torch.utils.tensorboard import SummaryWriter

        import yaml

        self.dir = RunDir(run_dir).tensorboard
        # a resume drops what an interrupted run wrote after its checkpoint (the steps are redone)
        self.writer = SummaryWriter(log_dir=str(self.dir), purge_step=start_step + 1 if start_step else None)
        if not start_step:
            text = yaml.safe_dump(redact(cfg.to_dict()), sort_keys=False)
            self.writer.add_text("config", "```\n" + text + "\n```", 0)

    def log(self, metrics: dict, step: int) -> None:
        for key, value in _scalars(metrics).items():
            self.writer.add_scalar(key, value, step)

    def log_table(self, key: str, columns: list, rows: list, step: int) -> None:
        self.writer.add_text(key, _markdown_table(columns, rows), step)

    def log_artifact(self, files: list, name: str, kind: str, metadata: Optional[dict]) -> None:
        pass  # TensorBoard keeps no files; they are in the run directory

    def finish(self, exit_code: int) -> Optional[str]:
        self.writer.close()
        return None


_MLFLOW_KEY = re.compile(r"[^\w\-. /]")


class MlflowBackend:
    name = "mlflow"

    def __init__(self, cfg: Config, run_dir: Path, start_step: int):
        from mlflow.tracking import MlflowClient

        for noisy in ("mlflow.store.db.utils", "alembic"):  # "Creating initial MLflow database tables..."
            logging.getLogger(noisy).setLevel(logging.WARNING)
        self.uri = cfg.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI") or \
            f"sqlite:///{RunDir(run_dir).mlflow_db.resolve()}"
        local = self.uri.startswith("sqlite:///") and not (cfg.tracking.mlflow_uri or os.environ.get("MLFLOW_TRACKING_URI"))
        self.client = MlflowClient(tracking_uri=self.uri)
        name = cfg.tracking.resolved_project()
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(
            name, artifact_location=RunDir(run_dir).mlflow_artifacts.resolve().as_uri() if local else None)
        id_path = RunDir(run_dir).mlflow_id
        if id_path.exists():
            self.run_id = id_path.read_text().strip()
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {f"tag.{t}": "true" for t in cfg.tracking.tags}
            self.run_id = self.client.create_run(exp_id, run_name=cfg.run.name, tags=tags).info.run_id
            atomic_write_text(id_path, self.run_id + "\n")
            from mlflow.entities import Param
            params = [Param(k[:250], json.dumps(v) if not isinstance(v, str) else v)
                      for k, v in _flat(redact(cfg.to_dict())).items()]
            for i in range(0, len(params), 100):  # MLflow's batch limit
                self.client.log_batch(self.run_id, params=params[i:i + 100])

    def log(self, metrics: dict, step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        batch = [Metric(_MLFLOW_KEY.sub("_", k), v, now, step) for k, v in _scalars(metrics).items()]
        for i in range(0, len(batch), 1000):
            self.client.log_batch(self.run_id, metrics=batch[i:i + 1000])

    def log_table(self, key: str, columns: list, rows: list, step: int) -> None:
        self.client.log_dict(self.run_id, {"step": step, "columns": columns, "data": rows},
                             f"tables/{_MLFLOW_KEY.sub('_', key).replace('/', '-')}-step{step}.json")

    def log_artifact(self, files: list, name: str, kind: str, metadata: Optional[dict]) -> None:
        for f in files:
            if Path(f).exists():
                self.client.log_artifact(self.run_id, str(f), artifact_path=f"{kind}/{name}")

    def finish(self, exit_code: int) -> Optional[str]:
        self.client.set_terminated(self.run_id, "FINISHED" if exit_code == 0 else "KILLED")
        return None


class Tracker:
    """Every configured backend, called alike; ``run`` is truthy when at least one is active."""

    def __init__(self, cfg: Config, run_dir: Path, start_step: int = 0):
        self.mode = cfg.tracking.resolved_mode()
        self.run_dir = Path(run_dir)
        self.backends: list = []
        self.wandb: Optional[WandbBackend] = None
        for name in active_backends(cfg):
            if name == "wandb":
                self.wandb = WandbBackend(cfg, self.run_dir, self.mode)
                self.backends.append(self.wandb)
            elif name == "tensorboard":
                self.backends.append(TensorBoardBackend(cfg, self.run_dir, start_step))
            elif name == "mlflow":
                self.backends.append(MlflowBackend(cfg, self.run_dir, start_step))
        self.run = self.wandb.run if self.wandb else (self.backends or None)

    @property
    def run_id(self) -> Optional[str]:
        """The W&B run id (what ``neurosym export --wandb`` and the summary name)."""
        return self.wandb.run_id if self.wandb else None

    def log(self, metrics: dict, step: int) -> None:
        for b in self.backends:
            b.log(metrics, step)

    def log_table(self, key: str, columns: list, rows: list, step: int) -> None:
        if rows:
            for b in self.backends:
                b.log_table(key, columns, rows, step)

    def log_artifact(self, files: list, name: str, kind: str, metadata: Optional[dict] = None) -> None:
        for b in self.backends:
            b.log_artifact(files, name, kind, metadata)

    def finish(self, exit_code: int = 0) -> Optional[str]:
        """Close every backend; for an offline W&B run return the `wandb sync` command to upload it."""
        out = None
        for b in self.backends:
            said = b.finish(exit_code)
            out = out or said
        return out


def sync_command(root: Path, run_id: str, project: str, entity: Optional[str]) -> Optional[str]:
    """One `wandb sync` that uploads every offline file of this run (one per start or resume) into one
    W&B run, in order: ``--id`` makes W&B sync several files into the same run by start time."""
    parts = sorted(Path(root).glob(f"offline-run-*-{run_id}"))
    if not parts:
        return None
    ent = f" -e {entity}" if entity else ""
    return f"wandb sync --id {run_id} -p {project}{ent} " + " ".join(str(p) for p in parts)
