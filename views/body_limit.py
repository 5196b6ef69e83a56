"""Request bodies: every route refuses one over its limit before any work, and a body that
stops arriving ends the request instead of holding it.

- A `Content-Length` over the limit is a 413 at once; nothing of the body is read.
- A chunked body (its length unknown up front) is read first, counted as it arrives, and
  refused with a 413 as soon as it passes the limit; what arrived in time is then what the
  view reads, as if it had been sent with its length.
- Reading a body has a deadline (BODY_TIMEOUT_S from its first read, more for a large body
  that keeps coming): a body that trickles, or is shorter than its `Content-Length` says,
  is a 408 when it runs out.

The limit is MAX_CONTENT_LENGTH (MAX_REQUEST_BYTES), or the config key a view names with
`@body_limit` (an import takes more).
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import gevent
from flask import Flask, current_app, request
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout

LIMIT_KEY = "_relay_body_limit"
READ_SIZE = 64 * 1024


def body_limit(config_key: str) -> Callable:
    """Let a view take bodies up to `current_app.config[config_key]` bytes."""
    def mark(view: Callable) -> Callable:
        setattr(view, LIMIT_KEY, config_key)
        return view
    return mark


def too_large() -> RequestEntityTooLarge:
    # Its default description: the error page words it for people (views._http_error).
    return RequestEntityTooLarge()


def too_slow(timeout: float) -> RequestTimeout:
    return RequestTimeout(
        description=f"The request body did not arrive within {timeout:g} s (it was slow, or "
                    "shorter than its Content-Length said); send it again.")


class DeadlineInput:
    """The server's body stream, read against a deadline: `timeout` seconds from the first
    read, plus a second for every MIN_RATE bytes received (a large upload on a slow link
    goes on; a trickle does not). A read still waiting at the deadline raises a 408."""

    MIN_RATE = 16 * 1024  # bytes a second

    def __init__(self, stream: Any, timeout: float) -> None:
        self.stream = stream
        self.timeout = timeout
        self.started: float | None = None
        self.received = 0

    def _call(self, name: str, *args: Any) -> Any:
        now = gevent.get_hub().loop.now()
        if self.started is None:
            self.started = now
        remaining = self.started + self.timeout + self.received / self.MIN_RATE - now
        if remaining <= 0:
            raise too_slow(self.timeout)
        try:
            with gevent.Timeout(remaining):
                data = getattr(self.stream, name)(*args)
        except gevent.Timeout:
            raise too_slow(self.timeout) from None
        self.received += len(data) if isinstance(data, bytes) else \
            sum(len(line) for line in data)
        return data

    def read(self, size: int = -1) -> bytes:
        return self._call("read", size)

    def readline(self, size: int = -1) -> bytes:
        return self._call("readline", size)

    def readlines(self, hint: int = -1) -> list[bytes]:
        return self._call("readlines", hint)

    def readinto(self, buffer: Any) -> int:
        # Not every server's stream has readinto: read, then copy.
        data = self.read(len(buffer))
        buffer[:len(data)] = data
        return len(data)

    def __iter__(self):
        while line := self.readline():
            yield line


class BodyDeadline:
    """WSGI middleware: the body stream gets its deadline before anything can read it."""

    def __init__(self, wsgi_app: Callable, timeout: Callable[[], float]) -> None:
        self.wsgi_app = wsgi_app
        self.timeout = timeout

    def __call__(self, environ: dict, start_response: Callable):
        stream = environ.get("wsgi.input")
        if stream is not None:
            environ["wsgi.input"] = DeadlineInput(stream, self.timeout())
        return self.wsgi_app(environ, start_response)


def route_limit() -> int | None:
    view = current_app.view_functions.get(request.endpoint or "")
    key = getattr(view, LIMIT_KEY, None)
    return current_app.config[key] if key else current_app.config.get("MAX_CONTENT_LENGTH")


def _chunked() -> bool:
    encoding = request.headers.get("Transfer-Encoding", "")
    return "chunked" in encoding.lower() and request.headers.get("Content-Length") is None


def check_body() -> None:
    """Before any other check: an over-limit body is a 413 (a chunked one is read here,
    up to the limit); see the module's notes."""
    limit = route_limit()
    request.max_content_length = limit
    length = request.content_length
    if length is not None:
        if limit is not None and length > limit:
            raise too_large()
        return
    if not _chunked():
        return
    stream = request.environ["wsgi.input"]
    received = bytearray()
    while chunk := stream.read(READ_SIZE):
        received += chunk
        if limit is not None and len(received) > limit:
            raise too_large()
    # The body as it came, now with its length: views and parsers read it as usual.
    request.environ["wsgi.input"] = io.BytesIO(bytes(received))
    request.environ["CONTENT_LENGTH"] = str(len(received))
    for cached in ("stream", "content_length"):
        request.__dict__.pop(cached, None)


def init_body_limit(app: Flask) -> None:
    app.wsgi_app = BodyDeadline(app.wsgi_app, lambda: app.config["BODY_TIMEOUT_S"])
    app.before_request(check_body)
