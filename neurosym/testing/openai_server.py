"""A scripted, deterministic OpenAI-compatible HTTP server on 127.0.0.1, for tests and benchmarks.

It speaks the chat-completions protocol (``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /v1/models/{id}``) over real HTTP, so the product code talks to it exactly as it would to
OpenAI, vLLM, Ollama or llama.cpp. Answers come from a *responder* (messages -> text) that a test
can replace (and neurosym's batched evaluations, when scripted, from a verdict per row:
:meth:`OpenAIServer.set_verdicts`); faults are queued with :meth:`OpenAIServer.inject` and consumed one per chat request:

* ``"none"``: no fault for this request (to let earlier requests through before faults start);
* ``"429"``: rate limited, with a ``Retry-After`` header (``retry_after=0.2`` seconds by default);
* ``"500"``: internal server error;
* ``"hang"``: sleep ``seconds`` (default 30) before answering, i.e. past the client's timeout;
* ``"malformed"``: a normal completion whose text is ``text`` (default: an answer with no
  ``<IMPROVED_VARIABLE>`` tags; ``text=""`` gives an empty answer);
* ``"401"``: authentication error; ``"403"``: permission denied; ``"404"``: model not found;
* ``"bad_json"``: a 200 whose body is not JSON (``body=`` bytes to send instead of the default);
* ``"no_choices"``: a 200 JSON object without ``choices``;
* ``"wrong_types"``: a 200 completion whose content is a number and usage counts are strings;
* ``"trickle"``: a normal completion sent ``chunk`` bytes (default 1) every ``interval`` seconds
  (default 0.05), so every read arrives within any read timeout;
* ``"huge"``: a normal completion whose text is ``chars`` characters long (default 1,000,000);
* ``"usage"``: a normal completion reporting ``prompt_tokens`` / ``completion_tokens`` as given
  (negative, absurd, ...).

A request whose ``Authorization`` header does not carry ``api_key`` gets a 401 (whose body echoes
the key it was given, as a careless server might); an unknown model gets a 404 ``model_not_found``.
Every request is recorded in :attr:`OpenAIServer.requests` (the Authorization header itself is not
kept; ``authorized`` says whether it matched).

Usage: the ``openai_server`` pytest fixture (tests/conftest.py), ``with OpenAIServer() as srv: ...``
from a script, or ``python -m neurosym.testing.openai_server --port 8000`` from a shell.
"""
from __future__ import annotations

import argparse
import itertools
import json
import re
import threading
import time
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Optional

Responder = Callable[[list[dict]], str]
# a scripted verdict for one row of a batched evaluation: {"n", "question", "reference", "answer"} ->
# "correct" | "form" | "content" (or anything else, e.g. "" to leave the row out) or (verdict, feedback)
VerdictFn = Callable[[dict], Any]
FAULTS = ("none", "429", "500", "hang", "malformed", "401", "403", "404", "bad_json", "no_choices", "wrong_types",
          "trickle", "huge", "usage")
DEFAULT_MODEL = "teacher-model"
DEFAULT_KEY = "sk-test-0123456789abcdef"
_TAG_START, _TAG_END = "<IMPROVED_VARIABLE>", "</IMPROVED_VARIABLE>"


def _text(content: Any) -> str:
    """Message content as text (OpenAI allows a list of typed parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def count_tokens(text: str) -> int:
    """The server's deterministic 'tokenizer': whitespace-separated words."""
    return len(text.split())


_ROW_RE = re.compile(r"<ROW (\d+)>\s*<QUESTION>(.*?)</QUESTION>\s*<REFERENCE_ANSWER>(.*?)</REFERENCE_ANSWER>\s*"
                     r"<STUDENT_ANSWER>(.*?)</STUDENT_ANSWER>", re.S)
DEFAULT_FEEDBACK = "The prompt is too vague: ask for the final answer only, as a number."


def is_batched_evaluation(messages: list[dict]) -> bool:
    """Whether ``messages`` are neurosym's batched evaluation (one verdict asked per row)."""
    from neurosym.updates.symbolic.textgrad_step import EVAL_SYSTEM
    return any(m.get("role") == "system" and _text(m.get("content")) == EVAL_SYSTEM for m in messages)


def evaluation_rows(messages: list[dict]) -> list[dict]:
    """The rows of a batched evaluation: ``{"n", "question", "reference", "answer"}`` each, in order."""
    user = "\n".join(_text(m.get("content")) for m in messages if m.get("role") != "system")
    return [{"n": int(n), "question": q.strip(), "reference": r.strip(), "answer": a.strip()}
            for n, q, r, a in _ROW_RE.findall(user)]


def verdict_reply(messages: list[dict], verdict: VerdictFn) -> str:
    """The reply to a batched evaluation, one ``ROW n: verdict - feedback`` line per row that
    ``verdict(row)`` gives a verdict for (a row it answers with anything else is left out)."""
    lines = []
    for row in evaluation_rows(messages):
        got = verdict(row)
        v, fb = got if isinstance(got, tuple) else (got, DEFAULT_FEEDBACK if got == "form" else "ok")
        if v in ("correct", "form", "content"):
            lines.append(f"ROW {row['n']}: {v} - {fb}")
    return "\n".join(lines)


def default_responder(messages: list[dict]) -> str:
    """A plausible teacher for neurosym's batched evaluation and TextGrad's kinds of call.

    * batched evaluation: every row ``form`` (a wrong answer a prompt can fix), with a fixed piece
      of criticism as feedback (:meth:`OpenAIServer.set_verdicts` scripts other verdicts);
    * optimizer call (system prompt asks for ``<IMPROVED_VARIABLE>`` tags): returns the variable
      found between ``<VARIABLE>`` tags with " Think step by step." appended, inside the tags;
    * backward (feedback) call: a fixed piece of criticism;
    * anything else: a short deterministic echo.
    """
    system = "\n".join(_text(m.get("content")) for m in messages if m.get("role") == "system")
    user = "\n".join(_text(m.get("content")) for m in messages if m.get("role") != "system")
    if is_batched_evaluation(messages):
        return verdict_reply(messages, lambda row: "form")
    if _TAG_START in system:
        found = re.search(r"<VARIABLE>(.*?)</VARIABLE>", user, re.S)
        old = found.group(1).strip() if found else "Answer the question."
        return f"{_TAG_START}{old} Think step by step.{_TAG_END}"
    if "gradient (feedback) engine" in system or "feedback" in system.lower():
        return DEFAULT_FEEDBACK
    words = user.split()
    return "Echo: " + " ".join(words[:12])


class _Handler(BaseHTTPRequestHandler):
    server: "_HTTPServer"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    # -- plumbing ---------------------------------------------------------------------------------
    def _send(self, status: int, payload: Any, headers: Optional[dict] = None, raw: Optional[bytes] = None,
              trickle: Optional[tuple[int, float]] = None) -> None:
        body = raw if raw is not None else json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, str(v))
            self.end_headers()
            if trickle is None:
                self.wfile.write(body)
                return
            size, interval = trickle
            stop = self.server.owner._stop
            for i in range(0, len(body), size):
                self.wfile.write(body[i:i + size])
                self.wfile.flush()
                if stop.wait(interval):
                    break
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout): fine
            self.close_connection = True

    def _error(self, status: int, message: str, type_: str, code: Optional[str] = None,
               headers: Optional[dict] = None) -> None:
        self._send(status, {"error": {"message": message, "type": type_, "param": None, "code": code}},
                   headers)

    def _read_json(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"null")
        except json.JSONDecodeError:
            return None

    def _authorized(self) -> tuple[bool, str]:
        owner: OpenAIServer = self.server.owner
        given = self.headers.get("Authorization", "")
        token = given[7:] if given.startswith("Bearer ") else given
        return (owner.api_key is None or token == owner.api_key), token

    # -- routes -----------------------------------------------------------------------------------
    def do_GET(self) -> None:  # noqa: N802
        owner: OpenAIServer = self.server.owner
        ok, token = self._authorized()
        owner._record(self, None, ok, fault=None)
        if not ok:
            return self._error(401, f"Incorrect API key provided: {token}.", "invalid_request_error",
                               "invalid_api_key")
        path = self.path.split("?")[0].rstrip("/")
        if path == "/v1/models":
            return self._send(200, {"object": "list", "data": [owner._model_card(m) for m in owner.models]})
        if path.startswith("/v1/models/"):
            model = path[len("/v1/models/"):]
            if model in owner.models:
                return self._send(200, owner._model_card(model))
            return self._model_not_found(model)
        self._send(404, {"detail": "Not Found"})

    def do_POST(self) -> None:  # noqa: N802
        owner: OpenAIServer = self.server.owner
        body = self._read_json()
        ok, token = self._authorized()
        path = self.path.split("?")[0].rstrip("/")
        if path != "/v1/chat/completions":
            owner._record(self, body, ok, fault=None)
            return self._send(404, {"detail": "Not Found"})
        fault, kw = owner._next_fault()
        rec = owner._record(self, body, ok, fault=fault)
        with owner._track_inflight():
            if owner.latency_s > 0:
                owner._stop.wait(owner.latency_s)
            if not ok or fault == "401":
                return self._error(401, f"Incorrect API key provided: {token}.", "invalid_request_error",
                                   "invalid_api_key")
            if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
                return self._error(400, "'messages' is a required property", "invalid_request_error")
            model = body.get("model")
            if model not in owner.models:
                return self._model_not_found(model)
            if fault == "429":
                ra = kw.get("retry_after", 0.2)
                return self._error(429, "Rate limit reached; please retry.", "requests", "rate_limit_exceeded",
                                   headers={"Retry-After": ra} if ra is not None else None)
            if fault == "500":
                return self._error(500, "The server had an error while processing your request.", "server_error")
            if fault == "403":
                return self._error(403, "You are not allowed to use this model.", "invalid_request_error",
                                   "permission_denied")
            if fault == "404":
                return self._model_not_found(model)
            if fault == "bad_json":
                return self._send(200, None, raw=kw.get("body", b'{"id": "chatcmpl-1", "choices": [{"mess'))
            if fault == "no_choices":
                return self._send(200, {"id": "chatcmpl-1", "object": "chat.completion", "model": model})
            if fault == "hang":
                owner._stop.wait(kw.get("seconds", 30.0))
            if fault == "malformed":
                text = kw.get("text", "I looked at it and I think it is fine as it is.")
            elif fault == "huge":
                text = ("All work and no play makes Jack a dull boy. " * (kw.get("chars", 1_000_000) // 44 + 1)
                        )[: kw.get("chars", 1_000_000)]
            else:
                text = owner._respond(body["messages"])
            rec["answer"] = text
            payload = owner._completion(model, body["messages"], text)
            if fault == "wrong_types":
                payload["choices"][0]["message"]["content"] = 42
                payload["usage"] = {"prompt_tokens": "many", "completion_tokens": "few"}
            if fault == "usage":
                payload["usage"].update({k: kw[k] for k in ("prompt_tokens", "completion_tokens") if k in kw})
            trickle = (int(kw.get("chunk", 1)), float(kw.get("interval", 0.05))) if fault == "trickle" else None
            self._send(200, payload, trickle=trickle)

    def _model_not_found(self, model: Any) -> None:
        self._error(404, f"The model `{model}` does not exist or you do not have access to it.",
                    "invalid_request_error", "model_not_found")


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    owner: "OpenAIServer"


class OpenAIServer:
    """A scripted OpenAI-compatible server; ``start()``/``stop()`` or use as a context manager.

    :param api_key: the key clients must send (``None`` disables the check).
    :param models: model ids it serves; others get 404.
    :param latency_s: fixed delay added to every chat completion (benchmarks).
    :param port: 0 picks a free port.
    """

    def __init__(self, api_key: Optional[str] = DEFAULT_KEY, models: tuple[str, ...] = (DEFAULT_MODEL,),
                 latency_s: float = 0.0, host: str = "127.0.0.1", port: int = 0,
                 responder: Optional[Responder] = None):
        self.api_key = api_key
        self.models = tuple(models)
        self.model = self.models[0]
        self.latency_s = float(latency_s)
        self.host, self._port = host, port
        self.requests: list[dict] = []
        self.max_inflight = 0
        self._inflight = 0
        self._responder: Responder = responder or default_responder
        self._verdict: Optional[VerdictFn] = None
        self._faults: deque[tuple[str, dict]] = deque()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ids = itertools.count(1)
        self._httpd: Optional[_HTTPServer] = None
        self._thread: Optional[threading.Thread] = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self) -> "OpenAIServer":
        self._stop.clear()
        self._httpd = _HTTPServer((self.host, self._port), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="openai-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()  # wakes 'hang' faults and latency sleeps
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> "OpenAIServer":
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._httpd is None:
            raise RuntimeError("server not started")
        return self._httpd.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    # -- scripting --------------------------------------------------------------------------------
    def set_responder(self, fn: Optional[Responder]) -> None:
        """Answer chat requests with ``fn(messages) -> str`` (``None`` restores the default)."""
        self._responder = fn or default_responder

    def set_verdicts(self, fn: Optional[VerdictFn]) -> None:
        """Answer neurosym's batched evaluations with ``fn(row)`` per row (see :data:`VerdictFn`),
        whatever the responder; ``None`` leaves them to the responder again."""
        self._verdict = fn

    def inject(self, fault: str, times: int = 1, **kw: Any) -> None:
        """Queue ``fault`` for the next ``times`` chat requests (see the module docstring)."""
        if fault not in FAULTS:
            raise ValueError(f"unknown fault {fault!r}; choose one of {FAULTS}")
        with self._lock:
            self._faults.extend([(fault, dict(kw))] * times)

    def reset(self) -> None:
        """Forget recorded requests and queued faults."""
        with self._lock:
            self.requests.clear()
            self._faults.clear()
            self.max_inflight = 0

    @property
    def chat_requests(self) -> list[dict]:
        """Recorded ``POST /v1/chat/completions`` requests."""
        return [r for r in self.requests if r["path"].rstrip("/").endswith("/chat/completions")]

    # -- internals used by the handler ------------------------------------------------------------
    def _next_fault(self) -> tuple[Optional[str], dict]:
        with self._lock:
            return self._faults.popleft() if self._faults else (None, {})

    def _record(self, handler: _Handler, body: Any, authorized: bool, fault: Optional[str]) -> dict:
        headers = {k.lower(): v for k, v in handler.headers.items() if k.lower() != "authorization"}
        scheme = (handler.headers.get("Authorization") or "").split(" ", 1)[0] or None
        rec = {"method": handler.command, "path": handler.path, "json": body, "headers": headers,
               "authorized": authorized, "auth_scheme": scheme, "fault": fault, "time": time.monotonic()}
        with self._lock:
            self.requests.append(rec)
        return rec

    def _track_inflight(self):
        server = self

        class _Ctx:
            def __enter__(self_inner):
                with server._lock:
                    server._inflight += 1
                    server.max_inflight = max(server.max_inflight, server._inflight)

            def __exit__(self_inner, *exc):
                with server._lock:
                    server._inflight -= 1

        return _Ctx()

    def _respond(self, messages: list[dict]) -> str:
        if self._verdict is not None and is_batched_evaluation(messages):
            return verdict_reply(messages, self._verdict)
        return str(self._responder(messages))

    def _model_card(self, model: str) -> dict:
        return {"id": model, "object": "model", "created": 0, "owned_by": "neurosym-test"}

    def _completion(self, model: str, messages: list[dict], text: str) -> dict:
        prompt_tokens = sum(count_tokens(_text(m.get("content"))) for m in messages)
        completion_tokens = count_tokens(text)
        return {
            "id": f"chatcmpl-{next(self._ids)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": "stop", "logprobs": None}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }


def main(argv: Optional[list[str]] = None) -> None:
    """``python tests/openai_server.py --port 8000``: serve until Ctrl-C."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--api-key", default=DEFAULT_KEY, help="key clients must send ('' = no check)")
    p.add_argument("--model", action="append", help=f"served model id (repeatable; default {DEFAULT_MODEL})")
    p.add_argument("--latency", type=float, default=0.0, help="seconds added to every completion")
    args = p.parse_args(argv)
    server = OpenAIServer(api_key=args.api_key or None, models=tuple(args.model or [DEFAULT_MODEL]),
                          latency_s=args.latency, host=args.host, port=args.port).start()
    print(f"serving {', '.join(server.models)} at {server.base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":
    main()
