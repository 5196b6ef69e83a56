"""A scriptable fake OpenAI-compatible server on real sockets, for tests and load benchmarks.

Speaks the Chat Completions wire format (SSE over chunked HTTP/1.1 with keep-alive), follows
a FIFO script of `Reply`s, and records what every request saw and when (time.monotonic()).
Stdlib only, so benchmarks can run it in a separate process:

    python -m bench.fake_upstream --port 9100 --tokens 200 --token-delay-ms 20
"""

from __future__ import annotations

import argparse
import base64
import collections
import contextlib
import itertools
import json
import re
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

_WORD = re.compile(r"\s*\S+\s*")
_ROLES = {"system", "developer", "user", "assistant", "tool"}
_AZURE_CHAT = re.compile(r"/openai/deployments/[^/]+/chat/completions")
HOLD_TIMEOUT_S = 60.0
STREAM_REFUSED = "Streaming is not supported by this server: set 'stream' to false."
_CLIENT_GONE = (BrokenPipeError, ConnectionResetError, ConnectionAbortedError, TimeoutError)


@dataclass
class Reply:
    """One scripted answer: the tokens to stream, their pace, and how the reply should end.

    A token is answer text, or a dict sent as the chunk's whole `delta` (reasoning, tool
    call fragments: see `thinking` and `calling`).
    """

    tokens: list[str | dict[str, Any]]
    token_delay_s: float = 0.0  # pause between two tokens
    first_token_delay_s: float = 0.0  # pause after the headers, before the first token
    finish_reason: str | None = "stop"  # None: no finish chunk at all (a cut-off stream)
    send_done: bool = True  # False: no `data: [DONE]` at the end
    usage: dict[str, int] | None = None  # None: computed from the request and tokens sent
    status: int = 200  # anything else: a JSON error body with this status, no stream
    error_message: str = "The fake model failed."
    retry_after: str | None = None  # Retry-After header value on an error status
    error_after: int | None = None  # after this many tokens send an error event and end
    drop_after: int | None = None  # after this many tokens close the socket mid-body
    # Before token `hold_at`, wait (at most HOLD_TIMEOUT_S) until `hold` is set: a test lets
    # the rest of a reply go once a page shows its first part (OpenAI wire format only).
    hold: threading.Event | None = None
    hold_at: int | None = None

    @classmethod
    def words(cls, text: str, **kw: Any) -> Reply:
        """A Reply streaming `text` as word tokens (word + following whitespace), losslessly."""
        return cls(tokens=split_words(text), **kw)

    @classmethod
    def thinking(cls, reasoning: str, text: str = "", *, field: str = "reasoning_content",
                 **kw: Any) -> Reply:
        """Reasoning deltas (`reasoning_content`, as vLLM and DeepSeek send it, or
        `reasoning`, as Ollama does), word by word, then the answer's words."""
        return cls(tokens=[{field: w} for w in split_words(reasoning)] + split_words(text),
                   **kw)

    @classmethod
    def calling(cls, calls: list[tuple[str, str]], *, pieces: int = 4, reasoning: str = "",
                text: str = "", interleave: bool = False, **kw: Any) -> Reply:
        """A turn that ends calling tools: (name, arguments JSON text) each, the arguments
        split across `pieces` chunks, the calls one after another or (`interleave`)
        alternating chunk by chunk, as servers stream several calls of one turn."""
        streams = []
        for index, (name, arguments) in enumerate(calls):
            size = max(1, -(-len(arguments) // max(1, pieces)))
            parts = [arguments[i:i + size] for i in range(0, len(arguments), size)] or [""]
            head = {"index": index, "id": f"call_{index}_{name}"[:40], "type": "function",
                    "function": {"name": name, "arguments": ""}}
            streams.append([head] + [{"index": index, "function": {"arguments": part}}
                                     for part in parts])
        if interleave:
            fragments = [f for group in itertools.zip_longest(*streams) for f in group if f]
        else:
            fragments = [f for stream in streams for f in stream]
        tokens: list[str | dict[str, Any]] = [{"reasoning_content": w}
                                              for w in split_words(reasoning)]
        tokens += split_words(text)
        tokens += [{"tool_calls": [fragment]} for fragment in fragments]
        kw.setdefault("finish_reason", "tool_calls")
        return cls(tokens=tokens, **kw)


def split_words(text: str) -> list[str]:
    """Tokens of a word plus its trailing whitespace; they join back to exactly `text`."""
    return _WORD.findall(text) or ([text] if text else [])


def default_reply(body: dict[str, Any]) -> Reply:
    """What the server answers when nothing is queued."""
    return Reply(tokens=["Hello", " from", " the", " fake", " model."])


class Headers(dict):
    """A dict of request headers whose keys are lower-cased, so any spelling looks them up."""

    def __init__(self, items: Any = ()) -> None:
        super().__init__((str(k).lower(), v) for k, v in dict(items).items())

    def __getitem__(self, key: str) -> str:
        return super().__getitem__(key.lower())

    def __contains__(self, key: object) -> bool:
        return super().__contains__(key.lower() if isinstance(key, str) else key)

    def get(self, key: str, default: Any = None) -> Any:
        return super().get(key.lower(), default)


@dataclass
class RequestRecord:
    """What one request asked for and what the server did, with time.monotonic() stamps."""

    id: int
    method: str
    path: str
    body: Any
    headers: Headers
    arrived: float
    peer: str = ""  # client address:port; the same value again means a reused connection
    stream: bool = False
    status: int | None = None
    first_token_sent: float | None = None
    finished: float | None = None  # the whole response was sent
    tokens_sent: int = 0
    # time.monotonic() right after each content token was written, in order (one per token
    # sent), so a benchmark can measure the relay latency of every token, not just the ends.
    token_times: list[float] = field(default_factory=list)
    closed_early: bool = False  # the client went away before the reply ended
    closed_at: float | None = None  # when the connection ended early (client or a scripted drop)
    outcome: str | None = None  # complete | http_error | error_event | dropped | client_closed
    problem: str | None = None  # why the request was rejected as not OpenAI-like


class FakeUpstream:
    """A fake Chat Completions server; `url` is what OPENAI_BASE_URL should be set to.

    With `azure_api_key` it is also an Azure OpenAI resource (`endpoint`): deployments at
    `/openai/deployments/<name>/chat/completions?api-version=…`, keyed by `api-key`.

    `refuse_stream` (an HTTP status, or None) makes it a server that will not stream, as
    some proxies are: every `stream: true` request gets that status and an error saying so
    (no scripted reply is used up); requests without streaming are answered as usual.
    """

    handler_class: type[BaseHTTPRequestHandler] | None = None  # None: Chat Completions

    def __init__(self, host: str = "127.0.0.1", port: int = 0,
                 default_reply: Callable[[dict[str, Any]], Reply] = default_reply,
                 *, max_records: int | None = None, azure_api_key: str | None = None,
                 refuse_stream: int | None = None) -> None:
        self.host = host
        self.refuse_stream = refuse_stream
        # Set: it also serves Azure OpenAI's paths, which need this `api-key` header.
        self.azure_api_key = azure_api_key
        self.default_reply = default_reply
        self.requests: list[RequestRecord] = []
        self.max_records = max_records
        self._queue: collections.deque[Reply] = collections.deque()
        self._changed = threading.Condition()
        self._ids = itertools.count(1)
        self._connections: set[socket.socket] = set()
        self.active_streams = 0
        self.max_active_streams = 0
        self._server = _Server((host, port), self.handler_class or _Handler)
        self._server.fake = self
        self.port: int = self._server.server_address[1]
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{self.endpoint}/v1"

    @property
    def endpoint(self) -> str:
        """The server's origin (an Azure OpenAI endpoint)."""
        host = "127.0.0.1" if self.host in ("", "0.0.0.0") else self.host
        return f"http://{host}:{self.port}"

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        """Serve in a daemon thread; returns self."""
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1},
                                        name=f"fake-upstream-{self.port}", daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in the calling thread until stop() or KeyboardInterrupt."""
        self._server.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        """Stop accepting, cut every open connection, and release the port."""
        if self._thread is not None:
            self._server.shutdown()  # would wait forever if serve_forever never ran
        with self._changed:
            live = list(self._connections)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting ---------------------------------------------------------------------
    def enqueue(self, *replies: Reply) -> None:
        """Queue replies for the next requests, first in first out."""
        with self._changed:
            self._queue.extend(replies)

    def clear_queue(self) -> None:
        with self._changed:
            self._queue.clear()

    def reset(self) -> None:
        """Forget queued replies and recorded requests."""
        with self._changed:
            self._queue.clear()
            self.requests.clear()
            self.max_active_streams = self.active_streams

    def next_reply(self, body: dict[str, Any]) -> Reply:
        with self._changed:
            if self._queue:
                return self._queue.popleft()
        return self.default_reply(body)

    # -- records -----------------------------------------------------------------------
    def wait_for_requests(self, n: int, timeout: float = 10.0) -> list[RequestRecord]:
        """Block until at least `n` requests were recorded; raises TimeoutError otherwise."""
        self.wait_until(lambda: len(self.requests) >= n, timeout,
                        what=f"{n} requests (have {len(self.requests)})")
        return list(self.requests)

    def wait_until(self, predicate: Callable[[], Any], timeout: float = 10.0, *,
                   what: str = "the condition") -> Any:
        """Block until `predicate()` is truthy and return its value; raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                value = predicate()
                if value:
                    return value
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"fake upstream: timed out after {timeout} s waiting for "
                                       f"{what}")
                # Records change under this condition, but the predicate may look elsewhere.
                self._changed.wait(min(remaining, 0.05))

    def wait_for_outcome(self, record: RequestRecord, timeout: float = 10.0) -> str:
        """Block until the server is done with `record` (its outcome is set) and return it.

        A client can read the last byte of a reply before the server thread records it.
        """
        return self.wait_until(lambda: record.outcome, timeout,
                               what=f"the outcome of request {record.id}")

    def stats(self, *, include_bodies: bool = False) -> dict[str, Any]:
        """A JSON-ready snapshot of the records (what GET /_fake/stats returns)."""
        with self._changed:
            records = [asdict(r) for r in self.requests]
            active, peak = self.active_streams, self.max_active_streams
        if not include_bodies:
            for r in records:
                r.pop("body", None)
        return {"now": time.monotonic(), "active_streams": active, "max_active_streams": peak,
                "requests": records}

    def _record(self, record: RequestRecord) -> None:
        with self._changed:
            self.requests.append(record)
            if self.max_records is not None and len(self.requests) > self.max_records:
                del self.requests[: len(self.requests) - self.max_records]
            self._changed.notify_all()

    def _update(self, record: RequestRecord, **changes: Any) -> None:
        with self._changed:
            for key, value in changes.items():
                setattr(record, key, value)
            self._changed.notify_all()

    def _token_sent(self, record: RequestRecord, sent_at: float) -> None:
        with self._changed:
            if record.first_token_sent is None:
                record.first_token_sent = sent_at
            record.token_times.append(sent_at)
            record.tokens_sent = len(record.token_times)
            self._changed.notify_all()

    def _count_stream(self, delta: int) -> None:
        with self._changed:
            self.active_streams += delta
            self.max_active_streams = max(self.max_active_streams, self.active_streams)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    # The default backlog of 5 refuses connections when a benchmark opens 100+ at once.
    request_queue_size = 1024
    fake: FakeUpstream

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.fake._changed:
            self.fake._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.fake._changed:
            self.fake._connections.discard(request)
        super().shutdown_request(request)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "FakeUpstream/1.0"
    disable_nagle_algorithm = True  # each SSE event should leave as soon as it is written
    timeout = 300  # an idle keep-alive connection is dropped after this
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        pass

    @property
    def fake(self) -> FakeUpstream:
        return self.server.fake

    # -- routing -----------------------------------------------------------------------
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/_fake/stats":
            full = parse_qs(url.query).get("full", ["0"])[0] not in ("0", "", "false")
            self._send_json(200, self.fake.stats(include_bodies=full))
        elif url.path == "/v1/models" or (url.path == "/openai/models" and self._azure_ok(url)):
            self._send_json(200, {"object": "list", "data": [
                {"id": "fake-model", "object": "model", "created": 0, "owned_by": "fake"}]})
        else:
            self._send_error_json(404, f"Unknown path {url.path}", "invalid_request_error",
                                  "unknown_url")

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        raw = self._read_body()
        if raw is None:
            return
        if url.path == "/_fake/reset":
            self.fake.reset()
            self._send_json(200, {"ok": True})
            return
        deployment = _AZURE_CHAT.fullmatch(url.path)
        if deployment is not None:
            if not self._azure_ok(url):
                return
        elif url.path != "/v1/chat/completions":
            self._send_error_json(404, f"Unknown path {url.path}", "invalid_request_error",
                                  "unknown_url")
            return
        self._serve_reply(url, raw)

    # The error shape of this API: overridden by fakes of other APIs.
    problem_type = "invalid_request_error"

    def _status_error(self, status: int) -> tuple[str, str | None]:
        return _error_type(status), _error_code(status)

    def _serve_reply(self, url: Any, raw: bytes) -> None:
        """Record the request, check it, and answer with the next scripted reply."""
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        record = RequestRecord(id=next(self.fake._ids), method="POST", path=url.path, body=body,
                               headers=Headers(self.headers.items()), arrived=time.monotonic(),
                               peer=f"{self.client_address[0]}:{self.client_address[1]}")
        self.fake._record(record)
        problem = self._check_request(body)
        if problem:
            self.fake._update(record, problem=problem)
            self._finish_http_error(record, 400, problem, self.problem_type, None, None)
            return
        record.stream = bool(body.get("stream"))
        refusal = self.fake.refuse_stream
        if record.stream and refusal is not None:
            self._finish_http_error(record, refusal, STREAM_REFUSED, self.problem_type,
                                    "unsupported_parameter" if refusal < 500 else None, None)
            return
        reply = self.fake.next_reply(body)
        if reply.status != 200:
            self._pause(reply.first_token_delay_s)
            self._finish_http_error(record, reply.status, reply.error_message,
                                    *self._status_error(reply.status), reply.retry_after)
        elif record.stream:
            self.fake._count_stream(+1)
            try:
                self._stream(record, body, reply)
            finally:
                self.fake._count_stream(-1)
        else:
            self._complete(record, body, reply)

    def _azure_ok(self, url: Any) -> bool:
        """Whether an Azure-shaped request may go on; if not, the error is already sent."""
        key = self.fake.azure_api_key
        if key is None:
            self._send_error_json(404, f"Unknown path {url.path}", "invalid_request_error",
                                  "unknown_url")
        elif not parse_qs(url.query).get("api-version"):
            self._send_error_json(404, "Resource not found", "invalid_request_error", "404")
        elif self.headers.get("api-key") != key:
            self._send_error_json(401, "Access denied due to invalid subscription key or "
                                  "wrong API endpoint.", "invalid_request_error", "401")
        else:
            return True
        return False

    # -- request handling --------------------------------------------------------------
    def _read_body(self) -> bytes | None:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            self._send_error_json(411, "Send a Content-Length.", "invalid_request_error", None)
            self.close_connection = True
            return None
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            self._send_error_json(400, "Bad Content-Length.", "invalid_request_error", None)
            self.close_connection = True
            return None
        return self.rfile.read(length)

    def _check_request(self, body: Any) -> str | None:
        """Why the request does not look like the openai client's, or None if it does."""
        if not self.headers.get("Content-Type", "").startswith("application/json"):
            return "Content-Type must be application/json."
        if not isinstance(body, dict):
            return "The body must be a JSON object."
        if not isinstance(body.get("model"), str) or not body["model"]:
            return "you must provide a model parameter"
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            return "'messages' must be a non-empty array."
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in _ROLES:
                return f"Invalid value for 'messages[{i}].role'."
            content_optional = m.get("role") == "assistant" and m.get("tool_calls")
            if not isinstance(m.get("content"), str | list) and not (
                    content_optional and m.get("content") is None):
                return f"Invalid type for 'messages[{i}].content'."
            if m.get("role") == "tool" and not isinstance(m.get("tool_call_id"), str):
                return f"Missing required parameter: 'messages[{i}].tool_call_id'."
            if isinstance(m.get("content"), list):
                problem = content_parts_problem(m["content"], f"messages[{i}].content")
                if problem:
                    return problem
        if "stream" in body and not isinstance(body["stream"], bool):
            return "'stream' must be a boolean."
        if body.get("stream_options") is not None and not body.get("stream"):
            return "The 'stream_options' parameter is only allowed when 'stream' is enabled."
        return None

    def _finish_http_error(self, record: RequestRecord, status: int, message: str,
                           kind: str, code: str | None, retry_after: str | None) -> None:
        extra = {"Retry-After": retry_after} if retry_after is not None else {}
        if self._send_error_json(status, message, kind, code, extra):
            self.fake._update(record, status=status, finished=time.monotonic(),
                              outcome="http_error")
        else:
            self._client_gone(record, status=status)

    def _complete(self, record: RequestRecord, body: dict[str, Any], reply: Reply) -> None:
        if not self._pause(reply.first_token_delay_s):
            self._client_gone(record)
            return
        text = "".join(t for t in reply.tokens if isinstance(t, str))
        payload = {
            **_envelope(record, body, "chat.completion"),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": text, "refusal": None},
                "logprobs": None,
                "finish_reason": reply.finish_reason or "stop",
            }],
            "usage": reply.usage or _usage(body, len(reply.tokens)),
        }
        now = time.monotonic()
        if self._send_json(200, payload):
            self.fake._update(record, status=200, first_token_sent=now, finished=time.monotonic(),
                              tokens_sent=len(reply.tokens), outcome="complete")
        else:
            self._client_gone(record)

    def _stream(self, record: RequestRecord, body: dict[str, Any], reply: Reply) -> None:
        chunked = self.request_version != "HTTP/1.0"
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream; charset=utf-8")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("x-request-id", f"req_fake{record.id}")
        if chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            self.close_connection = True
        self.end_headers()
        self.fake._update(record, status=200)

        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        base = _envelope(record, body, "chat.completion.chunk")

        def event(delta: dict[str, Any], finish: str | None = None) -> bytes:
            data = {**base, "choices": [{"index": 0, "delta": delta, "logprobs": None,
                                         "finish_reason": finish}]}
            if include_usage:
                data["usage"] = None  # OpenAI sends null here until the final usage chunk
            return _sse(data)

        def frame(data: bytes) -> bytes:
            return b"%x\r\n%s\r\n" % (len(data), data) if chunked else data

        end = b"0\r\n\r\n" if chunked else b""
        if not self._write(frame(event({"role": "assistant", "content": "", "refusal": None}))):
            self._client_gone(record)
            return
        tokens = reply.tokens
        for i in range(len(tokens) + 1):
            stop_here = i == reply.drop_after or i == reply.error_after
            if i == len(tokens) and not stop_here:
                break
            if not self._pause(reply.first_token_delay_s if i == 0 else reply.token_delay_s):
                self._client_gone(record)
                return
            if i == reply.hold_at and reply.hold is not None:
                reply.hold.wait(HOLD_TIMEOUT_S)
            if i == reply.drop_after:
                self._drop(record)
                return
            if i == reply.error_after:
                error = {"error": {"message": reply.error_message, "type": "server_error",
                                   "param": None, "code": None}}
                if self._write(frame(_sse(error)) + end):
                    self.fake._update(record, finished=time.monotonic(), outcome="error_event")
                else:
                    self._client_gone(record)
                return
            token = tokens[i]
            delta = token if isinstance(token, dict) else {"content": token}
            if not self._write(frame(event(delta))):
                self._client_gone(record)
                return
            self.fake._token_sent(record, time.monotonic())

        # The tail goes out in one write so a client that hangs up right after [DONE] (the
        # SDK does) is never mistaken for one that left early.
        tail = b""
        if reply.finish_reason is not None:
            tail += frame(event({}, reply.finish_reason))
        if include_usage:
            usage = reply.usage or _usage(body, record.tokens_sent)
            tail += frame(_sse({**base, "choices": [], "usage": usage}))
        if reply.send_done:
            tail += frame(b"data: [DONE]\n\n")
        if self._write(tail + end):
            self.fake._update(record, finished=time.monotonic(), outcome="complete")
        else:
            self._client_gone(record)

    # -- socket helpers ----------------------------------------------------------------
    def _pause(self, seconds: float) -> bool:
        """Wait `seconds`, watching the socket; False as soon as the client hangs up."""
        deadline = time.monotonic() + max(0.0, seconds)
        while True:
            remaining = max(0.0, deadline - time.monotonic())
            try:
                readable, _, _ = select.select([self.connection], [], [], remaining)
                if readable:
                    peeked = self.connection.recv(1, socket.MSG_PEEK)
                    if not peeked:
                        return False
                    # Data while we are answering (pipelining): nothing to watch for, just wait.
                    time.sleep(max(0.0, deadline - time.monotonic()))
                    return True
            except (OSError, ValueError):
                return False
            if time.monotonic() >= deadline:
                return True

    def _write(self, data: bytes) -> bool:
        try:
            self.wfile.write(data)
            return True
        except _CLIENT_GONE:
            return False
        except OSError:
            return False

    def _client_gone(self, record: RequestRecord, **changes: Any) -> None:
        self.close_connection = True
        self.fake._update(record, closed_early=True, closed_at=time.monotonic(),
                          outcome="client_closed", **changes)

    def _drop(self, record: RequestRecord) -> None:
        # Half-way through the chunked body: the client sees the connection end mid-message.
        self.close_connection = True
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)
        self.fake._update(record, closed_at=time.monotonic(), outcome="dropped")

    def _send_json(self, status: int, payload: Any,
                   headers: dict[str, str] | None = None) -> bool:
        data = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for name, value in (headers or {}).items():
                self.send_header(name, value)
            self.end_headers()
        except _CLIENT_GONE:
            self.close_connection = True
            return False
        if not self._write(data):
            self.close_connection = True
            return False
        return True

    def _send_error_json(self, status: int, message: str, kind: str, code: str | None,
                         headers: dict[str, str] | None = None) -> bool:
        body = {"error": {"message": message, "type": kind, "param": None, "code": code}}
        return self._send_json(status, body, headers)


def _envelope(record: RequestRecord, body: dict[str, Any], kind: str) -> dict[str, Any]:
    """The fields that open every completion and every chunk of a streamed one."""
    return {"id": f"chatcmpl-fake{record.id}", "object": kind, "created": int(time.time()),
            "model": body["model"], "system_fingerprint": "fp_fake"}


def _sse(data: dict[str, Any] | bytes) -> bytes:
    if isinstance(data, bytes):
        return data
    return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() \
        + b"\n\n"


IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")


def content_parts_problem(parts: list[Any], where: str) -> str | None:
    """What is wrong with a message's content parts as the Chat Completions API checks
    them: text parts with a string, `image_url` parts whose URL is http(s) or a base64
    data: URL of an image type; None when they are fine."""
    if not parts:
        return f"'{where}' must not be empty."
    for j, part in enumerate(parts):
        kind = part.get("type") if isinstance(part, dict) else None
        if kind == "text":
            if not isinstance(part.get("text"), str):
                return f"Invalid type for '{where}[{j}].text'."
        elif kind == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, dict) else None
            if not isinstance(url, str):
                return f"Missing required parameter: '{where}[{j}].image_url.url'."
            if url.startswith("data:"):
                header, _, data = url.partition(",")
                media = header[5:].removesuffix(";base64")
                if not header.endswith(";base64") or media not in IMAGE_MEDIA_TYPES:
                    return f"Invalid image data URL in '{where}[{j}]'."
                try:
                    base64.b64decode(data, validate=True)
                except ValueError:
                    return f"Invalid base64 image data in '{where}[{j}]'."
            elif not url.startswith(("http://", "https://")):
                return f"Invalid image URL in '{where}[{j}]'."
        else:
            return f"Invalid value for '{where}[{j}].type': {kind!r}."
    return None


def _usage(body: dict[str, Any], completion_tokens: int) -> dict[str, int]:
    prompt_tokens = 0
    for m in body.get("messages") or []:
        content = m.get("content") if isinstance(m, dict) else None
        prompt_tokens += 4 + (len(content.split()) if isinstance(content, str) else 0)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _error_type(status: int) -> str:
    if status == 429:
        return "requests"
    if status >= 500:
        return "server_error"
    return "invalid_request_error"


def _error_code(status: int) -> str | None:
    return {401: "invalid_api_key", 404: "model_not_found", 429: "rate_limit_exceeded"}.get(status)


def numbered_tokens(count: int) -> list[str]:
    """The command line's reply: token i (from 1) is "w<i> ", so each can be told apart."""
    return [f"w{i} " for i in range(1, count + 1)]


def interrupt_on_sigterm() -> None:
    """Make SIGTERM raise KeyboardInterrupt, so that it cleans up as Ctrl-C does."""

    def interrupt(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def serve_until_stopped(fake: FakeUpstream) -> None:
    """Serve in the calling thread until SIGTERM or Ctrl-C, then release the port."""
    interrupt_on_sigterm()
    try:
        fake.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        fake._server.server_close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply")
    parser.add_argument("--token-delay-ms", type=float, default=20.0)
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0)
    parser.add_argument("--max-records", type=int, default=100_000,
                        help="keep only the newest N request records")
    parser.add_argument("--refuse-stream", type=int, default=None, metavar="STATUS",
                        help="answer every streaming request with this HTTP status (400, "
                             "405 or 501, say), as a proxy that will not stream does")
    args = parser.parse_args(argv)

    tokens = numbered_tokens(args.tokens)

    def reply(body: dict[str, Any]) -> Reply:
        return Reply(tokens=tokens, token_delay_s=args.token_delay_ms / 1000,
                     first_token_delay_s=args.first_token_delay_ms / 1000)

    fake = FakeUpstream(args.host, args.port, default_reply=reply, max_records=args.max_records,
                        refuse_stream=args.refuse_stream)
    print(f"fake upstream serving {args.tokens} tokens every {args.token_delay_ms:g} ms at "
          f"{fake.url} (stats: {fake.url[:-3]}/_fake/stats)", flush=True)
    serve_until_stopped(fake)
    return 0


if __name__ == "__main__":
    sys.exit(main())
