"""One PNG that shows how a run went: `neurosym report runs/<name>`.

Left, over steps: training loss, the router's loss EMA (``signals.loss_ema``: the monitors' EMA as the
router saw it before each step, drawn at the step it describes and labelled so: it is seeded by the first
loss and slow, so it lies above a loss that falls fast; it is drawn because it is what the router read,
not as a trend of the points) and the eval loss (markers alone when evaluations are sparse: fewer than
:data:`SPARSE_EVALS`, or a gap over a third of the run, where a line would invent a trend), grad norm,
loss slope, and a strip with every step's route; each step's marker is coloured by its route (LoRA,
symbolic, or a symbolic update that fell back to a LoRA step). Dashed vertical lines mark system-prompt
versions v1, v2, ... Right: the router's predicted gain (``decision.predicted[route]``) against the
realized ``gain``, with the verdict in words (whether the predictions track the gains: Pearson r, judged
from :data:`MIN_VERDICT_POINTS` points), and a text summary (route counts, fallback reasons, what each
symbolic update did to the prompt and why, teacher calls and cost, prompt versions, eval loss/reward).

Built on ``matplotlib.figure.Figure`` (no pyplot, no global backend change): safe in a notebook or a
headless server. Missing signals, nulls and LoRA-only runs give empty panels with a note, never an error.
"""
from __future__ import annotations

import math
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Optional

from neurosym.observe.prompt_history import _num, prompt_versions, run_events
from neurosym.persist.rundir import RunDir

ROUTES = {  # category -> (legend label, colour, marker)
    "lora": ("LoRA", "#1f77b4", "o"),
    "symbolic": ("symbolic", "#d62728", "D"),
    "fallback": ("symbolic → LoRA fallback", "#ff9f1c", "X"),
}
PROMPT_COLOUR = "#7b3fa0"
EVAL_COLOUR = "#222222"


def step_category(event: dict) -> str:
    """``fallback`` when a routed symbolic update fell back, else the executed route."""
    if event.get("fallback"):
        return "fallback"
    return "symbolic" if event.get("route") == "symbolic" else "lora"


def _signal(event: dict, key: str) -> Optional[float]:
    signals = event.get("signals")
    return _num(signals.get(key)) if isinstance(signals, dict) else None


def _series(train: list[dict], get) -> dict[str, tuple[list, list]]:
    """category -> (steps, values) for the events whose value is a finite number."""
    out: dict[str, tuple[list, list]] = {}
    for e in train:
        v = get(e)
        if v is None:
            continue
        xs, ys = out.setdefault(step_category(e), ([], []))
        xs.append(e["step"])
        ys.append(v)
    return out


def _note(ax, text: str, hide_x: bool = False) -> None:
    """An empty panel: a grey note instead of meaningless 0..1 ticks."""
    ax.set_yticks([])
    if hide_x:
        ax.set_xticks([])
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="#777777", fontsize=10)


def _metric_panel(ax, train: list[dict], get, ylabel: str, missing: str, line: bool = True) -> bool:
    series = _series(train, get)
    points = sorted((x, y) for xs, ys in series.values() for x, y in zip(xs, ys))
    if not points:
        _note(ax, missing)
        ax.set_ylabel(ylabel)
        return False
    if line and len(points) > 1:
        ax.plot([p[0] for p in points], [p[1] for p in points], color="#bbbbbb", lw=1, zorder=1)
    for cat, (xs, ys) in series.items():
        label, colour, marker = ROUTES[cat]
        ax.scatter(xs, ys, s=16 if cat == "lora" else 34, color=colour, marker=marker, label=label,
                   zorder=3, edgecolors="none" if cat == "lora" else "black", linewidths=0.4)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.25)
    return True


def _gain_points(train: list[dict]) -> tuple[dict[str, tuple[list, list]], int, int]:
    """category -> (predicted, realized); also how many gains were measured, and how many lacked a prediction."""
    out: dict[str, tuple[list, list]] = {}
    measured = unpredicted = 0
    for e in train:
        decision = e.get("decision") if isinstance(e.get("decision"), dict) else {}
        predicted = decision.get("predicted") if isinstance(decision.get("predicted"), dict) else {}
        if decision.get("parts") and isinstance(e.get("parts"), dict):  # a per-row router: per part, per unit cost
            for route, part in e["parts"].items():
                gain, cost, p = _num(part.get("gain")), _num(part.get("cost")), _num(predicted.get(route))
                if gain is None or not cost:
                    continue
                measured += 1
                if p is None:
                    unpredicted += 1
                    continue
                xs, ys = out.setdefault("lora" if route == "lora" else "symbolic", ([], []))
                xs.append(p)
                ys.append(gain / cost)
            continue
        gain = _num(e.get("gain"))
        if gain is None:
            continue
        measured += 1
        route = e.get("route") if e.get("route") in predicted else decision.get("route")
        p = _num(predicted.get(route)) if route else None
        if p is None:
            unpredicted += 1
            continue
        xs, ys = out.setdefault(step_category(e), ([], []))
        xs.append(p)
        ys.append(gain)
    return out, measured, unpredicted


def _gain_panel(ax, train: list[dict]) -> None:
    per_row = any(isinstance(e.get("decision"), dict) and e["decision"].get("parts") for e in train)
    ax.set_title("router: predicted vs realized gain", fontsize=10)
    ax.set_xlabel("predicted gain / cost (decision.predicted)" if per_row
                  else "predicted gain (decision.predicted[route])")
    ax.set_ylabel("realized gain / cost (each part)" if per_row else "realized gain")
    points, measured, unpredicted = _gain_points(train)
    if not measured:
        _note(ax, "no gains measured", hide_x=True)
        return
    if not points:
        _note(ax, f"{measured} gains measured,\nnone with a router prediction", hide_x=True)
        return
    xs_all = [x for xs, _ in points.values() for x in xs]
    ys_all = [y for _, ys in points.values() for y in ys]
    if len(ys_all) > 1 and max(ys_all) - min(ys_all) < 1e-12:  # a flat signal: no fit to plot, say so
        _note(ax, f"every realized gain was {ys_all[0]:.4g} ({len(ys_all)} updates):\nthe router had no signal "
                  f"to learn from\n(check reward.kind and the probe set)", hide_x=True)
        return
    for cat, (xs, ys) in points.items():
        label, colour, marker = ROUTES[cat]
        ax.scatter(xs, ys, s=30, color=colour, marker=marker, label=f"{label} ({len(xs)})", alpha=0.85,
                   edgecolors="black", linewidths=0.3, zorder=3)
    lo, hi = min(xs_all + ys_all), max(xs_all + ys_all)
    pad = (hi - lo) * 0.05 or 0.05
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", color="#999999", lw=1, label="predicted = realized")
    ax.axhline(0, color="#cccccc", lw=0.8, zorder=0)
    r = _pearson(xs_all, ys_all)
    verdict, colour = router_verdict(r, len(xs_all))
    ax.set_title("router: predicted vs realized gain", fontsize=10, pad=30)
    ax.text(0.5, 1.015, verdict, transform=ax.transAxes, ha="center", va="bottom", fontsize=9, color=colour,
            fontweight="bold", gid="verdict")
    ax.legend(fontsize=8, loc="best")
    ax.grid(alpha=0.25)


MIN_VERDICT_POINTS = 6  # fewer (prediction, gain) pairs tell nothing about a correlation
TRACKS, TRACKS_WEAKLY = 0.5, 0.2


def router_verdict(r: Optional[float], n: int) -> tuple[str, str]:
    """Whether the router's predicted gains track the realized ones, in words (and a colour): the
    Pearson r of the points, judged only from :data:`MIN_VERDICT_POINTS` points on."""
    if n < MIN_VERDICT_POINTS:
        return (f"too few points to tell whether the router is\nlearning (n = {n}; it takes {MIN_VERDICT_POINTS})",
                "#777777")
    if r is None:
        return (f"the router predicted one gain for every update:\nit ranks nothing yet (n = {n})", "#b22222")
    if r >= TRACKS:
        return f"the router is learning: its predictions\ntrack realized gains (r = {r:.2f}, n = {n})", "#2e7d32"
    if r >= TRACKS_WEAKLY:
        return (f"the router is learning weakly: its predictions\ntrack realized gains loosely "
                f"(r = {r:.2f}, n = {n})", "#b8860b")
    return (f"the router is not learning: its predictions\ndo not track realized gains (r = {r:.2f}, n = {n})",
            "#b22222")


def _pearson(xs: list, ys: list) -> Optional[float]:
    n = len(xs)
    if n < 3:
        return None
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    syy = sum((y - my) ** 2 for y in ys)
    if sxx <= 0 or syy <= 0:
        return None
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / math.sqrt(sxx * syy)


def summarize(events: list[dict], versions: list[dict]) -> list[str]:
    """The lines of the report's text panel."""
    train = [e for e in events if e.get("kind") == "train" and isinstance(e.get("step"), (int, float))]
    evals = [(e["step"], _num(e.get("eval_loss"))) for e in events if e.get("kind") == "eval"]
    evals = [(s, v) for s, v in evals if v is not None]
    cats = Counter(step_category(e) for e in train)
    lines = [f"steps          {len(train)}" + (f" (last {max(e['step'] for e in train)})" if train else "")]
    lines.append(f"  LoRA         {cats.get('lora', 0)}")
    lines.append(f"  symbolic     {cats.get('symbolic', 0)}")
    lines.append(f"  fallbacks    {cats.get('fallback', 0)}")
    for reason, n in Counter(str(e["fallback"]) for e in train if e.get("fallback")).most_common(3):
        lines.append(f"    {n} x {reason[:28]}")
    explored = sum(1 for e in train if isinstance(e.get("decision"), dict) and e["decision"].get("explored"))
    if explored:
        lines.append(f"  explored     {explored}")
    lines.extend(_router_lines(train))
    lines.extend(_symbolic_lines(train, versions))
    alerts = [e.get("text", "") for e in events if e.get("kind") == "alert"]
    changed = [v for v in versions if v["version"] > 0]
    lines.append(f"prompt         v{changed[-1]['version']} at step {changed[-1]['step']} ({len(changed)} new)"
                 if changed else "prompt         unchanged (v0)")
    if evals:
        first, last = evals[0][1], evals[-1][1]
        best = min(evals, key=lambda p: p[1])
        lines.append(f"eval loss      {first:.4f} -> {last:.4f}")
        lines.append(f"  best         {best[1]:.4f} at step {best[0]}")
    else:
        lines.append("eval loss      none recorded")
    rewards = [r for r in (_num(e.get("eval_reward")) for e in events if e.get("kind") == "eval") if r is not None]
    if rewards:
        lines.append(f"eval reward    {rewards[0]:.4f} -> {rewards[-1]:.4f}")
    for text in alerts[:3]:  # teacher down, budget spent, a flat router signal
        lines.append(f"warning        {text[:34]}")
    return lines


def _router_lines(train: list[dict]) -> list[str]:
    """The gains the router learnt from: how many had no prediction, how many were 0 for free."""
    _, measured, unpredicted = _gain_points(train)
    if not measured:
        return []
    lines = [f"router gains   {measured} measured"]
    if unpredicted:
        lines.append(f"  {unpredicted} without a prediction")
    zeros = sum(1 for e in train if _num(e.get("gain")) == 0 and isinstance(e.get("symbolic"), dict)
                and e["symbolic"].get("unchanged_reason"))
    if zeros:
        lines.append(f"  {zeros} symbolic = 0 (prompt unchanged)")
    return lines


# why a symbolic update left the prompt as it was (``symbolic.unchanged_reason``), in words
UNCHANGED_WORDS = {"identical": "same prompt proposed", "malformed": "teacher's answer malformed",
                   "elided": "proposal elided (...)", "too_long": "proposal too long",
                   "answer_leak": "proposal states an answer"}


def _unchanged_words(reason: str) -> str:
    if reason in UNCHANGED_WORDS:
        return UNCHANGED_WORDS[reason]
    return reason.split(" (")[0][:28]  # "worse on batch + probe (reward / -loss: ...): kept the old prompt"


def _symbolic_lines(train: list[dict], versions: list[dict]) -> list[str]:
    """What the symbolic updates did, in words: how many changed the prompt, why the others did not,
    and what the teacher's example rewrites came to."""
    steps = [e for e in train if isinstance(e.get("symbolic"), dict)]
    if not steps:
        return []
    sym = [e["symbolic"] for e in steps]
    new_at = {v["step"] for v in versions if v["version"] > 0}
    changed = sum(1 for e in steps if e["step"] in new_at and not e["symbolic"].get("unchanged_reason"))
    why = Counter(_unchanged_words(str(s["unchanged_reason"])) for s in sym if s.get("unchanged_reason"))
    untold = len(sym) - changed - sum(why.values())
    if untold > 0:
        why["no reason recorded"] += untold
    lines = [f"symbolic       {len(sym)} update{'s' if len(sym) != 1 else ''}",
             f"  prompt changed   {changed}", f"  prompt unchanged {sum(why.values())}"]
    lines.extend(f"    {v} x {k}" for k, v in why.most_common(4))
    calls = sum(int(_num(s.get("calls")) or 0) for s in sym)
    cost = sum(_num(s.get("cost_usd")) or 0.0 for s in sym)
    kept = sum(int(_num(s.get("accepted")) or 0) for s in sym)
    refused: Counter = Counter()
    for s in sym:
        if isinstance(s.get("rejected"), dict):
            refused.update({k: int(_num(v) or 0) for k, v in s["rejected"].items()})
    lines.append(f"teacher        {calls} calls, ${cost:.4f}")
    lines.append(f"  example rewrites: {kept} kept, {sum(refused.values())} refused")
    lines.extend(f"    {v} x {k[:28]}" for k, v in refused.most_common(4))
    malformed = sum(1 for s in sym if s.get("malformed"))
    if malformed:
        lines.append(f"  malformed answers {malformed}")
    return lines


def draw_report(run_dir: str | Path):
    """The report as a ``matplotlib.figure.Figure`` (not saved; see :func:`write_report`).

    :raises FileNotFoundError: ``run_dir`` has no ``events.jsonl``.
    """
    from matplotlib.figure import Figure

    run_dir = Path(run_dir)
    if not RunDir(run_dir).events.exists():
        raise FileNotFoundError(f"{run_dir}: no events.jsonl (not a run directory, or the run has not started)")
    events = run_events(run_dir)
    train = sorted((e for e in events if e.get("kind") == "train" and _num(e.get("step")) is not None),
                   key=lambda e: e["step"])
    evals = sorted(((e["step"], _num(e.get("eval_loss"))) for e in events
                    if e.get("kind") == "eval" and _num(e.get("step")) is not None), key=lambda p: p[0])
    evals = [(s, v) for s, v in evals if v is not None]
    versions = prompt_versions(run_dir, events)

    fig = Figure(figsize=(14, 10), dpi=100, layout="constrained")
    left, right = fig.subfigures(1, 2, width_ratios=[2.4, 1])
    gs = left.add_gridspec(4, 1, height_ratios=[3, 2, 2, 0.55])
    ax_loss = left.add_subplot(gs[0], label="loss")
    ax_gn = left.add_subplot(gs[1], sharex=ax_loss, label="grad_norm")
    ax_slope = left.add_subplot(gs[2], sharex=ax_loss, label="slope")
    ax_route = left.add_subplot(gs[3], sharex=ax_loss, label="route")
    gs = right.add_gridspec(2, 1, height_ratios=[1.15, 1])
    ax_gain = right.add_subplot(gs[0], label="gain")
    ax_text = right.add_subplot(gs[1], label="summary")
    fig.suptitle(f"neurosym run: {run_dir.resolve().name}", fontsize=13)

    _loss_panel(ax_loss, train, evals, _ema_decay(run_dir))

    # -- grad norm, slope
    _metric_panel(ax_gn, train, lambda e: _num(e.get("grad_norm")), "grad norm", "no grad norm logged")
    if _metric_panel(ax_slope, train, lambda e: _signal(e, "slope"), "loss slope", "no loss slope (signals.slope) logged"):
        ax_slope.axhline(0, color="#888888", lw=0.8, zorder=0)

    _route_strip(ax_route, train)
    for ax in (ax_loss, ax_gn, ax_slope):
        ax.tick_params(labelbottom=False)

    _prompt_lines((ax_loss, ax_gn, ax_slope, ax_route), versions)

    _gain_panel(ax_gain, train)

    ax_text.axis("off")
    ax_text.text(0.0, 1.0, "\n".join(summarize(events, versions)), transform=ax_text.transAxes, va="top",
                 ha="left", family="monospace", fontsize=9)

    return fig


def _loss_panel(ax_loss, train: list[dict], evals: list[tuple], ema_decay: Optional[float] = None) -> None:
    """Training loss by route, the router's loss EMA, and the eval loss (markers alone when sparse)."""
    from matplotlib.ticker import AutoLocator

    has_loss = _metric_panel(ax_loss, train, lambda e: _num(e.get("loss")), "loss", "no training loss logged")
    ema = router_ema(train)
    if ema:
        decay = f"decay {ema_decay:g}, " if ema_decay is not None else ""
        ax_loss.plot([s for s, _ in ema], [v for _, v in ema], color="#1f77b4", lw=1, alpha=0.6, ls=":",
                     label=f"loss EMA, router's view ({decay}from the first loss)", zorder=2)
    if evals:
        sparse = evals_are_sparse([s for s, _ in evals], [e["step"] for e in train])
        ax_loss.plot([s for s, _ in evals], [v for _, v in evals], color=EVAL_COLOUR, marker="s",
                     ls="none" if sparse else "-", lw=1.6, ms=7 if sparse else 5, zorder=4,
                     label=f"eval loss ({len(evals)} evaluation{'s' if len(evals) != 1 else ''})" if sparse
                     else "eval loss")
    if has_loss or evals:
        ax_loss.grid(alpha=0.25)
        ax_loss.legend(fontsize=8, loc="upper right", ncol=2)
        if not has_loss:  # eval points only: keep their axis, move the note out of the way
            ax_loss.yaxis.set_major_locator(AutoLocator())
            ax_loss.texts[0].set_position((0.5, 0.06))


SPARSE_EVALS = 4  # fewer evaluations than this are drawn as markers: a line through 2 or 3 invents a trend


def evals_are_sparse(eval_steps: list, train_steps: list) -> bool:
    """Too few evaluations, or too far apart (a gap over a third of the run), for a line between them."""
    steps = sorted(eval_steps)
    if len(steps) < SPARSE_EVALS:
        return True
    span = max([*steps, *train_steps]) - min([*steps, *train_steps])
    return span > 0 and max(b - a for a, b in zip(steps, steps[1:])) > span / 3


def _ema_decay(run_dir: Path) -> Optional[float]:
    """``monitors.ema`` of the run's resolved config (None when it cannot be read)."""
    import yaml

    try:
        doc = yaml.safe_load(RunDir(run_dir).config.read_text(encoding="utf-8"))
        return _num(((doc or {}).get("monitors") or {}).get("ema"))
    except (OSError, yaml.YAMLError, AttributeError, UnicodeDecodeError):
        return None


def router_ema(train: list[dict]) -> list[tuple]:
    """(step, value) of the monitors' loss EMA, at the step it describes. Each step's record holds the
    EMA as the router saw it before that step (``signals.loss_ema``), which includes the losses up to
    ``signals.step`` (the previous step): plotted there, not one step late."""
    out = {}
    for e in train:
        value = _signal(e, "loss_ema")
        if value is None:
            continue
        at = _num((e.get("signals") or {}).get("step"))
        out[int(at) if at is not None else e["step"] - 1] = value
    return sorted(out.items())


def _route_strip(ax_route, train: list[dict]) -> None:
    """Every step's route, including symbolic steps without a loss, and the legend of routes."""
    from matplotlib.lines import Line2D
    from matplotlib.ticker import MaxNLocator

    for cat, (label, colour, marker) in ROUTES.items():
        xs = [e["step"] for e in train if step_category(e) == cat]
        if xs:
            ax_route.scatter(xs, [0] * len(xs), marker="|", s=260, color=colour, linewidths=1.6 if cat != "lora" else 1)
    ax_route.set_yticks([])
    ax_route.set_ylim(-1, 1)
    ax_route.set_ylabel("route", rotation=0, ha="right", va="center")
    ax_route.set_xlabel("step")
    ax_route.xaxis.set_major_locator(MaxNLocator(integer=True))
    counts = Counter(step_category(e) for e in train)
    handles = [Line2D([], [], color=c, marker=m, ls="", label=f"{lab} ({counts[k]})")
               for k, (lab, c, m) in ROUTES.items() if counts[k] or k == "lora"]
    handles.append(Line2D([], [], color=PROMPT_COLOUR, ls="--", label="new system prompt"))
    ax_route.legend(handles=handles, fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.9), frameon=False)
    if not train:
        _note(ax_route, "no training steps logged")


def _prompt_lines(axes, versions: list[dict]) -> None:
    """A dashed line at each new system prompt version, labelled on the first axis."""
    from matplotlib.transforms import blended_transform_factory

    ax_loss = axes[0]
    label_at = blended_transform_factory(ax_loss.transData, ax_loss.transAxes)
    for v in versions:
        if v["version"] < 1:
            continue
        for ax in axes:
            ax.axvline(v["step"], color=PROMPT_COLOUR, ls="--", lw=1, alpha=0.7, zorder=0)
        ax_loss.text(v["step"], 1.01, f"v{v['version']}", transform=label_at, ha="center", va="bottom",
                     color=PROMPT_COLOUR, fontsize=9, fontweight="bold")


def _read_only(out: Path, why: str) -> str:
    return (f"cannot write the report to {out} ({why}: a read-only run directory, or a full disk?); "
            f"write it elsewhere with --out, e.g. neurosym report {out.parent} --out {out.parent.name}-report.png")


def write_report(run_dir: str | Path, out_png: str | Path | None = None, overwrite: bool = False) -> Path:
    """Draw the run's report and write it as a PNG; returns its path.

    The default, ``run_dir/report.png``, is the program's own file and is replaced each time. Any
    other ``out_png`` follows :class:`neurosym.persist.safe_output.OutputTarget`: refused if it exists (unless
    ``overwrite``) or lies in a run directory; written to a temporary sibling and renamed.

    :raises FileNotFoundError: ``run_dir`` has no ``events.jsonl``.
    :raises neurosym.persist.safe_output.OutputError: ``out_png`` may not be written, or (no ``out_png``) the run
        directory is read-only; the message says to pass ``--out``.
    """
    from neurosym.persist.safe_output import OutputError, OutputTarget

    run_dir = Path(run_dir)
    default = run_dir / "report.png"
    target = None
    if out_png is not None and os.path.abspath(out_png) != os.path.abspath(default):
        target = OutputTarget(out_png, kind="file", overwrite=overwrite, protect=[run_dir])
    elif run_dir.is_dir() and not os.access(run_dir, os.W_OK | os.X_OK):
        raise OutputError(_read_only(default, "permission denied"))
    fig = draw_report(run_dir)
    if target is not None:
        try:
            with target.writing() as tmp:
                fig.savefig(tmp, format="png")
        except OSError as exc:  # checked writable, but the disk may fill or the folder turn read-only
            raise OutputError(f"--out {out_png}: cannot write it: {exc.strerror or exc}; free space, or "
                              f"pass --out with a folder you can write") from None
        return Path(out_png)
    out = default
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
        os.close(fd)
        fig.savefig(tmp, format="png")
        os.replace(tmp, out)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise OutputError(_read_only(out, exc.strerror or str(exc))) from None
    except BaseException:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise
    return out


__all__ = ["write_report", "draw_report", "summarize", "step_category", "ROUTES"]
