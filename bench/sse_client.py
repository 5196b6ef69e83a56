"""A browser-faithful Server-Sent Events parser and a small blocking client (stdlib only).

``SSEParser`` follows the WHATWG HTML "event stream interpretation" algorithm, so tests and
benchmarks see exactly the events an EventSource would dispatch. ``SSEConnection`` streams
them from a live server with ``http.client``, yielding each event as soon as its bytes arrive.
"""

from __future__ import annotations

import codecs
import contextlib
import http.client
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from types import TracebackType
from urllib.parse import urlsplit

__all__ = ["Event", "SSEConnection", "SSEParser", "stream_events"]

# Small reads so that an event is handed over as soon as the server flushes it.
_READ_SIZE = 4096
# Enough of an error body to explain a failure without reading an unbounded stream.
_ERROR_BODY_LIMIT = 64 * 1024


@dataclass
class Event:
    """A dispatched event; ``id`` is the last event id in effect (None if never set)."""

    event: str = "message"
    data: str = ""
    id: str | None = None


class SSEParser:
    """Incremental event-stream parser; ``feed`` accepts bytes split at any point."""

    def __init__(self) -> None:
        # Invalid UTF-8 becomes U+FFFD, as in browsers; the incremental decoder keeps a
        # multi-byte sequence that is split across chunks until it is complete.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._started = False  # whether the first character (a possible BOM) has been seen
        self._pending: list[str] = []  # pieces of the current, unterminated line
        self._skip_lf = False  # the previous chunk ended with CR; an LF next completes CRLF
        self._data: list[str] = []
        self._event_type = ""
        self._id_buffer: str | None = None
        self.last_event_id: str | None = None
        """The id a reconnect would send as Last-Event-ID (None if the stream never set one)."""
        self.retry: int | None = None
        """The reconnection time in milliseconds from the last valid ``retry`` field."""

    def feed(self, chunk: bytes) -> list[Event]:
        """Consume ``chunk`` and return the events it completes, in stream order."""
        text = self._decoder.decode(chunk)
        if not text:
            return []
        if not self._started:
            self._started = True
            if text[0] == "\ufeff":
                text = text[1:]
        start = 0
        if self._skip_lf:
            self._skip_lf = False
            if text.startswith("\n"):
                start = 1
        events: list[Event] = []
        length = len(text)
        while start < length:
            # Only the new text is searched, so a long line fed in many chunks stays linear.
            cr = text.find("\r", start)
            lf = text.find("\n", start)
            if cr == -1 and lf == -1:
                self._pending.append(text[start:])
                break
            if cr == -1 or (lf != -1 and lf < cr):
                end, next_start = lf, lf + 1
            elif cr + 1 < length:
                end = cr
                next_start = cr + 2 if text[cr + 1] == "\n" else cr + 1
            else:
                # A CR ends the line at once (browsers dispatch without waiting for the next
                # byte); remember to drop an LF that may start the next chunk.
                end, next_start = cr, cr + 1
                self._skip_lf = True
            line = text[start:end]
            if self._pending:
                self._pending.append(line)
                line = "".join(self._pending)
                self._pending.clear()
            event = self._process_line(line)
            if event is not None:
                events.append(event)
            start = next_start
        return events

    def _process_line(self, line: str) -> Event | None:
        if not line:
            return self._dispatch()
        if line[0] == ":":
            return None
        field, colon, value = line.partition(":")
        if colon and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._event_type = value
        elif field == "data":
            self._data.append(value)
        elif field == "id":
            if "\0" not in value:
                self._id_buffer = value
        elif field == "retry" and value.isascii() and value.isdigit():
            # isdigit() alone would accept non-ASCII digits, which browsers ignore.
            self.retry = int(value)
        return None

    def _dispatch(self) -> Event | None:
        # The last event id is committed at every blank line, even when nothing is dispatched.
        self.last_event_id = self._id_buffer
        if not self._data:
            self._event_type = ""
            return None
        # Joining with LF equals the spec's "append value + LF, then drop the final LF".
        event = Event(
            event=self._event_type or "message",
            data="\n".join(self._data),
            id=self.last_event_id,
        )
        self._data = []
        self._event_type = ""
        return event


class SSEConnection:
    """A blocking GET of an event stream; iterate for events, ``close()`` to disconnect."""

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        cookies: str | None = None,
        last_event_id: str | None = None,
        timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL, got {url!r}")
        conn_class = (
            http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
        )
        self.url = url
        self.parser = SSEParser()
        self.body = b""
        """Start of a non-200 body with a Content-Length (at most 64 KiB); else empty."""
        self._conn = conn_class(parts.hostname, parts.port, timeout=timeout)
        self._sock: socket.socket | None = None
        self._response: http.client.HTTPResponse | None = None
        self._closed = False
        self.truncated = False
        """True if the server closed the connection in the middle of a chunked body."""

        request_headers = {"Accept": "text/event-stream", "Cache-Control": "no-cache"}
        if cookies is not None:
            request_headers["Cookie"] = cookies
        if last_event_id is not None:
            request_headers["Last-Event-ID"] = last_event_id
        request_headers.update(headers or {})
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        try:
            self._conn.connect()
            # Kept so close() can shut the socket down even if http.client still holds it.
            self._sock = self._conn.sock
            self._conn.request("GET", path, headers=request_headers)
            self._response = self._conn.getresponse()
        except BaseException:
            self.close()
            raise
        self.status: int = self._response.status
        self.reason: str = self._response.reason
        self.headers: http.client.HTTPMessage = self._response.headers
        if self.status != 200:
            self._read_error_body()

    def _read_error_body(self) -> None:
        # An error response is not an event stream: keep a bounded prefix for diagnostics and
        # disconnect, so iteration ends at once. Only a body of declared length is read, since
        # one delimited by connection close could keep us waiting until the timeout.
        if self._response is not None and self._response.length is not None:
            with contextlib.suppress(OSError, http.client.HTTPException):
                self.body = self._response.read(_ERROR_BODY_LIMIT)
        self.close()

    @property
    def last_event_id(self) -> str | None:
        """The last event id seen so far (what a browser would send when reconnecting)."""
        return self.parser.last_event_id

    @property
    def retry(self) -> int | None:
        """The server-requested reconnection time in milliseconds, if any."""
        return self.parser.retry

    def events(self) -> Iterator[Event]:
        """Yield events as their bytes arrive; closing the generator closes the connection.

        Ends quietly at end of stream, on a truncated chunked body (``truncated`` is then
        True) or after ``close()``; a read that exceeds ``timeout`` raises TimeoutError.
        """
        try:
            while not self._closed and self._response is not None:
                try:
                    chunk = self._response.read1(_READ_SIZE)
                except http.client.IncompleteRead:
                    # The server went away mid-body; a browser treats that as end of stream.
                    self.truncated = True
                    break
                except OSError:
                    if self._closed:  # close() from another thread interrupted the read
                        break
                    raise
                if not chunk:
                    break
                yield from self.parser.feed(chunk)
        finally:
            self.close()

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def close(self) -> None:
        """Disconnect now; safe to call more than once."""
        if self._closed:
            return
        self._closed = True
        # shutdown() sends FIN even while http.client's file object still references the
        # socket, so the server sees the disconnect immediately.
        if self._sock is not None:
            with contextlib.suppress(OSError):  # already closed by the peer
                self._sock.shutdown(socket.SHUT_RDWR)
        if self._response is not None:
            self._response.close()
        self._conn.close()

    @property
    def closed(self) -> bool:
        """True once ``close()`` has run (explicitly, at end of stream or on generator close)."""
        return self._closed

    def __enter__(self) -> SSEConnection:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def stream_events(
    url: str,
    *,
    headers: dict[str, str] | None = None,
    cookies: str | None = None,
    last_event_id: str | None = None,
    timeout: float = 30.0,
) -> Iterator[Event]:
    """Yield the events of ``url`` as they arrive; nothing for a non-200 response."""
    conn = SSEConnection(
        url, headers=headers, cookies=cookies, last_event_id=last_event_id, timeout=timeout
    )
    with conn:
        yield from conn
