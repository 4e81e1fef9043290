"""`neurosym report`, `neurosym prompts`, `neurosym export` on synthetic run directories (no model, no GPU)."""
from __future__ import annotations

import json
import math
import struct
import sys
import types
from pathlib import Path

import pytest

from tests.support.jobs import write_config
from neurosym.cli import main
from neurosym.config.schema import load_config, save_resolved
from neurosym.data import load_examples
from neurosym.data.examples import Example
from neurosym.observe.prompt_history import format_prompt_history, prompt_history
from neurosym.remake.store import RemakeStore
from neurosym.observe.report import draw_report, summarize, write_report
from neurosym.updates.symbolic.textgrad_step import Rewrite

PROMPTS = {0: "Add the numbers.", 1: "Add the two numbers and state the sum.",
           2: "Add both numbers; answer as 'The answer is N.'", 3: "You add integers. Reply: The answer is N."}
# (version, step it appears at); v3 is only in events.jsonl: it came after the newest checkpoint (step 30)
VERSION_STEPS = {0: 0, 1: 12, 2: 27, 3: 35}
SYMBOLIC_STEPS = {12, 20, 27, 35}
FALLBACK_STEPS = {8, 16}


# ---------------------------------------------------------------------------------------- builders

def make_run(tmp_path: Path, name: str = "synth", tracking: str = "disabled") -> tuple[Path, object]:
    """A run directory with a resolved config.yaml and nothing else; returns (run_dir, cfg)."""
    cfg = load_config(write_config(tmp_path, tmp_path / "no-model", name=name, tracking={"mode": tracking}))
    run_dir = cfg.run_dir
    run_dir.mkdir(parents=True)
    save_resolved(cfg, run_dir / "config.yaml")
    return run_dir, cfg


def write_events(run_dir: Path, records, torn_tail: bool = False) -> None:
    text = "".join(json.dumps(r) + "\n" for r in records)
    (run_dir / "events.jsonl").write_text(text + ('{"kind": "train", "st' if torn_tail else ""))


def write_checkpoint(run_dir: Path, step: int, versions: list[int], complete: bool = True) -> None:
    ckpt = run_dir / "checkpoints" / f"step-{step}"
    ckpt.mkdir(parents=True)
    vs = [{"version": v, "text": PROMPTS.get(v, f"bogus {v}"), "step": VERSION_STEPS.get(v, step)} for v in versions]
    state = {"step": step, "tokens": 0, "lr": 0.001, "total_steps": 40, "sampler": {}, "lora_steps": step,
             "symbolic_steps": 0, "best_eval_loss": None, "wandb_run_id": None, "version": 1,
             "components": {"prompts": {"current": vs[-1]["text"], "versions": vs}}}
    (ckpt / "state.json").write_text(json.dumps(state))
    if complete:
        (ckpt / "COMPLETE").write_text(f"step {step}\n")


def version_at(step: int) -> int:
    return max(v for v, s in VERSION_STEPS.items() if s <= step)


def train_record(step: int) -> dict:
    symbolic = step in SYMBOLIC_STEPS
    fallback = "teacher_timeout" if step in FALLBACK_STEPS else None
    loss = None if symbolic else 2.5 * math.exp(-step / 25) + 0.05 * math.sin(step)
    predicted = {"lora": 0.02 + 0.001 * step, "symbolic": 0.05 - 0.001 * step} if step > 4 else None
    gain = (0.8 * predicted["symbolic" if symbolic else "lora"] + 0.003 * math.cos(step)
            if predicted and step % 3 != 0 else None)
    return {
        "kind": "train", "step": step, "route": "symbolic" if symbolic else "lora", "fallback": fallback,
        "loss": loss, "grad_norm": None if symbolic else 1.0 + 0.3 * math.cos(step / 2), "lr": 1e-3,
        "tokens": 0 if symbolic else 256, "wall_s": 0.1, "time": 1.7e9 + step, "prompt_version": version_at(step),
        "gain": gain,
        "decision": {"route": "symbolic" if (symbolic or fallback) else "lora", "predicted": predicted,
                     "explored": step == 20, "reason": "plateau" if symbolic else "default", "index": step,
                     "router": "bandit"},
        "signals": {"loss_ema": 2.5 * math.exp(-step / 25), "slope": -0.1 * math.exp(-step / 25),
                    "rel_slope": -0.04, "grad_norm_ema": 1.0, "grad_norm_z": 0.1, "spike": False,
                    "plateau": symbolic} if step > 1 else {},
        "symbolic": {"calls": 3, "tokens": 900, "cost_usd": 0.0125, "accepted": 2, "rejected": {"duplicate": 1},
                     "malformed": False, "submitted_step": step} if symbolic else None,
    }


def full_events() -> list[dict]:
    """40 steps: LoRA, 4 symbolic steps (new prompt versions at 12, 27, 35), 2 fallbacks, evals every 5."""
    records = [{"kind": "prompt", "step": 0, "version": 0, "text": PROMPTS[0]}]
    for step in range(1, 41):
        records.append(train_record(step))
        if step in VERSION_STEPS.values():
            v = version_at(step)
            records.append({"kind": "prompt", "step": step, "version": v, "text": PROMPTS[v]})
        if step % 5 == 0:
            loss = 2.0 - 0.02 * step
            records.append({"kind": "eval", "step": step, "eval_loss": loss, "eval_ppl": math.exp(loss),
                            "prompt_version": version_at(step)})
    return records


@pytest.fixture
def run(tmp_path):
    run_dir, _ = make_run(tmp_path)
    write_events(run_dir, full_events(), torn_tail=True)
    write_checkpoint(run_dir, 10, [0])
    write_checkpoint(run_dir, 30, [0, 1, 2])
    write_checkpoint(run_dir, 40, [0, 1, 2, 9], complete=False)  # half-written: ignored
    return run_dir


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def texts(ax) -> list[str]:
    return [t.get_text() for t in ax.texts]


# ---------------------------------------------------------------------------------------- report

def test_report_png_has_every_panel(run, tmp_path, capsys):
    out = write_report(run)
    assert out == run / "report.png"
    assert png_size(out) == (1400, 1000) and out.stat().st_size > 40_000
    assert not list(run.glob(".report.png.*"))  # written via a temporary file, renamed into place

    fig = draw_report(run)
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert {"loss", "grad_norm", "slope", "route", "gain", "summary"} <= set(axes)
    # prompt versions v1..v3 labelled on the loss panel, a dashed line per version on each step panel
    assert [t for t in texts(axes["loss"]) if t.startswith("v")] == ["v1", "v2", "v3"]
    vlines = [line.get_xdata()[0] for line in axes["slope"].lines if line.get_linestyle() == "--"]
    assert vlines == [12, 27, 35]
    # markers coloured by route: 34 LoRA steps with a loss, of which 2 are fallbacks; symbolic steps have none
    loss_legend = [t.get_text() for t in axes["loss"].get_legend().get_texts()]
    assert {"LoRA", "symbolic → LoRA fallback", "eval loss"} <= set(loss_legend)
    assert "loss EMA, router's view (decay 0.9, from the first loss)" in loss_legend
    assert "symbolic" not in loss_legend
    route_legend = [t.get_text() for t in axes["route"].get_legend().get_texts()]
    assert route_legend[:3] == ["LoRA (34)", "symbolic (4)", "symbolic → LoRA fallback (2)"]
    eval_line = next(line for line in axes["loss"].lines if line.get_label() == "eval loss")
    assert list(eval_line.get_xdata()) == [5, 10, 15, 20, 25, 30, 35, 40]
    assert eval_line.get_linestyle() == "-"  # 8 evaluations, every 5 steps: a line
    # predicted vs realized gains: one point per measured gain with a prediction
    gain_legend = [t.get_text() for t in axes["gain"].get_legend().get_texts()]
    gained = [r for r in full_events() if r["kind"] == "train" and r["gain"] is not None]
    n_gains = len(gained)
    assert gain_legend == [f"LoRA ({n_gains - 4})", "symbolic → LoRA fallback (2)", "symbolic (2)",
                           "predicted = realized"]  # symbolic gains at steps 20 and 35, fallbacks at 8 and 16
    assert sum(len(c.get_offsets()) for c in axes["gain"].collections) == n_gains
    assert any(t.startswith("the router is learning: its predictions\ntrack realized gains (r = 0.")
               and t.endswith(f", n = {n_gains})") for t in texts(axes["gain"]))

    assert main(["report", str(run), "--out", str(tmp_path / "sub" / "r.png")]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "sub" / "r.png")
    assert png_size(tmp_path / "sub" / "r.png") == (1400, 1000)


def test_summary_counts_routes_teacher_and_evals(run):
    from neurosym.observe.prompt_history import prompt_versions, run_events
    lines = "\n".join(summarize(run_events(run), prompt_versions(run)))
    assert "steps          40 (last 40)" in lines
    assert "LoRA         34" in lines and "symbolic     4" in lines and "fallbacks    2" in lines
    assert "2 x teacher_timeout" in lines and "explored     1" in lines
    assert "teacher        12 calls, $0.0500" in lines
    assert "example rewrites: 8 kept, 4 refused\n    4 x duplicate" in lines
    # 4 symbolic updates: 3 new versions (12, 27, 35); the one at step 20 recorded no reason
    assert ("symbolic       4 updates\n  prompt changed   3\n  prompt unchanged 1\n    1 x no reason recorded"
            in lines)
    assert "prompt         v3 at step 35 (3 new)" in lines
    assert "eval loss      1.9000 -> 1.2000" in lines and "best         1.2000 at step 40" in lines


def test_report_of_a_lora_only_run_with_nulls(tmp_path):
    run_dir, _ = make_run(tmp_path)
    records = [{"kind": "train", "step": s, "route": "lora", "loss": [3.0, None, "nan", 2.5, 2.4][s - 1],
                "grad_norm": [None, 1.0, "inf", 0.9, None][s - 1], "lr": 1e-3, "tokens": 64, "wall_s": 0.1,
                "time": 0.0} for s in range(1, 6)]  # no decision, signals, gain, symbolic (the plain LoRA loop)
    write_events(run_dir, records)
    fig = draw_report(run_dir)
    axes = {ax.get_label(): ax for ax in fig.axes}
    assert "no gains measured" in texts(axes["gain"])
    assert "no loss slope (signals.slope) logged" in texts(axes["slope"])
    assert not [t for t in texts(axes["loss"]) if t.startswith("v")]  # no prompt change
    points = [c for c in axes["loss"].collections]
    assert sum(len(c.get_offsets()) for c in points) == 3  # the 3 finite losses
    assert sum(len(c.get_offsets()) for c in axes["grad_norm"].collections) == 2
    assert png_size(write_report(run_dir)) == (1400, 1000)

    write_events(run_dir, [])  # a run that has not logged a step yet
    axes = {ax.get_label(): ax for ax in draw_report(run_dir).axes}
    assert "no training loss logged" in texts(axes["loss"]) and "no training steps logged" in texts(axes["route"])
    assert write_report(run_dir).exists()


def test_report_gains_without_predictions_say_so(tmp_path):
    run_dir, _ = make_run(tmp_path)
    write_events(run_dir, [{"kind": "train", "step": 1, "route": "lora", "loss": 1.0, "gain": 0.1,
                            "decision": {"route": "lora", "predicted": None}}])
    axes = {ax.get_label(): ax for ax in draw_report(run_dir).axes}
    assert "1 gains measured,\nnone with a router prediction" in texts(axes["gain"])


def test_report_says_a_flat_router_signal_why_prompts_stayed_and_alerts(tmp_path):
    from neurosym.observe.report import prompt_versions, run_events
    run_dir, _ = make_run(tmp_path)
    records = [{"kind": "train", "step": s, "route": "lora" if s % 2 else "symbolic", "loss": 1.0, "gain": 0.0,
                "decision": {"route": "lora" if s % 2 else "symbolic", "predicted": {"lora": 0.1 * s, "symbolic": 0.0}},
                **({} if s % 2 else {"symbolic": {"calls": 3, "unchanged_reason": "elided" if s == 2 else "identical"}})}
               for s in range(1, 7)]
    records.append({"kind": "alert", "step": 4, "text": "every gain the router learnt from was the same"})
    write_events(run_dir, records)
    axes = {ax.get_label(): ax for ax in draw_report(run_dir).axes}
    assert any("every realized gain was 0" in t and "no signal" in t for t in texts(axes["gain"]))
    lines = "\n".join(summarize(run_events(run_dir), prompt_versions(run_dir)))
    # was: "prompt kept  3 / 2 x identical / 1 x elided"
    assert ("symbolic       3 updates\n  prompt changed   0\n  prompt unchanged 3\n"
            "    2 x same prompt proposed\n    1 x proposal elided (...)") in lines
    assert "  3 symbolic = 0 (prompt unchanged)" in lines
    assert "warning        every gain the router learn" in lines


def _eval_line(run_dir):
    axes = {ax.get_label(): ax for ax in draw_report(run_dir).axes}
    return next(line for line in axes["loss"].lines if line.get_label().startswith("eval loss"))


@pytest.mark.parametrize("eval_steps", [[0, 40], [0, 20, 40], [0, 2, 4, 40]])
def test_sparse_or_far_apart_evaluations_are_markers_not_a_trend_line(tmp_path, eval_steps):
    """Was: two evaluations (steps 0 and 40) joined by a line, a trend nobody measured."""
    run_dir, _ = make_run(tmp_path)
    records = [{"kind": "train", "step": s, "route": "lora", "loss": 3.0 / s} for s in range(1, 41)]
    records += [{"kind": "eval", "step": s, "eval_loss": 2.0 - s / 40} for s in eval_steps]
    write_events(run_dir, records)
    line = _eval_line(run_dir)
    assert line.get_linestyle() == "None" and line.get_marker() == "s"
    assert list(line.get_xdata()) == eval_steps
    assert line.get_label() == f"eval loss ({len(eval_steps)} evaluations)"


def test_regular_evaluations_keep_their_line(tmp_path):
    run_dir, _ = make_run(tmp_path)
    records = [{"kind": "train", "step": s, "route": "lora", "loss": 3.0 / s} for s in range(1, 41)]
    records += [{"kind": "eval", "step": s, "eval_loss": 2.0 - s / 40} for s in range(0, 41, 10)]
    write_events(run_dir, records)
    assert _eval_line(run_dir).get_linestyle() == "-"


def test_the_loss_ema_is_drawn_at_the_step_it_describes_and_says_whose_it_is(tmp_path):
    """Was: "loss EMA" drawn one step late (each record holds the EMA before its step), lying above
    every loss point with nothing saying it is the router's slow EMA seeded by the first loss."""
    run_dir, _ = make_run(tmp_path)
    records, ema = [], None
    for s in range(1, 11):
        loss = 5.0 if s == 1 else 1.0
        signals = {"step": s - 1, "loss_ema": ema} if ema is not None else {}
        records.append({"kind": "train", "step": s, "route": "lora", "loss": loss, "signals": signals})
        ema = loss if ema is None else 0.9 * ema + 0.1 * loss
    write_events(run_dir, records)
    axes = {ax.get_label(): ax for ax in draw_report(run_dir).axes}
    line = next(li for li in axes["loss"].lines if "EMA" in li.get_label())
    assert line.get_label() == "loss EMA, router's view (decay 0.9, from the first loss)"
    assert list(line.get_xdata()) == list(range(1, 10))   # the EMA through step k, at step k
    assert line.get_ydata()[0] == 5.0                      # starts on the first loss point


@pytest.mark.parametrize("slope,n,verdict", [
    (-1.0, 12, "the router is not learning: its predictions\ndo not track realized gains (r = -"),
    (1.0, 12, "the router is learning: its predictions\ntrack realized gains (r = "),
    (-1.0, 4, "too few points to tell whether the router is\nlearning (n = 4; it takes 6)"),
])
def test_the_router_panel_says_in_words_whether_the_router_is_learning(tmp_path, slope, n, verdict):
    """Was: "n=16, r=-0.31" and nothing saying that the router was not learning."""
    run_dir, _ = make_run(tmp_path)
    records = []
    for s in range(1, n + 1):
        predicted = 0.01 * s
        gain = slope * predicted + 0.002 * math.sin(7 * s)
        records.append({"kind": "train", "step": s, "route": "lora", "loss": 1.0, "gain": gain,
                        "decision": {"route": "lora", "predicted": {"lora": predicted, "symbolic": 0.0}}})
    write_events(run_dir, records)
    axes = {ax.get_label(): ax for ax in draw_report(run_dir).axes}
    said = [t for t in axes["gain"].texts if t.get_gid() == "verdict"]
    assert len(said) == 1 and said[0].get_text().startswith(verdict), said[0].get_text()
    assert said[0].get_text().endswith(f"n = {n})") or n < 6


def test_router_verdict_thresholds():
    from neurosym.observe.report import router_verdict
    assert router_verdict(0.31, 16)[0].startswith("the router is learning weakly")
    assert router_verdict(None, 16)[0].startswith("the router predicted one gain for every update")
    assert router_verdict(0.9, 5)[0].startswith("too few points")


def test_report_without_events_is_a_user_error(tmp_path, capsys):
    run_dir, _ = make_run(tmp_path)
    assert main(["report", str(run_dir)]) == 2
    assert "no events.jsonl" in capsys.readouterr().err
    assert not (run_dir / "report.png").exists()


# ---------------------------------------------------------------------------------------- prompts

def test_prompt_history_merges_checkpoint_and_events(run):
    history = prompt_history(run)
    assert [(h["version"], h["step"], h["text"]) for h in history] == \
        [(v, VERSION_STEPS[v], PROMPTS[v]) for v in range(4)]  # v3 from events, not the incomplete step-40's v9
    # last eval loss while current (evals every 5 steps, loss 2.0 - 0.02*step, tagged with prompt_version)
    assert [(h["eval_loss"], h["n_evals"]) for h in history] == \
        [(pytest.approx(1.8), 2), (pytest.approx(1.5), 3), (pytest.approx(1.4), 1), (pytest.approx(1.2), 2)]
    assert [h["train_steps"] for h in history] == [11, 15, 8, 6]
    assert [h["current"] for h in history] == [False, False, False, True]


def test_prompt_history_without_version_tags_uses_step_ranges(tmp_path):
    run_dir, _ = make_run(tmp_path)
    records = [{k: v for k, v in r.items() if k != "prompt_version"} for r in full_events()
               if r["kind"] != "prompt" and r["step"] <= 30]
    write_events(run_dir, records)
    write_checkpoint(run_dir, 30, [0, 1, 2])
    history = prompt_history(run_dir)
    # an eval at the step a version appeared ran under it (the update came before the eval)
    assert [(h["version"], h["eval_loss"], h["n_evals"]) for h in history] == \
        [(0, pytest.approx(1.8), 2), (1, pytest.approx(1.5), 3), (2, pytest.approx(1.4), 1)]


def test_prompt_history_of_a_new_run_is_the_config_prompt(tmp_path):
    run_dir, _ = make_run(tmp_path)
    history = prompt_history(run_dir)  # no events, no checkpoint yet
    assert history == [{"version": 0, "step": 0, "text": "Add the numbers.", "eval_loss": None, "n_evals": 0,
                        "train_steps": 0, "current": True}]
    assert format_prompt_history(history) == "v0   step 0      no eval  [current]\n     Add the numbers."
    assert "no system prompt" in format_prompt_history([])


def test_prompts_cli_prints_versions_steps_and_scores(run, capsys):
    assert main(["prompts", str(run)]) == 0
    out = capsys.readouterr().out
    headers = [line for line in out.splitlines() if line.startswith("v")]
    assert headers == ["v0   step 0      eval loss 1.8000 (2 evals)",
                       "v1   step 12     eval loss 1.5000 (3 evals)",
                       "v2   step 27     eval loss 1.4000 (1 eval)",
                       "v3   step 35     eval loss 1.2000 (2 evals)  [current]"]
    for text in PROMPTS.values():
        assert f"     {text}\n" in out
    assert main(["prompts", str(run / "nowhere")]) == 2
    assert "not a run directory" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------- export

def populate_store(run_dir: Path, cfg) -> list[Example]:
    train, _ = load_examples(cfg.data.train, cfg.data)
    rewrites = [Rewrite(p.with_prompt(f"Compute the sum: {i}. {p.prompt}", ""), p, "be explicit")
                for i, p in enumerate(train[:3])]
    with RemakeStore(run_dir / "remake.sqlite") as store:
        store.add(rewrites[:2], step=12, prompt_version=1, teacher_model="gpt-4o-mini")
        store.add(rewrites[2:], step=27, prompt_version=2, teacher_model="gpt-4o-mini")
    return [rw.example for rw in rewrites]


@pytest.mark.parametrize("fmt,name", [("jsonl", "refined.jsonl"), ("parquet", "refined.parquet"), ("hf", "refined_hf")])
def test_export_round_trips_through_load_examples(tmp_path, capsys, fmt, name):
    run_dir, cfg = make_run(tmp_path)
    refined = populate_store(run_dir, cfg)
    out = tmp_path / "export" / name
    assert main(["export", str(run_dir), "--out", str(out), "--format", fmt]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"exported 3 rows to {out}"
    back, report = load_examples(out, cfg.data)
    assert report.skipped == 0
    assert [(e.prompt, e.response) for e in back] == [(e.prompt, e.response) for e in refined]
    assert all(e.prompt.startswith("Compute the sum: ") for e in back)


def test_export_all_puts_training_rows_first_with_provenance(tmp_path, capsys):
    run_dir, cfg = make_run(tmp_path)
    refined = populate_store(run_dir, cfg)
    out = tmp_path / "all.jsonl"
    assert main(["export", str(run_dir), "--out", str(out), "--only", "all"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == f"exported 27 rows (3 refined + 24 training) to {out}"
    train, _ = load_examples(cfg.data.train, cfg.data)
    back, _ = load_examples(out, cfg.data)
    assert [(e.prompt, e.response) for e in back] == [(e.prompt, e.response) for e in train + refined]
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert rows[0]["step"] is None and rows[0]["source"].endswith("train.jsonl:1")
    assert [(r["source"], r["step"], r["prompt_version"]) for r in rows[24:]] == \
        [("remake:1", 12, 1), ("remake:2", 12, 1), ("remake:3", 27, 2)]


def test_export_only_refined_without_a_store_is_a_clear_error(tmp_path, capsys):
    run_dir, _ = make_run(tmp_path)
    out = tmp_path / "x.jsonl"
    assert main(["export", str(run_dir), "--out", str(out), "--only", "refined"]) == 2
    err = capsys.readouterr().err
    assert "has no remake store yet (remake.sqlite)" in err and "Leave out --only" in err
    assert not out.exists() and not (run_dir / "remake.sqlite").exists()  # checking did not create one
    assert main(["export", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_export_of_an_empty_store_to_parquet_is_a_user_error(tmp_path, capsys):
    run_dir, _ = make_run(tmp_path)
    RemakeStore(run_dir / "remake.sqlite").close()
    assert main(["export", str(run_dir), "--out", str(tmp_path / "e.parquet"), "--format", "parquet"]) == 2
    assert "nothing to export" in capsys.readouterr().err
    assert main(["export", str(run_dir), "--out", str(tmp_path / "e.jsonl")]) == 0
    assert "exported 0 rows" in capsys.readouterr().out and (tmp_path / "e.jsonl").read_text() == ""


class FakeWandb(types.ModuleType):
    """Records what `neurosym export --wandb` asks of wandb."""

    def __init__(self):
        super().__init__("wandb")
        self.calls: list = []
        fake = self

        class Artifact:
            def __init__(self, name, type, metadata=None):
                self.name, self.type, self.metadata, self.files = name, type, metadata, []

            def add_file(self, path):
                self.files.append(("file", path))

            def add_dir(self, path):
                self.files.append(("dir", path))

        class Run:
            dir = None

            def log_artifact(self, art):
                fake.calls.append(("log_artifact", art))

            def finish(self):
                fake.calls.append(("finish",))

        self.Artifact = Artifact
        self._run = Run

    def init(self, **kw):
        self.calls.append(("init", kw))
        return self._run()


def test_export_uploads_a_dataset_artifact_to_the_runs_wandb_id(tmp_path, capsys, monkeypatch):
    run_dir, cfg = make_run(tmp_path, tracking="offline")
    populate_store(run_dir, cfg)
    out = tmp_path / "refined.jsonl"
    assert main(["export", str(run_dir), "--out", str(out), "--wandb"]) == 2  # no W&B run id recorded
    assert "wandb_run_id missing" in capsys.readouterr().err

    (run_dir / "wandb_run_id").write_text("abc123def456\n")
    fake = FakeWandb()
    monkeypatch.setitem(sys.modules, "wandb", fake)
    assert main(["export", str(run_dir), "--out", str(out), "--wandb"]) == 0
    printed = capsys.readouterr().out
    assert f"exported 3 rows to {out}" in printed and "uploaded artifact synth-refined (type dataset)" in printed
    (_, init), (_, art), finish = fake.calls
    assert init == {"id": "abc123def456", "resume": "allow", "mode": "offline", "project": "neurosym",
                    "entity": None, "dir": str(run_dir)}
    assert art.type == "dataset" and art.files == [("file", str(out))] and art.metadata["rows"] == 3
    assert finish == ("finish",)


def test_prompts_cli_escapes_terminal_control_codes(tmp_path, capsys):
    """A teacher-written prompt cannot recolour, move the cursor, hide or reorder text on the terminal."""
    run_dir, _ = make_run(tmp_path)
    hostile = ("Add them.\x1b[2J\x1b[31mRED\x1b[0m\rOVERWRITE\x07 bell\x08\x9b31m "
               "abc\u202edcba\u200b zero-width\ufeff; keep\ttabs\nand new lines; caf\u00e9 \u00d7 \U0001f600")
    write_events(run_dir, [{"kind": "prompt", "step": 0, "version": 0, "text": "Add the numbers."},
                           {"kind": "prompt", "step": 3, "version": 1, "text": hostile}])
    assert main(["prompts", str(run_dir)]) == 0
    out = capsys.readouterr().out
    assert not any(c in out for c in "\x1b\r\x07\x08\x9b\u202e\u200b\ufeff")
    for shown in (r"\x1b[2J\x1b[31mRED\x1b[0m\x0dOVERWRITE\x07 bell\x08\x9b31m", r"abc\u202edcba\u200b",
                  r"zero-width\ufeff; keep" + "\ttabs", "     and new lines; caf\u00e9 \u00d7 \U0001f600"):
        assert shown in out
