"""A small stdlib client for a running Relay: a browser's cookies and CSRF token, JSON calls."""

from __future__ import annotations

import http.cookiejar
import json
import re
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from typing import Any

from bench.sse_client import SSEConnection
from streaming.sse import decode_delta

_CSRF = re.compile(r'<meta name="csrf-token" content="([^"]+)"')


@dataclass
class Answer:
    status: int
    headers: dict[str, str]
    body: bytes

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.body)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


class RelayClient:
    """One browser: its own owner cookie and CSRF token, so threads belong to it."""

    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.cookies = http.cookiejar.CookieJar()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self.cookies), _NoRedirect())
        self.csrf = ""

    def request(self, method: str, path: str, *, data: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers=headers or {})
        try:
            with self._opener.open(req, timeout=self.timeout) as resp:
                return Answer(resp.status, dict(resp.headers), resp.read())
        except urllib.error.HTTPError as err:
            return Answer(err.code, dict(err.headers), err.read())

    def open(self) -> RelayClient:
        """Load the home page: sets the owner cookie and reads the CSRF token."""
        page = self.request("GET", "/")
        match = _CSRF.search(page.text)
        if page.status != 200 or not match:
            raise RuntimeError(f"home page answered {page.status} without a CSRF token")
        self.csrf = match.group(1)
        return self

    def post_json(self, path: str, payload: dict | None = None, **headers: str) -> Answer:
        return self.request("POST", path, data=json.dumps(payload or {}).encode(),
                            headers={"Content-Type": "application/json",
                                     "Accept": "application/json",
                                     "X-CSRF-Token": self.csrf, **headers})

    def upload(self, name: str, data: bytes,
               content_type: str = "application/octet-stream") -> Answer:
        """POST /uploads: the file as the multipart field `file`."""
        boundary = f"relay-{uuid.uuid4().hex}"
        quoted = name.replace("\\", "\\\\").replace('"', '\\"')
        body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
                f"filename=\"{quoted}\"\r\nContent-Type: {content_type}\r\n\r\n").encode() + \
            data + f"\r\n--{boundary}--\r\n".encode()
        return self.request("POST", "/uploads", data=body, headers={
            "Content-Type": f"multipart/form-data; boundary={boundary}",
            "Accept": "application/json", "X-CSRF-Token": self.csrf})

    def get_json(self, path: str) -> Answer:
        return self.request("GET", path, headers={"Accept": "application/json"})

    def new_thread(self) -> int:
        answer = self.post_json("/threads")
        if answer.status != 201:
            raise RuntimeError(f"POST /threads answered {answer.status}: {answer.text}")
        return answer.json()["thread"]["id"]

    def send(self, thread_id: int, content: str) -> dict:
        """Post a prompt; the JSON answer (both messages and `stream_url`)."""
        answer = self.post_json(f"/threads/{thread_id}/messages", {"content": content})
        if answer.status != 201:
            raise RuntimeError(f"POST message answered {answer.status}: {answer.text}")
        return answer.json()

    def message(self, message_id: int) -> dict:
        return self.get_json(f"/messages/{message_id}").json()

    def cookie_header(self) -> str:
        return "; ".join(f"{c.name}={c.value}" for c in self.cookies)

    def stream(self, path: str, *, last_event_id: str | None = None,
               timeout: float | None = None) -> SSEConnection:
        return SSEConnection(self.base_url + path, cookies=self.cookie_header(),
                             last_event_id=last_event_id, timeout=timeout or self.timeout)


# The events that end a reply's stream; a client skips events it does not know.
TERMINAL_EVENTS = ("done", "error", "aborted")


def read_reply(connection: SSEConnection, *, stop_after: int | None = None
               ) -> tuple[str, str | None, str | None]:
    """Decoded delta text, the terminal event's name (None if cut short) and the last id.

    With `stop_after`, disconnect after that many delta events, like a closed tab.
    """
    text: list[str] = []
    deltas = 0
    with connection:
        for event in connection:
            if event.event == "delta":
                text.append(decode_delta(event.data))
                deltas += 1
                if stop_after is not None and deltas >= stop_after:
                    return "".join(text), None, event.id
            elif event.event in TERMINAL_EVENTS:
                return "".join(text), event.event, event.id
            # Any other event (`queued`, ...) is a part of its own: not the end.
    return "".join(text), None, connection.last_event_id


def read_reconnecting(client: RelayClient, path: str, *, every: int = 2,
                      most: int = 3000) -> tuple[str, str | None, int]:
    """Read a reply's stream, cut and resumed with `Last-Event-ID` after every `every`
    delta events, as a flaky network would: (decoded text, terminal event, reconnects)."""
    received: list[str] = []
    last_id: str | None = None
    for reconnects in range(most):
        connection = client.stream(path, last_event_id=last_id)
        if connection.status != 200:
            raise RuntimeError(f"the stream answered {connection.status}")
        part, end_event, last_id = read_reply(connection, stop_after=every)
        received.append(part)
        if end_event is not None:
            return "".join(received), end_event, reconnects
    raise RuntimeError(f"the reply did not end within {most} reconnects")


@dataclass
class ReplyParts:
    """Everything a reply's stream carried: text, reasoning, step events, how it ended."""

    text: str = ""
    reasoning: str = ""
    steps: list[dict] = field(default_factory=list)  # the step events, in order
    end_event: str | None = None
    last_id: str | None = None

    def final_steps(self) -> list[dict]:
        """Each step as its last event left it (the shape of Message JSON `steps`)."""
        latest: dict[int, dict] = {}
        for event in self.steps:
            latest[event["index"]] = {k: event[k] for k in ("name", "arguments", "result",
                                                            "status")}
        return [latest[i] for i in sorted(latest)]


def read_parts(connection: SSEConnection, parts: ReplyParts | None = None, *,
               stop_after: int | None = None) -> ReplyParts:
    """Add what the stream brings (`delta`, `reasoning`, `step`) to `parts` until its end,
    or, with `stop_after`, disconnect after that many such events, like a closed tab."""
    parts = parts or ReplyParts()
    seen = 0
    with connection:
        for event in connection:
            if event.event == "delta":
                parts.text += decode_delta(event.data)
            elif event.event == "reasoning":
                parts.reasoning += decode_delta(event.data)
            elif event.event == "step":
                parts.steps.append(json.loads(event.data))
            elif event.event in TERMINAL_EVENTS:
                parts.end_event, parts.last_id = event.event, event.id
                return parts
            else:
                continue
            parts.last_id = event.id
            seen += 1
            if stop_after is not None and seen >= stop_after:
                return parts
    return parts


def read_parts_reconnecting(client: RelayClient, path: str, cuts: list[int], *,
                            most: int = 3000) -> tuple[ReplyParts, int]:
    """Read every part of a reply, cut after `cuts[i]` events on connection i (then after
    every 2) and resumed with `Last-Event-ID`: (the parts, reconnects)."""
    parts = ReplyParts()
    for reconnects in range(most):
        every = cuts[reconnects] if reconnects < len(cuts) else 2
        connection = client.stream(path, last_event_id=parts.last_id)
        if connection.status != 200:
            raise RuntimeError(f"the stream answered {connection.status}")
        read_parts(connection, parts, stop_after=every)
        if parts.end_event is not None:
            return parts, reconnects
    raise RuntimeError(f"the reply did not end within {most} reconnects")
