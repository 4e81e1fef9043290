"""Default prices from LiteLLM's bundled cost map, `check_teacher` for `neurosym validate`, and the
availability policy the loop applies (pause after failures, teacher down for good: continue or stop)."""
from __future__ import annotations

import logging

import pytest

from neurosym.config.schema import SymbolicConfig, TeacherConfig
from neurosym.teacher import (BudgetExhausted, TeacherConfigError, TeacherUnavailable, check_teacher,
                              make_teacher, resolve_price)
from neurosym.teacher.availability import TeacherAvailability
from neurosym.teacher.errors import TeacherDown

KEY_ENV = "NEUROSYM_TEST_TEACHER_KEY"


@pytest.fixture
def keyed(openai_server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    return openai_server


def tcfg(server, **kw):
    base = dict(model=server.model, base_url=server.base_url, api_key_env=KEY_ENV, timeout_s=5.0, max_retries=0)
    base.update(kw)
    return TeacherConfig(**base)


# -- prices -----------------------------------------------------------------------------------------

def test_default_price_comes_from_litellms_bundled_map(monkeypatch):
    import os
    before = dict(os.environ)
    p = resolve_price(TeacherConfig(model="gpt-4o-mini"))
    assert (p.input, p.output) == pytest.approx((0.00015, 0.0006)) and p.enforceable
    assert p.source == "litellm:gpt-4o-mini" and "LiteLLM" in p.describe()
    assert resolve_price(TeacherConfig(model="openai/gpt-4o-mini")).input == pytest.approx(0.00015)
    set_one = resolve_price(TeacherConfig(model="gpt-4o-mini", price_per_1k_tokens={"input": 2.0}))
    assert (set_one.input, set_one.output, set_one.source) == (2.0, 0.0, "config")
    assert resolve_price(TeacherConfig(provider="local", model="x")).source == "local"
    assert dict(os.environ) == before


def test_prices_come_from_litellms_public_cost_map(monkeypatch, caplog):
    """litellm.model_cost (public, whatever map LiteLLM loaded), not a file inside the package; no
    LiteLLM at all: prices are unknown, with a warning, and nothing breaks."""
    import sys

    import litellm

    from neurosym.teacher import pricing

    monkeypatch.setitem(litellm.model_cost, "in-house-13b", {"input_cost_per_token": 2e-6,
                                                             "output_cost_per_token": 4e-6})
    pricing._cost_map.cache_clear()
    try:
        p = resolve_price(TeacherConfig(model="openai/in-house-13b"))
        assert (p.input, p.output, p.source) == (pytest.approx(0.002), pytest.approx(0.004), "litellm:in-house-13b")
        pricing._cost_map.cache_clear()
        monkeypatch.setitem(sys.modules, "litellm", None)   # import litellm -> ImportError
        with caplog.at_level(logging.WARNING, logger="neurosym.teacher"):
            p = resolve_price(TeacherConfig(model="gpt-4o-mini", budget_usd=1))
        assert (p.source, p.enforceable) == ("unknown", False)
        assert "cost map is unavailable" in caplog.text and "budget_usd=1 cannot be enforced" in caplog.text
    finally:
        pricing._cost_map.cache_clear()


def test_unknown_model_warns_that_the_budget_cannot_be_enforced(caplog):
    with caplog.at_level(logging.WARNING, logger="neurosym.teacher"):
        p = resolve_price(TeacherConfig(model="my-private-model", budget_usd=5))
    assert (p.input, p.output, p.enforceable) == (0.0, 0.0, False)
    assert "budget_usd=5 cannot be enforced" in caplog.text and "price_per_1k_tokens" in caplog.text


def test_budget_bites_by_default_for_a_known_model(openai_server, monkeypatch, tmp_path):
    """No price in the config: the map's gpt-4o-mini price is charged, so budget_usd stops spending."""
    openai_server.models = ("gpt-4o-mini",)
    monkeypatch.setenv(KEY_ENV, openai_server.api_key)
    eng = make_teacher(TeacherConfig(model="gpt-4o-mini", base_url=openai_server.base_url, api_key_env=KEY_ENV,
                                     max_retries=0, budget_usd=1e-5), tmp_path)
    assert eng.price.source == "litellm:gpt-4o-mini"
    with pytest.raises(BudgetExhausted):
        for i in range(200):
            eng(f"question {i} " + "word " * 30)
    assert eng.usage.cost_usd >= 1e-5 and len(openai_server.chat_requests) < 200


# -- check_teacher (neurosym validate) --------------------------------------------------------------

def test_check_teacher_ok_line(keyed):
    line = check_teacher(tcfg(keyed, price_per_1k_tokens={"input": 0.5, "output": 1.5}))
    assert line.startswith("teacher ok:") and keyed.base_url in line and "key accepted" in line
    assert repr(keyed.model) in line and "$0.5 in / $1.5 out per 1k tokens" in line
    assert keyed.chat_requests[0]["json"]["max_tokens"] == 1


def test_check_teacher_says_when_the_budget_cannot_bite(keyed):
    line = check_teacher(tcfg(keyed, budget_usd=2.0))
    assert "budget_usd cannot be enforced" in line


@pytest.mark.parametrize("how,match", [("key", r"401 .*rejected.*\$NEUROSYM_TEST_TEACHER_KEY"),
                                       ("model", r"model 'nope' not found .*teacher.model"),
                                       ("url", r"connection refused")])
def test_check_teacher_failures_are_user_errors(keyed, monkeypatch, how, match):
    from neurosym.errors import is_user_error
    kw = {}
    if how == "key":
        monkeypatch.setenv(KEY_ENV, "sk-wrong-key-0000000000")
    elif how == "model":
        kw["model"] = "nope"
    else:
        import socket
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        kw["base_url"] = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(TeacherConfigError, match=match) as err:
        check_teacher(tcfg(keyed, **kw))
    assert is_user_error(err.value) and "sk-wrong-key" not in str(err.value)


# -- availability policy ----------------------------------------------------------------------------

def test_symbolic_config_has_the_down_knobs():
    cfg = SymbolicConfig()
    assert (cfg.on_teacher_down, cfg.down_after_failures, cfg.down_for_steps) == ("continue", 3, 20)
    with pytest.raises(ValueError):
        SymbolicConfig(on_teacher_down="panic")
    with pytest.raises(ValueError):
        SymbolicConfig(down_after_failures=0)


def test_pause_after_failures_in_a_row_is_configurable():
    avail = TeacherAvailability(SymbolicConfig(down_after_failures=2, down_for_steps=5))
    flaky = TeacherUnavailable("timeout", kind="timeout")
    assert avail.note(flaky, 10).message is None and avail.unavailable_reason(11) is None
    out = avail.note(flaky, 11)
    assert "paused until step 16" in out.message and not out.stop
    assert avail.unavailable_reason(15) and avail.unavailable_reason(16) is None
    avail.note(None, 16)
    assert avail.failures_in_row == 0
    again = TeacherAvailability(SymbolicConfig())
    again.load_state_dict(avail.state_dict())
    assert again.state_dict() == avail.state_dict()


@pytest.mark.parametrize("policy", ["continue", "stop"])
def test_teacher_down_for_good_is_loud_and_can_stop(policy):
    avail = TeacherAvailability(SymbolicConfig(on_teacher_down=policy))
    out = avail.note(TeacherDown("401 from http://h/v1: the key was rejected", kind="auth"), 7)
    assert out.permanent and out.message.startswith("TEACHER DOWN at step 7") and out.stop == (policy == "stop")
    assert "teacher down for good" in avail.unavailable_reason(8) and avail.unavailable_reason(10**6)
    assert ("on_teacher_down: stop" in out.message)
    budget = TeacherAvailability(SymbolicConfig(on_teacher_down=policy))
    out = budget.note(BudgetExhausted("spent"), 3)
    assert not out.stop and "budget spent" in budget.unavailable_reason(4)
    with pytest.raises(TypeError):
        budget.note(ValueError("a bug, not a teacher failure"), 5)


def test_a_python_teacher_without_a_budget_is_free_and_quiet(caplog):
    from neurosym.config.schema import TeacherConfig
    from neurosym.teacher.pricing import resolve_price
    cfg = TeacherConfig(provider="python", callable="experiments.testbed.teacher:simulated", model="sim")
    with caplog.at_level("WARNING"):
        price = resolve_price(cfg)
    assert (price.input, price.output, price.enforceable) == (0.0, 0.0, True) and not caplog.records
    with caplog.at_level("WARNING"):  # with a budget, an unknown price is still said: it cannot bite
        assert not resolve_price(cfg.model_copy(update={"budget_usd": 1.0})).enforceable
    assert "cannot be enforced" in caplog.text
