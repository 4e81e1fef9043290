"""What a finished run prints: eval before -> after, steps by route (failed updates apart), prompt
versions and refined examples. Read from the run directory, so `train` and `resume` agree."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from neurosym.observe.events import read_events
from neurosym.persist.rundir import RunDir


def summary_lines(run_dir: Path, state, stop_reason: Optional[str] = None) -> list[str]:
    path = RunDir(run_dir).events
    events = read_events(path) if path.exists() else []
    routes = []
    for route, n in sorted(state.steps_by_route.items(), key=lambda kv: kv[0] != "lora"):
        ok, failed = state.ok_by_route.get(route, 0), state.failed_by_route.get(route, 0)
        extra = f" ({ok} applied, {failed} failed: their batches took LoRA steps)" if failed else ""
        routes.append(f"{n} {'LoRA' if route == 'lora' else route}{extra}")
    lines = [f"done: {state.step} steps ({', '.join(routes) or 'none'})" + (f"; {stop_reason}" if stop_reason else "")]
    evals = [e for e in events if e.get("kind") == "eval"]
    for key, name in (("eval_loss", "eval loss"), ("eval_reward", "eval reward")):
        vals = [e[key] for e in evals if isinstance(e.get(key), (int, float))]
        if vals:
            lines.append(f"  {name:<12} {vals[0]:.4f} -> {vals[-1]:.4f}" if len(vals) > 1 else f"  {name:<12} {vals[-1]:.4f}")
    versions = [e for e in events if e.get("kind") == "prompt"]
    if len(versions) > 1:
        lines.append(f"  prompt       {len(versions) - 1} new version(s); now v{versions[-1]['version']}: "
                     f"{(versions[-1]['text'] or '')[:100]!r}")
    lines += update_outcome_lines(events)
    lines += bought_lines(events)
    refined = sum(e.get("symbolic", {}).get("accepted", 0) for e in events
                  if e.get("kind") in ("train", "symbolic") and isinstance(e.get("symbolic"), dict))
    if refined:
        lines.append(f"  refined      {refined} rewritten example(s) in remake.sqlite (neurosym export {run_dir})")
    alerts = [e["text"] for e in events if e.get("kind") == "alert"]
    for text in alerts[:3]:
        lines.append(f"  warning      {text}")
    lines.append(f"  run directory {run_dir}")
    return lines


def update_outcome_lines(events: list) -> list[str]:
    """Per kind of teacher update (symbolic): how many landed, and what each did to the prompt."""
    by_route: dict[str, dict] = {}
    for e in events:
        if e.get("kind") not in ("train",) and e.get("kind") != e.get("route"):
            continue
        for route, fig in e.items():
            if not isinstance(fig, dict) or ("calls" not in fig and "error_type" not in fig):
                continue
            if route in ("decision", "signals", "batch", "validation"):
                continue
            tally = by_route.setdefault(route, {"landed": 0, "new": 0, "identical": 0, "nothing": 0, "refused": {},
                                                "failed": 0, "calls": 0})
            tally["landed"] += 1
            tally["calls"] += int(fig.get("calls") or 0)
            reason = fig.get("unchanged_reason")
            if "error_type" in fig:
                tally["failed"] += 1
            elif reason is None:
                tally["new"] += 1
            elif reason == "identical":
                tally["identical"] += 1
            elif reason == "no_form_errors":  # the teacher's verdicts: nothing wrong in form
                tally["nothing"] += 1
            else:
                key = reason.split(" (")[0].split(":")[0][:40]
                tally["refused"][key] = tally["refused"].get(key, 0) + 1
    out = []
    for route, t in by_route.items():
        refused = sum(t["refused"].values())
        why = f" ({', '.join(f'{k} {n}' for k, n in sorted(t['refused'].items()))})" if refused else ""
        nothing = f"{t['nothing']} with nothing a prompt can fix, " if t["nothing"] else ""
        out.append(f"  {route:<12} {t['landed']} update(s): {t['new']} new prompt, {nothing}{t['identical']} identical, "
                   f"{refused} refused{why}, {t['failed']} failed; {t['calls']} teacher calls")
    return out


def bought_lines(events: list) -> list[str]:
    """Per route, what its parts of the steps bought and cost: rows given, cost in LoRA-step units (every
    forward pass charged, teacher calls at the router's ``call_cost``), teacher calls, and the held-out
    probe rows it fixed (wrong before the update, right after) in the steps where that was measured."""
    tally: dict[str, dict] = {}
    for e in events:
        if e.get("kind") != "train" or not isinstance(e.get("parts"), dict):
            continue
        for route, part in e["parts"].items():
            t = tally.setdefault(route, {"parts": 0, "rows": 0, "cost": 0.0, "calls": 0, "fixed": 0, "measured": 0})
            t["parts"] += 1
            t["rows"] += int(part.get("rows") or 0)
            t["cost"] += float(part.get("cost") or 0.0)
            t["calls"] += int(part.get("calls") or 0)
            if part.get("fixed") is not None:
                t["fixed"] += int(part["fixed"])
                t["measured"] += 1
    out = []
    for route, t in sorted(tally.items(), key=lambda kv: kv[0] != "lora"):
        fixed = (f", fixed {t['fixed']} probe row(s) in the {t['measured']} step(s) measured" if t["measured"]
                 else "")
        calls = f", {t['calls']} teacher calls" if t["calls"] else ""
        out.append(f"  bought       {route}: {t['rows']} rows in {t['parts']} step(s), cost {t['cost']:.1f} "
                   f"LoRA-step units{calls}{fixed}")
    return out
