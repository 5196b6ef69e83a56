"""Hostile and careless clients under gunicorn + gevent: malformed websocket upgrades, a
follower that leaves mid-reply, bad bytes on the wire, and a SIGTERM mid-reply."""

from __future__ import annotations

import base64
import json
import re
import select
import signal
import socket
import sqlite3
import time

import pytest
import websocket

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient
from streaming.sse import decode_delta

from .test_server_streaming import terminal

pytestmark = pytest.mark.server

GOOD_KEY = base64.b64encode(b"0123456789abcdef").decode()
TRACEBACK = re.compile(r"Traceback|Error handling request|Exception on /")


def raw_request(server, head: str, body: bytes = b"") -> tuple[int, dict[str, str], bytes]:
    """Send bytes as written (no client library tidies them up); the status, headers and
    body of the answer."""
    port = int(server.base_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n" + body)
        answer = b""
        while b"\r\n\r\n" not in answer or not _complete(answer):
            chunk = conn.recv(65536)
            if not chunk:
                break
            answer += chunk
    head_bytes, _, rest = answer.partition(b"\r\n\r\n")
    lines = head_bytes.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:] if ": " in line)
    return int(lines[0].split()[1]), {k.lower(): v for k, v in headers.items()}, rest


def _complete(answer: bytes) -> bool:
    head, _, rest = answer.partition(b"\r\n\r\n")
    match = re.search(rb"(?i)content-length: (\d+)", head)
    return match is None or len(rest) >= int(match.group(1))


def upgrade(server, client: RelayClient, thread_id: int, **headers: str | None):
    base = {"Host": "127.0.0.1", "Upgrade": "websocket", "Connection": "Upgrade",
            "Sec-WebSocket-Key": GOOD_KEY, "Sec-WebSocket-Version": "13",
            "Cookie": client.cookie_header()}
    base.update(headers)
    lines = [f"GET /threads/{thread_id}/ws HTTP/1.1"] + [
        f"{name}: {value}" for name, value in base.items() if value is not None]
    return raw_request(server, "\n".join(lines) + "\n")


def tracebacks(server, since: int) -> list[str]:
    return [line for line in server.log()[since:].splitlines() if TRACEBACK.search(line)]


@pytest.fixture(scope="module")
def relay(server_factory):
    return server_factory()


@pytest.mark.parametrize(("headers", "status", "why"), [
    ({"Sec-WebSocket-Version": None}, 426, "version"),
    ({"Sec-WebSocket-Version": "99"}, 426, "version"),
    ({"Sec-WebSocket-Version": "13, 8"}, 426, "version"),
    ({"Sec-WebSocket-Key": None}, 400, "Sec-WebSocket-Key"),
    ({"Sec-WebSocket-Key": "A" * 5000}, 400, "Sec-WebSocket-Key"),
    ({"Sec-WebSocket-Key": "not base64 at all!!!!!!="}, 400, "Sec-WebSocket-Key"),
    ({"Sec-WebSocket-Key": base64.b64encode(b"fifteen bytes!!").decode()}, 400,
     "Sec-WebSocket-Key"),
    ({"Upgrade": None, "Connection": None}, 426, "websocket"),
    ({"Upgrade": "h2c"}, 426, "websocket"),
    ({"Connection": "keep-alive"}, 426, "Connection: Upgrade"),
], ids=["no-version", "version-99", "two-versions", "no-key", "key-5000", "key-not-base64",
        "key-15-bytes", "no-upgrade", "upgrade-h2c", "connection-not-upgrade"])
def test_a_malformed_websocket_upgrade_is_refused_as_rfc_6455_says(relay, headers, status,
                                                                   why):
    client = RelayClient(relay.base_url).open()
    thread_id = client.new_thread()
    since = len(relay.log())
    code, answer_headers, body = upgrade(relay, client, thread_id, **headers)
    assert code == status, body[:300]
    assert why.lower() in body.decode("utf-8", "replace").lower()
    if status == 426:
        assert answer_headers.get("sec-websocket-version") == "13"
        assert answer_headers.get("upgrade", "").lower() == "websocket"
    assert tracebacks(relay, since) == []
    # A well-formed upgrade still works.
    code, answer_headers, _ = upgrade(relay, client, thread_id)
    assert code == 101
    assert answer_headers["sec-websocket-accept"]


def test_a_follower_that_leaves_mid_reply_is_not_an_error(relay, upstream):
    owner = RelayClient(relay.base_url).open()
    thread = owner.new_thread()
    text = " ".join(f"leave{i}" for i in range(150))
    prompt = upstream.script(Reply.words(text, token_delay_s=0.02))
    url = relay.base_url.replace("http://", "ws://") + f"/threads/{thread}/ws"
    since = len(relay.log())
    followers = [websocket.create_connection(url, cookie=owner.cookie_header(), timeout=10)
                 for _ in range(4)]
    for ws in followers:
        ws.recv()  # the state frame
    sent = owner.send(thread, prompt)
    for ws in followers:
        ws.recv()  # the reply is under way
    # Two leave without a word (a tab killed), two with a close frame (a tab closed).
    for ws in followers[:2]:
        ws.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        ws.sock.close()
    for ws in followers[2:]:
        ws.close()
    message = terminal(owner, sent["assistant_message"]["id"], timeout=30)
    assert message["status"] == "complete" and message["content"] == text
    time.sleep(1.0)  # the handlers notice their sockets are gone on their next send or poll
    log = relay.log()[since:]
    assert tracebacks(relay, since) == [], log[-3000:]
    assert not re.search(r'"GET /threads/\d+/ws[^"]*" 5\d\d', log), log[-3000:]


@pytest.mark.parametrize(("head", "body"), [
    ("POST /threads HTTP/1.1\nContent-Type: application/x-www-form-urlencoded",
     b"content=%ff%fe"),
    ("POST /threads HTTP/1.1\nContent-Type: application/x-www-form-urlencoded",
     b"content=\xff\xfe"),
    ("POST /threads HTTP/1.1\nContent-Type: application/json", b'{"content": "\xff"}'),
    ("POST /threads HTTP/1.1\nContent-Type: application/json", b"[" * 5000),
    ("GET /search?q=%ff HTTP/1.1\nAccept: application/json", b""),
], ids=["percent-escaped", "raw-bytes", "json-bytes", "deep-json", "query"])
def test_bad_bytes_on_the_wire_are_a_400_and_nothing_is_stored(relay, head, body):
    client = RelayClient(relay.base_url).open()
    token = re.search(r'name="csrf-token" content="([^"]+)"',
                      client.request("GET", "/").text).group(1)
    since = len(relay.log())
    before = len(client.get_json("/").json()["threads"])
    status, _, answer = raw_request(relay, (
        f"{head}\nHost: 127.0.0.1\nAccept: application/json\nX-CSRF-Token: {token}\n"
        f"Cookie: {client.cookie_header()}\nContent-Length: {len(body)}\nConnection: close\n"),
        body)
    assert status == 400, answer[:300]
    assert re.search(rb"not valid UTF-8|nested too deeply", answer)
    assert len(client.get_json("/").json()["threads"]) == before
    assert tracebacks(relay, since) == []


@pytest.mark.parametrize("path", ["/threads", "/threads/broadcast"])
@pytest.mark.parametrize(("content_type", "body"), [
    ("application/x-www-form-urlencoded", b"thread_ids=1&content=%ff%fe"),
    ("application/json", b'{"thread_ids": [1], "content": ' + b"[" * 5000 + b"]" * 5000 + b"}"),
], ids=["form", "deep-json"])
def test_a_chunked_body_is_checked_as_it_is_read_without_an_error_logged(relay, path,
                                                                         content_type, body):
    # Sent chunked, the body's length is unknown up front: the rate limit reads it first.
    client = RelayClient(relay.base_url).open()
    token = re.search(r'name="csrf-token" content="([^"]+)"',
                      client.request("GET", "/").text).group(1)
    since = len(relay.log())
    chunked = f"{len(body):x}\r\n".encode() + body + b"\r\n0\r\n\r\n"
    status, _, answer = raw_request(relay, (
        f"POST {path} HTTP/1.1\nHost: 127.0.0.1\nAccept: application/json\n"
        f"X-CSRF-Token: {token}\nCookie: {client.cookie_header()}\n"
        f"Content-Type: {content_type}\nTransfer-Encoding: chunked\nConnection: close\n"),
        chunked)
    assert status == 400, answer[:300]
    assert re.search(rb"not valid UTF-8|nested too deeply", answer)
    assert tracebacks(relay, since) == []
    assert client.get_json("/").json()["threads"] == []


# -- SIGTERM ---------------------------------------------------------------------------------
def test_sigterm_exits_as_soon_as_the_reply_is_marked_interrupted(server_factory, upstream):
    relay = server_factory(GRACEFUL_TIMEOUT="20")
    browser = RelayClient(relay.base_url).open()
    text = " ".join(f"term{i}" for i in range(800))
    thread_id = browser.new_thread()
    sent = browser.send(thread_id, upstream.script(Reply.words(text, token_delay_s=0.02)))
    reply_id = sent["assistant_message"]["id"]
    received: list[str] = []
    with browser.stream(sent["stream_url"]) as conn:
        events = iter(conn)
        for event in events:
            received.append(decode_delta(event.data))
            if len(received) == 30:
                break
        # An idle keep-alive connection, as a browser keeps one between requests, and a
        # websocket follower: neither may hold the worker up.
        idle = socket.create_connection(("127.0.0.1", int(relay.base_url.rsplit(":", 1)[1])))
        idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        idle.recv(65536)
        follower = websocket.create_connection(
            relay.base_url.replace("http://", "ws://") + f"/threads/{thread_id}/ws",
            cookie=browser.cookie_header(), timeout=10)
        follower.recv()
        relay.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        end = None
        for event in events:
            if event.event == "delta":
                received.append(decode_delta(event.data))
            else:
                end = event.event
                break
    relay.process.wait(30)
    exited_in = time.monotonic() - signalled
    idle.close()
    follower.close()
    assert end == "error"  # the stream ends with its terminal event
    database = relay.env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(database) as conn:
        status, content = conn.execute("SELECT status, content FROM messages WHERE id = ?",
                                       (reply_id,)).fetchone()
    assert status == "interrupted"
    assert content == "".join(received) and text.startswith(content) and len(content) > 30
    assert exited_in < 3, f"the server took {exited_in:.1f} s to exit"
    assert tracebacks(relay, 0) == []
    assert "Worker graceful timeout" not in relay.log()


# -- request bodies: over the limit, chunked, slow, or shorter than announced ---------------
BODY_LIMIT = 4096
BODY_TIMEOUT_S = 2


@pytest.fixture(scope="module")
def strict_relay(server_factory):
    return server_factory(MAX_REQUEST_BYTES=str(BODY_LIMIT), BODY_TIMEOUT_S=str(BODY_TIMEOUT_S))


def body_head(client: RelayClient, method: str, path: str, *extra: str) -> str:
    return "\n".join([f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", "Accept: application/json",
                      f"X-CSRF-Token: {client.csrf}", f"Cookie: {client.cookie_header()}",
                      *extra]) + "\n"


def answer_while_sending(server, head: str, pieces, pause: float = 0.0,
                         within: float = 30.0) -> tuple[int, bytes, float]:
    """Send the head, then body `pieces` one by one (an iterable, maybe endless) until
    the server answers; the status, the answer's body and how long the answer took. Fails
    if no answer comes within `within` seconds, or the server closes without one."""
    port = int(server.base_url.rsplit(":", 1)[1])
    started = time.monotonic()
    answer = b""
    with socket.create_connection(("127.0.0.1", port), timeout=within) as conn:
        conn.sendall(head.replace("\n", "\r\n").encode("latin-1") + b"\r\n")
        pieces = iter(pieces)
        sending = True
        while not (b"\r\n\r\n" in answer and _complete(answer)):
            assert time.monotonic() - started < within, "no answer in time: the request hangs"
            readable, _, _ = select.select([conn], [], [], pause or 0.01)
            if readable:
                chunk = conn.recv(65536)
                if not chunk:
                    break
                answer += chunk
                continue
            if sending:
                piece = next(pieces, None)
                if piece is None:
                    sending = False
                    continue
                try:
                    conn.sendall(piece)
                except OSError:  # the server stopped reading: its answer is on the way
                    sending = False
    took = time.monotonic() - started
    assert answer, "the server closed the connection without an answer"
    head_bytes, _, rest = answer.partition(b"\r\n\r\n")
    return int(head_bytes.split()[1]), rest, took


def endless_chunks(size: int = 1024):
    while True:
        yield f"{size:x}\r\n".encode() + b"a" * size + b"\r\n"


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/threads"), ("POST", "/threads/import"), ("POST", "/messages/1/cancel"),
    ("POST", "/threads/1/rename"), ("GET", "/"), ("GET", "/healthz"),
])
def test_a_body_announced_over_the_limit_is_a_413_at_once(strict_relay, method, path):
    client = RelayClient(strict_relay.base_url).open()
    since = len(strict_relay.log())
    limit = BODY_LIMIT if path != "/threads/import" else 8 * 1024 * 1024
    # Nothing of the body is sent: the answer must not wait for it.
    status, answer, _ = answer_while_sending(strict_relay, body_head(
        client, method, path, "Content-Type: application/json",
        f"Content-Length: {limit + 1}"), [])
    assert status == 413, answer[:300]
    assert b"too much to send at once" in answer, answer[:300]
    assert tracebacks(strict_relay, since) == []


@pytest.mark.parametrize(("method", "path", "content_type"), [
    ("POST", "/threads", "application/json"),
    ("POST", "/threads", "application/x-www-form-urlencoded"),
    ("POST", "/messages/1/cancel", "text/plain"),
    ("GET", "/healthz", "application/octet-stream"),
])
def test_an_endless_chunked_body_is_refused_at_the_limit(strict_relay, method, path,
                                                          content_type):
    client = RelayClient(strict_relay.base_url).open()
    since = len(strict_relay.log())
    status, answer, _ = answer_while_sending(strict_relay, body_head(
        client, method, path, f"Content-Type: {content_type}", "Transfer-Encoding: chunked"),
        endless_chunks())
    assert status == 413, answer[:300]
    assert b"too much to send at once" in answer, answer[:300]
    assert tracebacks(strict_relay, since) == []
    assert client.get_json("/").json()["threads"] == []


def test_a_chunked_body_within_the_limit_is_read_as_sent(strict_relay):
    client = RelayClient(strict_relay.base_url).open()
    thread_id = client.new_thread()
    title = "é" * 50
    body = json.dumps({"title": title, "padding": "a" * 3500}).encode()  # ~3.6 KB
    pieces = [f"{len(body[i:i + 100]):x}\r\n".encode() + body[i:i + 100] + b"\r\n"
              for i in range(0, len(body), 100)] + [b"0\r\n\r\n"]
    status, answer, _ = answer_while_sending(strict_relay, body_head(
        client, "POST", f"/threads/{thread_id}/rename", "Content-Type: application/json",
        "Transfer-Encoding: chunked"), pieces)
    assert status == 200, answer[:300]
    assert json.loads(answer)["thread"]["title"] == title


@pytest.mark.parametrize("kind", ["shorter-than-announced", "trickling", "chunked-stalled"])
def test_a_body_that_stops_arriving_is_a_408_not_a_held_request(strict_relay, kind):
    client = RelayClient(strict_relay.base_url).open()
    since = len(strict_relay.log())
    body = b'{"title": "never all there"}'
    if kind == "chunked-stalled":
        extra, pieces, pause = "Transfer-Encoding: chunked", [b"5\r\n{\"tit"], 0.0
    elif kind == "trickling":  # a byte every half second: never done before the deadline
        extra, pieces, pause = f"Content-Length: {len(body)}", [bytes([b]) for b in body], 0.5
    else:
        extra, pieces, pause = f"Content-Length: {len(body) + 100}", [body], 0.0
    status, answer, took = answer_while_sending(strict_relay, body_head(
        client, "POST", "/threads", "Content-Type: application/json", extra), pieces, pause)
    assert status == 408, answer[:300]
    assert b"did not arrive" in answer, answer[:300]
    assert took >= BODY_TIMEOUT_S * 0.9  # the deadline, not an early refusal
    assert tracebacks(strict_relay, since) == []
    assert client.get_json("/").json()["threads"] == []
    # The worker is free for everyone else.
    assert RelayClient(strict_relay.base_url).open().new_thread()
