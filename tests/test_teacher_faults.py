"""Teacher faults a hostile or broken server can produce: malformed bodies, trickled answers, huge
answers, lying token counts, a key revoked mid-run, credentials in the URL. Each is a counted teacher
fault (never an uncaught exception), and none leaks a secret."""
from __future__ import annotations

import logging
import threading
import time

import pytest

from neurosym.config.schema import TeacherConfig, redact, redact_url
from neurosym.teacher import (Backoff, BudgetExhausted, TeacherConfigError, TeacherUnavailable, make_teacher)
from neurosym.teacher.errors import TeacherDown
from neurosym.testing.openai_server import count_tokens

KEY_ENV = "NEUROSYM_TEST_TEACHER_KEY"
FAST = dict(base_s=0.01, max_s=0.05)


def engine(server, run_dir, backoff=None, **kw):
    base = dict(model=server.model, base_url=server.base_url, api_key_env=KEY_ENV, timeout_s=5.0, max_retries=2,
                price_per_1k_tokens={"input": 1.0, "output": 1.0})
    base.update(kw)
    return make_teacher(TeacherConfig(**base), run_dir, backoff=backoff or Backoff(**FAST))


# -- malformed bodies -------------------------------------------------------------------------------

@pytest.mark.parametrize("fault", ["bad_json", "no_choices", "wrong_types"])
def test_malformed_body_is_a_retried_fault(keyed, tmp_path, fault):
    eng = engine(keyed, tmp_path)
    keyed.inject(fault)
    assert eng("hi") == "Echo: hi"              # retried, then answered
    assert eng.usage.failures == {"malformed_response": 1} and eng.usage.retries == 1
    keyed.inject(fault, times=3)
    with pytest.raises(TeacherUnavailable, match="after 3 attempt") as err:
        eng("again")
    assert err.value.kind == "malformed_response" and not err.value.permanent
    assert eng.usage.failures == {"malformed_response": 4} and len(eng.cache) == 1


def test_malformed_body_at_preflight_is_a_config_error(keyed):
    from neurosym.teacher import preflight
    keyed.inject("bad_json", body=b"<html>Welcome to nginx!</html>")
    with pytest.raises(TeacherConfigError, match="not an OpenAI chat completion"):
        preflight(TeacherConfig(model=keyed.model, base_url=keyed.base_url, api_key_env=KEY_ENV))


def test_malformed_body_never_escapes_textgrad(keyed, tmp_path):
    """What TextGrad sees (and so the symbolic update) is a TeacherUnavailable, not a JSON error."""
    from neurosym.teacher import load_textgrad
    tg = load_textgrad()
    eng = engine(keyed, tmp_path, max_retries=0)
    x = tg.Variable("a prompt", requires_grad=True, role_description="system prompt")
    keyed.inject("bad_json", body=b"<html>502 Bad Gateway</html>")
    with pytest.raises(TeacherUnavailable, match="not JSON") as err:
        tg.TextLoss("Evaluate the prompt.", engine=eng)(x)
    assert err.value.kind == "malformed_response"


# -- deadlines --------------------------------------------------------------------------------------

def test_timeout_is_a_total_deadline_against_a_trickling_server(keyed, tmp_path):
    eng = engine(keyed, tmp_path, timeout_s=1.0, max_retries=0)
    keyed.inject("trickle", chunk=4, interval=0.05)   # ~80 B/s: the whole body would take ~5 s
    t0 = time.monotonic()
    with pytest.raises(TeacherUnavailable, match="very slowly") as err:
        eng("hi")
    assert err.value.kind == "timeout" and time.monotonic() - t0 < 2.5
    assert eng.usage.failures == {"timeout": 1} and len(eng.cache) == 0
    keyed.inject("trickle", chunk=4096, interval=0.01)  # a slow but normal stream still works
    assert eng("hi") == "Echo: hi"


def test_retries_stop_at_the_call_deadline(keyed, tmp_path):
    """timeout_s x (max_retries + 1) bounds a call, waits included: a 5 s Retry-After at timeout_s=0.5
    with 3 retries (2 s in all) is not waited for."""
    eng = engine(keyed, tmp_path, timeout_s=0.5, max_retries=3)
    keyed.inject("429", times=4, retry_after=5)
    t0 = time.monotonic()
    with pytest.raises(TeacherUnavailable, match="deadline") as err:
        eng("hi")
    assert err.value.kind == "rate_limit" and time.monotonic() - t0 < 1.5
    assert len(keyed.chat_requests) == 1


@pytest.mark.parametrize("fault", ["hang", "trickle"])
def test_abort_ends_a_call_in_flight_at_once(keyed, tmp_path, fault):
    """What a stop (SIGTERM, Ctrl-C) needs: a call stuck on the server ends when aborted, not at
    its deadline (60 s by default)."""
    eng = engine(keyed, tmp_path, timeout_s=60, max_retries=0)
    keyed.inject(fault, seconds=60, chunk=1, interval=0.5)
    box = {}
    t = threading.Thread(target=_call_into, args=(eng, box))
    t0 = time.monotonic()
    t.start()
    time.sleep(0.3)
    eng.abort()
    t.join(10)
    assert not t.is_alive() and box["exc"].kind == "aborted" and time.monotonic() - t0 < 3


def _call_into(eng, box):
    try:
        eng("hi")
    except TeacherUnavailable as exc:
        box["exc"] = exc


def test_abort_ends_a_call_waiting_to_retry(keyed, tmp_path):
    eng = engine(keyed, tmp_path, backoff=Backoff(base_s=30, max_s=30), timeout_s=30, max_retries=3)
    keyed.inject("500", times=4)
    box = {}

    def call():
        try:
            eng("hi")
        except TeacherUnavailable as exc:
            box["exc"] = exc

    t = threading.Thread(target=call)
    t0 = time.monotonic()
    t.start()
    time.sleep(0.3)
    eng.abort()
    t.join(10)
    assert not t.is_alive() and box["exc"].kind == "aborted" and time.monotonic() - t0 < 5
    with pytest.raises(TeacherUnavailable, match="aborted"):
        eng("later")


# -- the transport of the installed openai ---------------------------------------------------------

class _CutServer:
    """Answers every request with headers promising a 10 kB body, sends 20 bytes of it and closes:
    a connection broken mid-body, below anything the scripted server's faults do."""

    def __init__(self):
        import socket
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.served = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.sock.getsockname()[1]}/v1"

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 10000\r\n\r\n"
                             b'{"id": "chatcmpl-1",')
            self.served.set()

    def close(self):
        self.sock.close()


def test_a_body_cut_off_mid_read_is_a_connection_fault_on_the_installed_openai(keyed, tmp_path):
    """openai 3.x reads bodies with httpx2, whose errors are not httpx's: a connection that breaks
    while the body streams in is a counted, retried ``connection`` fault, not an uncaught
    ``httpx2.RemoteProtocolError``."""
    server = _CutServer()
    try:
        eng = engine(keyed, tmp_path, base_url=server.base_url, max_retries=1)
        with pytest.raises(TeacherUnavailable, match="after 2 attempt") as err:
            eng("hi")
        assert server.served.is_set() and err.value.kind == "connection"
        assert eng.usage.failures == {"connection": 2} and eng.usage.retries == 1
    finally:
        server.close()


def test_the_http_library_is_the_one_the_installed_openai_builds_on():
    import openai

    from neurosym.teacher.protocol import http_lib, split_credentials, transport_errors

    lib = http_lib()
    client = openai.DefaultHttpxClient()
    try:
        assert isinstance(client, lib.Client)
    finally:
        client.close()
    assert issubclass(lib.RemoteProtocolError, transport_errors()[1])
    assert issubclass(lib.ReadTimeout, transport_errors()[0])
    url, auth = split_credentials("http://al%40ice:p%3Ass@127.0.0.1:8/v1")
    assert url == "http://127.0.0.1:8/v1" and isinstance(auth, lib.BasicAuth)
    assert split_credentials("http://127.0.0.1:8/v1") == ("http://127.0.0.1:8/v1", None)


# -- untrusted sizes and counts ---------------------------------------------------------------------

@pytest.mark.parametrize("chars", [30_000, 2_000_000])  # past the text cap; past the body cap (cut off)
def test_huge_answer_is_a_fault_and_never_stored(keyed, tmp_path, chars):
    eng = engine(keyed, tmp_path, max_response_chars=20_000)
    keyed.inject("huge", chars=chars)
    with pytest.raises(TeacherUnavailable, match="max_response_chars") as err:
        eng("hi")
    assert err.value.kind == "too_large" and len(keyed.chat_requests) == 1   # not retried
    assert eng.usage.failures == {"too_large": 1} and len(eng.cache) == 0
    assert eng.usage.cost_usd > 0          # it was paid for: the budget counts it
    db = tmp_path / "teacher" / "teacher_cache.sqlite"
    assert sum(p.stat().st_size for p in db.parent.iterdir()) < 1_000_000
    assert eng("hi") == "Echo: hi"          # the next call is fine


@pytest.mark.parametrize("counts", [dict(prompt_tokens=-10**9, completion_tokens=-5),
                                    dict(prompt_tokens=10**12, completion_tokens=10**12),
                                    dict(prompt_tokens=3.5, completion_tokens="7")])
def test_lying_token_counts_are_replaced_by_estimates(keyed, tmp_path, counts):
    eng = engine(keyed, tmp_path)
    keyed.inject("usage", **counts)
    reply = eng.complete("say something nice", system_prompt="be kind")
    assert reply.text == "Echo: say something nice"
    prompt_chars = len("be kind") + len("say something nice")
    assert (reply.prompt_tokens, reply.completion_tokens) == (-(-prompt_chars // 4), -(-len(reply.text) // 4))
    assert reply.cost_usd > 0 and eng.usage.cost_usd > 0
    assert eng.usage.failures == {"bad_usage": 1}
    honest = eng.complete("another one")     # honest counts are kept as reported
    assert honest.prompt_tokens == count_tokens(eng.system_prompt + " another one")


def test_budget_bites_against_negative_counts(keyed, tmp_path):
    eng = engine(keyed, tmp_path, budget_usd=0.02)
    keyed.inject("usage", times=50, prompt_tokens=-10**9, completion_tokens=-10**9)
    with pytest.raises(BudgetExhausted):
        for i in range(50):
            eng(f"question number {i} " + "padding " * 20)
    assert 0.02 <= eng.usage.cost_usd < 0.1 and len(keyed.chat_requests) < 50


# -- teacher down for good --------------------------------------------------------------------------

@pytest.mark.parametrize("fault,kind", [("401", "auth"), ("403", "forbidden"), ("404", "not_found")])
def test_revoked_key_or_model_mid_run_is_permanent(keyed, tmp_path, fault, kind):
    eng = engine(keyed, tmp_path)
    assert eng("first") == "Echo: first"
    keyed.inject(fault)
    with pytest.raises(TeacherUnavailable) as err:
        eng("second")
    assert isinstance(err.value, TeacherDown) and err.value.permanent and err.value.kind == kind
    assert isinstance(err.value, TeacherConfigError)            # old callers still see a config error
    assert len(keyed.chat_requests) == 2                           # not retried
    assert keyed.api_key not in str(err.value)


# -- credentials in the URL -------------------------------------------------------------------------

def test_url_credentials_never_leak(keyed, tmp_path, caplog):
    """The URL's credentials go as HTTP basic auth (as httpx sends them), and appear in no message,
    log line (openai's and httpx's debug logs included), config.yaml, W&B config or run file."""
    from neurosym.config.schema import Config, save_resolved
    password, user = "hunter2-Pa55word", "alice-user"
    url = keyed.base_url.replace("http://", f"http://{user}:{password}@")
    keyed.api_key = None   # a proxy taking basic auth
    eng = engine(keyed, tmp_path / "run", base_url=url, max_retries=1)
    caplog.set_level(logging.DEBUG)
    assert eng("hi") == "Echo: hi"
    assert keyed.chat_requests[-1]["auth_scheme"] == "Basic"
    keyed.inject("500", times=2)
    with pytest.raises(TeacherUnavailable) as e1:
        eng("boom")
    keyed.inject("bad_json", body=f"oops {password}".encode())
    keyed.inject("bad_json", body=f"oops {password}".encode())
    with pytest.raises(TeacherUnavailable) as e2:
        eng("boom again")
    dead = engine(keyed, tmp_path / "run2", base_url=f"http://{user}:{password}@127.0.0.1:9/v1", max_retries=0)
    with pytest.raises(TeacherUnavailable) as e3:
        dead("anyone?")
    keyed.inject("401")
    with pytest.raises(TeacherDown) as e4:
        eng("revoked")
    texts = [str(e.value) for e in (e1, e2, e3, e4)] + [caplog.text, repr(eng), eng.base_url]
    assert all(password not in t and user not in t for t in texts), texts
    assert "***@127.0.0.1" in str(e1.value)
    cfg = Config.model_validate({"model": {"name_or_path": "m"}, "data": {"train": "t.jsonl"}, "train": {"max_steps": 1},
                                 "teacher": {"base_url": url}})
    save_resolved(cfg, tmp_path / "run" / "config.yaml")
    assert "***@127.0.0.1" in (tmp_path / "run" / "config.yaml").read_text()
    assert redact(cfg.to_dict())["teacher"]["base_url"] == redact_url(url)    # what W&B gets
    for f in (tmp_path / "run").rglob("*"):
        if f.is_file():
            data = f.read_bytes()
            assert password.encode() not in data and user.encode() not in data, f


def test_redacted_url_from_a_saved_config_says_how_to_fix(keyed, tmp_path):
    with pytest.raises(TeacherConfigError, match="--set teacher.base_url"):
        engine(keyed, tmp_path, base_url="http://***@127.0.0.1:1/v1")


def test_redact_url_forms():
    assert redact_url("https://u:p@h.example/v1") == "https://***@h.example/v1"
    assert redact_url("https://u:p@ss@h.example/v1") == "https://***@h.example/v1"
    assert redact_url("https://h.example/v1?api-version=1&api-key=XYZ") == "https://h.example/v1?api-version=1&api-key=***"
    assert redact_url("http://127.0.0.1:8000/v1") == "http://127.0.0.1:8000/v1"
    assert redact({"teacher": {"base_url": "https://u:p@h/v1", "api_key_env": "K"}}) == \
        {"teacher": {"base_url": "https://***@h/v1", "api_key_env": "K"}}
