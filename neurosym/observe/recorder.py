"""One recorder for everything a run reports: events.jsonl, the trackers (W&B, TensorBoard, MLflow:
:mod:`neurosym.observe.tracking`) and the progress bar/lines.

Written by the main process only. Tables that summarise the run (router decisions, prompt versions)
are rebuilt from events.jsonl at the end, so no in-memory list has to survive a restart.
"""
from __future__ import annotations

import logging
import math
from typing import Optional

from neurosym.observe.events import EventLog, read_events
from neurosym.observe.progress import Progress
from neurosym.observe.tracking import Tracker

log = logging.getLogger(__name__)


def _numbers(prefix: str, d: dict) -> dict:
    return {f"{prefix}/{k}": (int(v) if isinstance(v, bool) else v) for k, v in d.items()
            if isinstance(v, (int, float)) and v is not None}


def update_outcome(figures: dict, new_version: Optional[int] = None) -> Optional[str]:
    """What one landed update did, in words: ``new prompt v3``, ``prompt identical``, ``refused: too_long``,
    ``failed: TeacherTimeout: ...``, with its rewrites and teacher calls. None for a record that is no
    landed teacher update (a LoRA step, an asynchronous submission)."""
    if "calls" not in figures and "error_type" not in figures:
        return None
    if "error_type" in figures:
        what = f"failed: {figures['error_type']}: {figures.get('error', '')}".rstrip(": ")[:200]
    elif "unchanged_reason" not in figures and new_version is not None:
        what = f"new prompt v{new_version}"
    elif figures.get("unchanged_reason", "identical") == "identical":
        what = "prompt identical (kept)"
    elif figures["unchanged_reason"] == "no_form_errors":
        verdicts = figures.get("verdicts") or {}
        what = "nothing a prompt can fix (" + (", ".join(f"{n} {v}" for v, n in sorted(verdicts.items())) or
                                                "every row right") + "; prompt kept)"
    else:
        reason = figures["unchanged_reason"]
        what = f"refused: {reason}" + ("" if "kept" in reason else " (prompt kept)")
    extra = []
    if figures.get("accepted"):
        extra.append(f"{figures['accepted']} example(s) rewritten")
    rejected = figures.get("rejected") or {}
    if rejected:
        extra.append("rewrites refused: " + ", ".join(f"{why} {n}" for why, n in sorted(rejected.items())))
    cost = figures.get("cost_usd")
    calls = f"{figures.get('calls', 0)} calls" + (f", ${cost:.4f}" if cost else "")
    return what + "".join(f"; {e}" for e in extra) + f" ({calls})"


class Recorder:
    def __init__(self, cfg, run_dir, routes, total_steps: int, start_step: int, keep_through: int,
                 quiet: Optional[bool]):
        self.run_dir, self.routes = run_dir, tuple(routes)
        self.events = EventLog(run_dir.events, keep_through)
        self.tracker = Tracker(cfg, run_dir.path, start_step)
        self.progress = Progress(total_steps, start_step, cfg.train.log_every, quiet)
        self.tally: dict[str, tuple[int, int]] = {}  # route -> (new prompts, updates landed) this session
        self._new_prompt: Optional[int] = None

    @property
    def wandb_run_id(self) -> Optional[str]:
        return self.tracker.run_id

    def step(self, record: dict) -> None:
        """One train step: the events line, its W&B metrics, the progress bar."""
        self.events.write(record)
        step, route = record["step"], record["route"]
        metrics = {"train/lr": record["lr"], f"route/{route}": 1, "prompt/version": record["prompt_version"]}
        if record.get("loss") is not None:
            metrics.update({"train/loss": record["loss"], "train/grad_norm": record["grad_norm"],
                            "train/tokens_per_s": record["tokens_per_s"]})
        if record.get("gain") is not None:
            metrics["router/gain"] = record["gain"]
        metrics.update(_numbers("monitor", record.get("signals") or {}))
        for name, figures in self._figures(record):
            metrics.update(_numbers(name, figures))
            for why, n in (figures.get("rejected") or {}).items():
                metrics[f"{name}/rejected_{why}"] = n
        self.tracker.log(metrics, step)
        self._say_updates(record)
        bar = {"route": route[:3], "lr": record["lr"]}
        if record.get("loss") is not None:
            bar.update(loss=record["loss"], gnorm=record["grad_norm"])
        for name, figures in self._figures(record):
            if "calls" in figures:
                bar[f"{name[:3]}_calls"] = figures["calls"]
            if "cost_usd" in figures:
                bar[f"{name[:3]}_cost_usd"] = figures["cost_usd"]
        for name, (new, landed) in self.tally.items():  # e.g. sym_prompts=1/6: new prompts / updates landed
            bar[f"{name[:3]}_prompts"] = f"{new}/{landed}"
        self.progress.update(step, bar)

    def _say_updates(self, record: dict) -> None:
        """One console line per landed update that talks to a teacher: what it did to the prompt."""
        step = record["step"]
        for name, figures in self._figures(record):
            text = update_outcome(figures, self._new_prompt)
            if text is None:
                continue
            new, landed = self.tally.get(name, (0, 0))
            self.tally[name] = (new + text.startswith("new prompt"), landed + 1)
            if text.startswith("new prompt"):
                self._new_prompt = None
            fallback = " (its batch took a LoRA step)" if record.get("route") != name and "error_type" in figures else ""
            self.progress.write(f"step {step}: {name}: {text}{fallback}")
        if self._new_prompt is not None:  # a new prompt no update line named
            self.progress.write(f"step {step}: system prompt v{self._new_prompt}")
            self._new_prompt = None

    def _figures(self, record: dict):
        """The route-named dicts of a record (each kind of update's own figures)."""
        return [(name, record[name]) for name in self.routes if isinstance(record.get(name), dict)]

    def landing(self, record: dict) -> None:
        """An asynchronous update that landed (its own events line, and its console line)."""
        self.events.write(record)
        self._say_updates(record)

    def prompt(self, step: int, version: int, text: Optional[str]) -> None:
        self.events.write({"kind": "prompt", "step": step, "version": version, "text": text})
        if step > 0:  # said on the update's own line (update_outcome), which follows
            self._new_prompt = version

    def eval(self, step: int, figures: dict, samples: Optional[list] = None) -> None:
        self.events.write({"kind": "eval", "step": step, **figures})
        if samples:
            self.tracker.log_table("eval/samples", ["step", "prompt", "generation", "reference", "reward"],
                                   samples, step)
        self.tracker.log({f"eval/{k[5:] if k.startswith('eval_') else k}": v for k, v in figures.items()
                          if isinstance(v, (int, float)) and not isinstance(v, bool)}, step)
        shown = ", ".join(f"{k.replace('eval_', 'eval ')} {v:.4f}" for k, v in figures.items()
                          if isinstance(v, float) and k != "eval_ppl" and math.isfinite(v))
        self.progress.write(f"step {step}: {shown}")

    def alert(self, step: int, text: str) -> None:
        """Something the user must see (teacher down, budget spent, a flat router signal)."""
        self.events.write({"kind": "alert", "step": step, "text": text})
        self.progress.write(f"step {step}: WARNING: {text}")

    def message(self, text: str) -> None:
        self.progress.write(text)

    def finish_tables(self, step: int, routed: bool, rewrites: list) -> None:
        events = read_events(self.run_dir.events)
        if routed:
            rows = [[e["step"], e["route"], e["decision"]["explored"], e["decision"]["reason"], e.get("gain")]
                    for e in events if e.get("kind") == "train" and e.get("decision")]
            self.tracker.log_table("router/decisions", ["step", "route", "explored", "reason", "gain"], rows, step)
        versions = [[e["version"], e["step"], e["text"]] for e in events if e.get("kind") == "prompt"]
        self.tracker.log_table("prompt/versions", ["version", "step", "text"], versions, step)
        if rewrites:
            self.tracker.log_table("symbolic/rewrites", ["step", "parent_prompt", "prompt", "response", "feedback"],
                                   rewrites, step)

    def artifact(self, files: list, name: str, kind: str, metadata: dict) -> None:
        self.tracker.log_artifact(files, name, kind, metadata)

    def close(self, interrupted: bool) -> Optional[str]:
        self.progress.close()
        self.events.close()
        return self.tracker.finish(exit_code=130 if interrupted else 0)


class QuietRecorder:
    """What a process other than the main one records: nothing (one set of outputs per run). Its
    alerts and messages go to the debug log (``neurosym -v``), tagged with the process's rank."""

    wandb_run_id = None
    tracker = None

    def __init__(self, rank: int):
        self.rank = rank

    def _say(self, text: str) -> None:
        log.debug("[process %d] %s", self.rank, text)

    def step(self, record: dict) -> None:
        self._say(f"step {record['step']}: route {record['route']} loss {record.get('loss')} "
                  f"prompt v{record.get('prompt_version')}")

    def alert(self, step: int, text: str) -> None:
        self._say(f"step {step}: WARNING: {text}")

    def message(self, text: str) -> None:
        self._say(text)

    def landing(self, record: dict) -> None:
        pass

    def prompt(self, step: int, version: int, text) -> None:
        pass

    def eval(self, step: int, figures: dict, samples=None) -> None:
        pass

    def finish_tables(self, step: int, routed: bool, rewrites: list) -> None:
        pass

    def artifact(self, files: list, name: str, kind: str, metadata: dict) -> None:
        pass

    def close(self, interrupted: bool):
        return None
