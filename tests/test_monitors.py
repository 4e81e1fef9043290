"""Monitors against hand-computed values: slope, EMA, plateau, grad-norm z-score, state."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from monitors import FEATURE_NAMES, GradNormMonitor, LossSlope, MonitorSuite, PlateauDetector, Signals
from monitors.loss_slope import least_squares_slope
from neurosym.config.schema import MonitorsConfig


def test_slope_of_a_known_line_is_exact():
    mon = LossSlope(window=10, decay=0.9)
    for t in range(25):
        mon.update(5 - 0.1 * t)
    assert mon.values() == pytest.approx([5 - 0.1 * t for t in range(15, 25)])
    assert mon.slope == pytest.approx(-0.1, abs=1e-12)
    mean = sum(5 - 0.1 * t for t in range(15, 25)) / 10  # 5 - 0.1 * 19.5 = 3.05
    assert mon.mean == pytest.approx(3.05)
    assert mon.rel_slope == pytest.approx(-0.1 / mean, abs=1e-12)


def test_slope_by_hand_on_a_short_window():
    # t = 0,1,2 ; y = 1,3,2 -> slope = sum((t-1)(y-2)) / sum((t-1)^2) = (1*-1 + 0 + 1*0) / 2 = 0.5
    assert least_squares_slope([1.0, 3.0, 2.0]) == pytest.approx(0.5)
    assert least_squares_slope([4.0]) == 0.0
    mon = LossSlope(window=3, decay=0.5)
    for y in (9.0, 1.0, 3.0, 2.0):  # the 9.0 falls out of the window
        mon.update(y)
    assert mon.slope == pytest.approx(0.5)
    assert mon.rel_slope == pytest.approx(0.5 / 2.0)
    assert mon.ready


def test_loss_ema():
    mon = LossSlope(window=4, decay=0.9)
    mon.update(10.0)
    assert mon.ema == 10.0  # starts at the first value
    mon.update(0.0)
    assert mon.ema == pytest.approx(9.0)
    mon.update(1.0)
    assert mon.ema == pytest.approx(0.9 * 9.0 + 0.1 * 1.0)
    assert mon.last == 1.0
    with pytest.raises(ValueError):
        mon.update(float("nan"))


def test_plateau_detector_counts_consecutive_flat_steps():
    det = PlateauDetector(threshold=1e-3, patience=3)
    assert [det.update(x) for x in (0.0, 5e-4, -5e-4)] == [False, False, True]
    assert det.update(-0.01) is False  # a drop resets it
    assert det.update(None) is False and det.flat_steps == 0  # no slope yet: not flat


def test_plateau_turns_on_exactly_after_patience_and_off_on_a_drop():
    cfg = MonitorsConfig(window=5, ema=0.9, plateau_threshold=1e-3, patience=4)
    suite = MonitorSuite(cfg)
    on = []
    for step in range(12):
        suite.observe(step, 2.0, 1.0, True)
        on.append(suite.signals(0, None, True).plateau)
    # the window fills at step 4 (5th loss); flat steps 4, 5, 6, 7 -> on from step 7 = window + patience - 2
    assert on == [False] * 7 + [True] * 5
    suite.observe(12, 1.0, 1.0, True)  # the loss drops: slope over [2,2,2,2,1] = -0.2
    sig = suite.signals(0, None, True)
    assert sig.slope == pytest.approx(-0.2)
    assert sig.rel_slope == pytest.approx(-0.2 / 1.8)
    assert sig.plateau is False


def test_grad_norm_z_score_of_a_spike_by_hand():
    mon = GradNormMonitor(decay=0.5, spike_z=3.0, min_count=2)
    assert mon.update(1.0) == 0.0  # first value: mean 1, var 0
    assert mon.update(3.0) == 0.0  # under min_count; diff 2 -> mean 2, var 0.5 * (0 + 0.5 * 4) = 1
    assert mon.ema == pytest.approx(2.0) and mon.var == pytest.approx(1.0)
    z = mon.update(2.5)  # (2.5 - 2) / 1
    assert z == pytest.approx(0.5) and not mon.spike
    # diff 0.5 -> mean 2.25, var 0.5 * (1 + 0.5 * 0.25) = 0.5625 (std 0.75)
    z = mon.update(6.0)
    assert z == pytest.approx((6.0 - 2.25) / 0.75) and mon.spike  # z = 5 > 3
    assert mon.last == 6.0


def test_grad_norm_spike_after_constant_norms_uses_the_std_floor():
    mon = GradNormMonitor(decay=0.9, spike_z=3.0)
    for _ in range(20):
        mon.update(1.0)
    assert mon.z == 0.0 and not mon.spike
    z = mon.update(1.5)
    assert z == pytest.approx(0.5 / 1e-3)  # std floored at 1e-3 * |mean|
    assert mon.spike


def test_symbolic_steps_do_not_touch_grad_statistics():
    suite = MonitorSuite(MonitorsConfig())
    suite.observe(0, 2.0, 1.0, True)
    suite.observe(1, 1.9, 1.2, True)
    before = suite.grad.state_dict()
    suite.observe(2, 1.8, None, False)
    suite.observe(3, 1.7, 50.0, False)  # a norm passed on a symbolic step is ignored too
    assert suite.grad.state_dict() == before
    sig = suite.signals(prompt_version=2, budget_left=0.5, symbolic_available=True)
    assert sig.grad_norm == 1.2 and sig.steps_since_symbolic == 0 and sig.step == 3
    suite.observe(4, 1.6, 1.1, True)
    assert suite.signals(2, 0.5, True).steps_since_symbolic == 1


def test_non_finite_values_are_skipped():
    suite = MonitorSuite(MonitorsConfig())
    suite.observe(0, 2.0, 1.0, True)
    suite.observe(1, float("nan"), float("inf"), True)
    sig = suite.signals(0, None, True)
    assert sig.loss == 2.0 and sig.grad_norm == 1.0 and suite.loss.count == 1 and suite.grad.count == 1


def _run(suite: MonitorSuite, steps: range, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    out = []
    for step in steps:
        route = "symbolic" if step % 7 == 0 else "lora"
        grad = None if route == "symbolic" else float(rng.uniform(0.5, 1.5) * (10 if step % 50 == 0 else 1))
        suite.observe(step, float(3.0 / (1 + 0.01 * step) + rng.normal(0, 0.01)), grad, route == "lora")
        out.append(suite.signals(step // 7, 1.0, True).as_dict())
    return out


def test_state_round_trip_gives_identical_signals():
    cfg = MonitorsConfig(window=8, patience=3, plateau_threshold=0.05)
    a = MonitorSuite(cfg)
    _run(a, range(100), seed=1)
    state = json.loads(json.dumps(a.state_dict()))  # through JSON, as a checkpoint would
    b = MonitorSuite(cfg)
    b.load_state_dict(state)
    assert b.state_dict() == a.state_dict()
    assert _run(a, range(100, 200), seed=2) == _run(b, range(100, 200), seed=2)


def _leaves(obj) -> int:
    if isinstance(obj, dict):
        return sum(_leaves(v) for v in obj.values())
    if isinstance(obj, list):
        return sum(_leaves(v) for v in obj)
    return 1


def test_memory_is_bounded():
    suite = MonitorSuite(MonitorsConfig(window=20))
    _run(suite, range(100), seed=0)
    size_100 = _leaves(suite.state_dict())
    _run(suite, range(100, 10_000), seed=0)
    assert _leaves(suite.state_dict()) == size_100
    assert len(suite.loss.values()) == 20 and len(suite.loss._buf) == 20


def test_signals_as_dict_and_features():
    suite = MonitorSuite(MonitorsConfig())
    empty = suite.signals(prompt_version=0, budget_left=None, symbolic_available=True)
    assert empty.loss is None and empty.slope == 0.0 and not empty.plateau
    suite.observe(0, 2.0, 0.5, True)
    sig = suite.signals(prompt_version=3, budget_left=0.0, symbolic_available=False)
    assert isinstance(sig, Signals)
    with pytest.raises(AttributeError):
        sig.loss = 1.0  # frozen
    d = sig.as_dict()
    assert d["symbolic_unavailable_reason"] == "budget spent"
    json.dumps(d, allow_nan=False)
    assert sig.as_dict("monitor/")["monitor/slope"] == 0.0
    f = sig.as_features()
    assert f.shape == (len(FEATURE_NAMES),) and f.dtype == np.float64 and np.isfinite(f).all()
    col = dict(zip(FEATURE_NAMES, f))
    assert col["loss"] == 2.0 and col["grad_norm"] == 0.5 and col["symbolic_available"] == 0.0
    assert col["log1p_prompt_version"] == pytest.approx(math.log1p(3))
    assert col["budget_unlimited"] == 0.0 and col["log1p_budget_left"] == 0.0
    assert dict(zip(FEATURE_NAMES, empty.as_features()))["budget_unlimited"] == 1.0
