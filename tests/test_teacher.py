"""The teacher engines against a real HTTP server speaking the OpenAI protocol (tests/openai_server.py)."""
from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from neurosym.config.schema import TeacherConfig
from neurosym.teacher import (BudgetExhausted, TeacherConfigError, TeacherUnavailable, TeacherUsage,
                              make_teacher, preflight)
from neurosym.testing.openai_server import OpenAIServer, count_tokens

KEY_ENV = "NEUROSYM_TEST_TEACHER_KEY"
FAST = dict(base_s=0.01, max_s=0.05)


def tcfg(server, **kw) -> TeacherConfig:
    base = dict(model=server.model, base_url=server.base_url, api_key_env=KEY_ENV, timeout_s=5.0, max_retries=2)
    base.update(kw)
    return TeacherConfig(**base)


def engine(server, run_dir, **kw):
    from neurosym.teacher import Backoff
    return make_teacher(tcfg(server, **kw), run_dir, backoff=Backoff(**FAST))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- calls, usage, cache ----------------------------------------------------------------------------

def test_generate_records_usage_and_cost(keyed, tmp_path):
    eng = engine(keyed, tmp_path, price_per_1k_tokens={"input": 1.0, "output": 2.0}, temperature=0.3, max_tokens=50)
    reply = eng.complete("say something nice", system_prompt="be kind")
    assert reply.text == "Echo: say something nice" and not reply.cached
    (req,) = keyed.chat_requests
    assert req["authorized"] and req["json"]["model"] == keyed.model
    assert req["json"]["messages"] == [{"role": "system", "content": "be kind"},
                                       {"role": "user", "content": "say something nice"}]
    assert req["json"]["temperature"] == 0.3 and req["json"]["max_tokens"] == 50
    pt, ct = count_tokens("be kind say something nice"), count_tokens(reply.text)
    assert (reply.prompt_tokens, reply.completion_tokens) == (pt, ct)
    assert reply.cost_usd == pytest.approx((pt * 1.0 + ct * 2.0) / 1000)
    s = eng.usage.state_dict()
    assert (s["calls"], s["prompt_tokens"], s["completion_tokens"]) == (1, pt, ct)
    assert s["cost_usd"] == pytest.approx(reply.cost_usd) and eng.budget_left is None
    assert eng("plain call") == "Echo: plain call"  # TextGrad's call style, default system prompt
    assert keyed.chat_requests[-1]["json"]["messages"][0]["content"] == eng.system_prompt


def test_cache_replays_without_new_request(keyed, tmp_path):
    eng = engine(keyed, tmp_path)
    first = eng("what is 2+2?", system_prompt="s")
    assert eng("what is 2+2?", system_prompt="s") == first
    assert len(keyed.chat_requests) == 1 and eng.usage.cache_hits == 1
    eng("what is 2+2?", system_prompt="other")          # different messages: a new request
    eng("what is 2+2?", system_prompt="s", max_tokens=7)  # different sampling params: a new request
    assert len(keyed.chat_requests) == 3
    eng.close()
    again = engine(keyed, tmp_path)                       # a resumed run over the same run dir
    with again.meter() as m:
        assert again("what is 2+2?", system_prompt="s") == first
    assert len(keyed.chat_requests) == 3
    assert (m.calls, m.cache_hits, m.cost_usd) == (0, 1, 0.0)
    assert (tmp_path / "teacher" / "teacher_cache.sqlite").is_file()


def test_usage_state_dict_is_json_and_round_trips(keyed, tmp_path):
    eng = engine(keyed, tmp_path, price_per_1k_tokens={"input": 1.0, "output": 1.0})
    keyed.inject("500")
    eng("a")
    eng("a")
    state = json.loads(json.dumps(eng.usage.state_dict()))
    assert state["calls"] == 1 and state["cache_hits"] == 1 and state["retries"] == 1
    assert state["failures"] == {"server_error": 1}
    fresh = TeacherUsage()
    fresh.load_state_dict(state)
    assert fresh.state_dict() == state
    with pytest.raises(ValueError, match="unknown"):
        fresh.load_state_dict({"bogus": 1})


def test_concurrency_is_capped(keyed, tmp_path):
    keyed.latency_s = 0.15
    eng = engine(keyed, tmp_path, max_concurrency=2)
    answers: dict[int, str] = {}
    threads = [threading.Thread(target=lambda i=i: answers.__setitem__(i, eng(f"question {i}"))) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert answers == {i: f"Echo: question {i}" for i in range(6)}
    assert keyed.max_inflight == 2 and eng.usage.calls == 6


# -- retries and failures ---------------------------------------------------------------------------

def test_429_retry_after_is_honoured(keyed, tmp_path):
    eng = engine(keyed, tmp_path)
    keyed.inject("429", retry_after=0.3)
    assert eng("hi") == "Echo: hi"
    r1, r2 = keyed.chat_requests
    assert r1["fault"] == "429" and r2["fault"] is None
    assert r2["time"] - r1["time"] >= 0.3   # backoff alone would be ~0.01 s
    assert eng.usage.failures == {"rate_limit": 1} and eng.usage.retries == 1


def test_500_is_retried_then_succeeds(keyed, tmp_path):
    eng = engine(keyed, tmp_path, max_retries=2)
    keyed.inject("500", times=2)
    assert eng("hi") == "Echo: hi"
    assert len(keyed.chat_requests) == 3 and eng.usage.failures == {"server_error": 2}


def test_exhausted_retries_raise_unavailable(keyed, tmp_path):
    eng = engine(keyed, tmp_path, max_retries=2)
    keyed.inject("500", times=3)
    with pytest.raises(TeacherUnavailable, match="after 3 attempt") as err:
        eng("hi")
    assert err.value.kind == "server_error" and len(keyed.chat_requests) == 3
    assert len(eng.cache) == 0 and eng.usage.calls == 0


def test_hang_past_timeout_raises_unavailable_in_time(keyed, tmp_path):
    eng = engine(keyed, tmp_path, timeout_s=0.4, max_retries=1)
    keyed.inject("hang", times=2, seconds=10)
    t0 = time.monotonic()
    with pytest.raises(TeacherUnavailable, match="timeout_s=0.4") as err:
        eng("hi")
    elapsed = time.monotonic() - t0
    assert err.value.kind == "timeout" and 0.8 <= elapsed < 0.8 + 1.5
    assert eng.usage.failures == {"timeout": 2}


def test_connection_refused_mid_run_is_unavailable(keyed, tmp_path, monkeypatch):
    cfg = tcfg(keyed, base_url=f"http://127.0.0.1:{free_port()}/v1", max_retries=1)
    from neurosym.teacher import Backoff
    eng = make_teacher(cfg, tmp_path, backoff=Backoff(**FAST))
    with pytest.raises(TeacherUnavailable) as err:
        eng("hi")
    assert err.value.kind == "connection"


def test_unknown_model_mid_run_is_config_error(keyed, tmp_path):
    eng = engine(keyed, tmp_path, model="no-such-model")
    with pytest.raises(TeacherConfigError, match="model 'no-such-model' not found .*teacher.model"):
        eng("hi")
    assert len(keyed.chat_requests) == 1  # not retried


def test_budget_cap_raises_after_the_spend(keyed, tmp_path):
    price = {"input": 1.0, "output": 1.0}
    probe = engine(keyed, tmp_path / "probe", price_per_1k_tokens=price)
    cost = probe.complete("first question").cost_usd
    keyed.reset()
    eng = engine(keyed, tmp_path / "run", price_per_1k_tokens=price, budget_usd=cost * 1.5)
    assert eng.budget_left == pytest.approx(cost * 1.5)
    eng("first question")
    assert eng.budget_left == pytest.approx(cost * 0.5)
    eng("second question")   # started under budget: allowed, overshoots
    assert eng.budget_left == 0.0
    with pytest.raises(BudgetExhausted, match="teacher.budget_usd"):
        eng("third question")
    assert len(keyed.chat_requests) == 2
    assert eng("first question") == "Echo: first question"   # cached answers are still free
    assert eng.usage.failures == {"budget": 1}
    resumed = engine(keyed, tmp_path / "run", price_per_1k_tokens=price, budget_usd=cost * 1.5)
    resumed.usage.load_state_dict(eng.usage.state_dict())  # a resumed run keeps its spend
    with pytest.raises(BudgetExhausted):
        resumed("fourth question")


# -- preflight --------------------------------------------------------------------------------------

def test_preflight_ok(keyed):
    res = preflight(tcfg(keyed))
    assert res.model == keyed.model and res.base_url == keyed.base_url
    assert keyed.chat_requests[0]["json"]["max_tokens"] == 1


def test_401_preflight_error_does_not_contain_key(openai_server, monkeypatch, tmp_path, caplog):
    secret = "sk-live-THIS-IS-A-SECRET-0123456789"
    monkeypatch.setenv(KEY_ENV, secret)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(TeacherConfigError, match=r"401 from .*\$NEUROSYM_TEST_TEACHER_KEY was rejected") as err:
        preflight(tcfg(openai_server))
    assert "Incorrect API key" in str(err.value)  # the server echoed the key in its body ...
    assert secret not in str(err.value) and "SECRET-0123" not in str(err.value)  # ... we hid it
    assert err.value.__cause__ is None and err.value.__context__ is None  # no chained server body
    eng = engine(openai_server, tmp_path, price_per_1k_tokens={"input": 1.0, "output": 1.0})
    with pytest.raises(TeacherConfigError) as err2:
        eng("hi")
    assert err2.value.__context__ is None
    texts = [str(err2.value), repr(eng), repr(eng.usage), json.dumps(eng.usage.state_dict()), caplog.text]
    texts += [p.read_bytes().decode("utf-8", "replace") for p in tmp_path.rglob("*") if p.is_file()]
    assert all("THIS-IS-A-SECRET" not in t for t in texts)
    with pytest.raises(TypeError):
        import pickle
        pickle.dumps(eng)


def test_preflight_wrong_url_fails_fast(keyed):
    url = f"http://127.0.0.1:{free_port()}/v1"
    t0 = time.monotonic()
    with pytest.raises(TeacherConfigError, match=rf"teacher.base_url {url}: connection refused — is the server running"):
        preflight(tcfg(keyed, base_url=url, timeout_s=30))
    assert time.monotonic() - t0 < 5


def test_preflight_unknown_model_names_the_key(keyed):
    with pytest.raises(TeacherConfigError, match=r"model 'gpt-x' not found at .*available: teacher-model.*set teacher.model"):
        preflight(tcfg(keyed, model="gpt-x"))


def test_preflight_missing_key_env(openai_server):
    with pytest.raises(TeacherConfigError, match=r"teacher.api_key_env: .*\$NEUROSYM_TEST_TEACHER_KEY is not set"):
        preflight(tcfg(openai_server))
    assert openai_server.requests == []


def test_preflight_base_url_without_v1(keyed):
    with pytest.raises(TeacherConfigError, match="usually ending in /v1"):
        preflight(tcfg(keyed, base_url=keyed.base_url[:-3]))


def test_keyless_server(monkeypatch, tmp_path):
    with OpenAIServer(api_key=None) as srv:
        eng = make_teacher(tcfg(srv, api_key_env=""), tmp_path)
        assert preflight(tcfg(srv, api_key_env="")).model == srv.model
        assert eng("x") == "Echo: x"


# -- no side effects --------------------------------------------------------------------------------

def test_environment_is_never_written(keyed, tmp_path):
    before = dict(os.environ)
    eng = engine(keyed, tmp_path, max_retries=1)
    preflight(tcfg(keyed))
    eng("hello")
    keyed.inject("500", times=2)
    with pytest.raises(TeacherUnavailable):
        eng("boom")
    assert dict(os.environ) == before and "OPENAI_API_KEY" not in os.environ


_SCRIPT = r"""
import json, os, sys
before = dict(os.environ)
from neurosym.config.schema import TeacherConfig
from neurosym.teacher import make_teacher, preflight, load_textgrad, TeacherConfigError
base_url, model, run = sys.argv[1:4]
cfg = TeacherConfig(model=model, base_url=base_url, api_key_env="NEUROSYM_TEST_TEACHER_KEY", timeout_s=5)
preflight(cfg)
eng = make_teacher(cfg, run)
tg = load_textgrad()
x = tg.Variable("old prompt", requires_grad=True, role_description="system prompt")
loss = tg.TextLoss("Evaluate the prompt.", engine=eng)(x)
loss.backward(eng)
tg.TGD([x], engine=eng).step()
diff = sorted(k for k in set(before) | set(os.environ) if before.get(k) != os.environ.get(k))
print(json.dumps({"value": x.value, "env_diff": diff}))
"""


@pytest.mark.slow
def test_no_writes_to_home_cwd_or_environ(keyed, tmp_path):
    """A fresh process (so TextGrad's import runs too): HOME and the cwd stay empty, env unchanged."""
    home, cwd = tmp_path / "home", tmp_path / "cwd"
    home.mkdir()
    cwd.mkdir()
    env = dict(os.environ, HOME=str(home), PYTHONPATH=str(Path(__file__).resolve().parent.parent))  # this tree
    proc = subprocess.run([sys.executable, "-c", _SCRIPT, keyed.base_url, keyed.model, str(tmp_path / "run")], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"value": "old prompt Think step by step.", "env_diff": []}
    assert list(home.rglob("*")) == [] and list(cwd.rglob("*")) == []
    assert (tmp_path / "run" / "teacher" / "textgrad.jsonl").is_file()


# -- local teacher ----------------------------------------------------------------------------------

def test_local_teacher_same_interface(tiny_model_dir, tmp_path, monkeypatch):
    from neurosym.teacher import LocalTeacher
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    cfg = TeacherConfig(provider="local", model=str(tiny_model_dir), max_tokens=5)
    assert preflight(cfg).provider == "local"
    eng = make_teacher(cfg, tmp_path)
    assert isinstance(eng, LocalTeacher)
    reply = eng.complete("What is 2+3?", system_prompt="You are a calculator.")
    assert isinstance(reply.text, str) and reply.completion_tokens <= 5 and reply.prompt_tokens > 10
    assert eng("What is 2+3?", system_prompt="You are a calculator.") == reply.text
    assert eng.usage.calls == 1 and eng.usage.cache_hits == 1
    assert list(home.iterdir()) == [] and sorted(p.name for p in tmp_path.iterdir()) == ["home", "teacher"]


def test_local_teacher_never_cuts_the_prompt(tiny_model_dir, tmp_path):
    """The tiny model's context is 512 tokens: a 470-token prompt is given whole (the answer gets what
    is left); a TextGrad-sized prompt is refused with both sizes, not cut to its end."""
    eng = make_teacher(TeacherConfig(provider="local", model=str(tiny_model_dir), max_tokens=64), tmp_path)
    assert eng.context_length == 512
    assert "context of only 512 tokens" in preflight(TeacherConfig(provider="local", model=str(tiny_model_dir))).note
    fits = eng.complete("y" * 460, system_prompt="S")
    assert fits.prompt_tokens > 460 and fits.prompt_tokens + fits.completion_tokens <= 512
    instructions = "You will give feedback to a variable. " * 20
    with pytest.raises(TeacherUnavailable, match=r"context of 512 tokens; this prompt takes \d+") as err:
        eng(instructions + "x" * 3000)
    assert err.value.kind == "context" and eng.usage.failures == {"context": 1}


def test_local_rendering_without_chat_template():
    from neurosym.teacher.local import render_messages
    from neurosym.model.tiny import build_tokenizer
    msgs = [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    assert render_messages(build_tokenizer(chat_template=False), msgs) == ("S\n\nU\n", False)
    assert render_messages(build_tokenizer(chat_template=True), msgs) == ("[SYS]S\n[USER]U\n[BOT]", True)


def test_local_preflight_bad_path(tmp_path):
    with pytest.raises(TeacherConfigError, match="teacher.model"):
        preflight(TeacherConfig(provider="local", model=str(tmp_path / "missing")))


# -- TextGrad integration ---------------------------------------------------------------------------

def _tgd_responder(messages):
    system, user = messages[0]["content"], messages[-1]["content"]
    if "<IMPROVED_VARIABLE>" in system:       # TGD.step: the optimizer call
        return "<IMPROVED_VARIABLE>new prompt</IMPROVED_VARIABLE>"
    if "gradient (feedback) engine" in system:  # loss.backward: the feedback call
        return "Be more specific about the answer format."
    return "The response is wrong."             # TextLoss forward: the evaluation


def _tgd_setup(server, run_dir):
    from neurosym.teacher import load_textgrad
    tg = load_textgrad()
    server.set_responder(_tgd_responder)
    eng = engine(server, run_dir)
    x = tg.Variable("old prompt", requires_grad=True, role_description="system prompt of the task")
    loss = tg.TextLoss("Evaluate the prompt.", engine=eng)(x)
    loss.backward(eng)
    return tg, eng, x, tg.TGD([x], engine=eng)


def test_textgrad_tgd_updates_variable(keyed, tmp_path):
    tg, eng, x, opt = _tgd_setup(keyed, tmp_path)
    opt.step()
    assert x.value == "new prompt"
    forward, backward, optimizer = keyed.chat_requests
    assert "old prompt" in forward["json"]["messages"][1]["content"]
    assert "Be more specific" in optimizer["json"]["messages"][1]["content"]
    assert eng.usage.calls == 3


@pytest.mark.parametrize("text", ["I think it is fine as it is.", ""])
def test_textgrad_malformed_answer_raises_indexerror(keyed, tmp_path, text):
    """TGD 0.1.8 raises IndexError when the tags are missing; the variable keeps its value."""
    tg, eng, x, opt = _tgd_setup(keyed, tmp_path)
    keyed.inject("malformed", text=text)
    with pytest.raises(IndexError, match="could not be indexed"):
        opt.step()
    assert x.value == "old prompt"
    assert len(eng.cache) == (3 if text else 2)  # an empty answer is not cached
    if text:  # the caller can drop the bad answer so a retry asks again
        prompt = keyed.chat_requests[-1]["json"]["messages"]
        assert eng.forget(prompt[1]["content"], system_prompt=prompt[0]["content"])
    opt.step()
    assert x.value == "new prompt"
