"""The floor: the least a relay of model output can do, for benchmarks to compare Relay with.

A bare gevent server (no framework, database or SDK). `GET /stream?prompt=<text>` opens a raw
socket to an OpenAI-compatible server, posts the prompt as a streamed Chat Completion, pulls
`choices[0].delta.content` out of each upstream event and writes it to the client as one SSE
`event: delta` (Relay's format: `id:` the offset in code points, data HTML-escaped), then
`event: done`. `GET /healthz` answers `{}`.

    python -m bench.floor_relay --port 9200 --upstream http://127.0.0.1:9100/v1
"""

from __future__ import annotations

import argparse
import contextlib
import json
import signal
import sys
from urllib.parse import parse_qs, urlsplit

import gevent
from gevent import socket
from gevent.server import StreamServer

SSE_HEAD = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n"
            b"Cache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;",
                         "'": "&#x27;", "\r": "&#13;"})


def chunk(data: bytes) -> bytes:
    """One chunk of a chunked HTTP/1.1 body."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def delta_event(text: str, end: int) -> bytes:
    """An SSE `delta` event as Relay writes it: `id` = end offset, data HTML-escaped per line."""
    lines = text.translate(ESCAPES).split("\n")
    return (f"event: delta\nid: {end}\n" + "".join(f"data: {line}\n" for line in lines)
            + "\n").encode()


def dechunk(raw: bytes) -> tuple[bytes, bytes, bool]:
    """The data of the complete chunks at the start of a chunked body, the bytes after them,
    and whether the last (empty) chunk was among them."""
    data = []
    while (line_end := raw.find(b"\r\n")) >= 0:
        size = int(raw[:line_end].split(b";")[0], 16)
        if size == 0:
            return b"".join(data), b"", True
        end = line_end + 2 + size
        if len(raw) < end + 2:
            break
        data.append(raw[line_end + 2:end])
        raw = raw[end + 2:]
    return b"".join(data), raw, False


def read_head(sock: socket.socket, buf: bytes = b"") -> tuple[bytes, bytes]:
    """An HTTP message head (up to the blank line) and the bytes read past it."""
    while b"\r\n\r\n" not in buf:
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("closed before the end of the head")
        buf += data
    head, _, rest = buf.partition(b"\r\n\r\n")
    return head, rest


class Upstream:
    """One streamed Chat Completion over a raw socket: iterate for the content pieces."""

    def __init__(self, base_url: str, prompt: str) -> None:
        url = urlsplit(base_url)
        self.sock = socket.create_connection((url.hostname, url.port or 80))
        body = json.dumps({"model": "floor", "stream": True,
                           "messages": [{"role": "user", "content": prompt}]}).encode()
        self.sock.sendall(
            b"POST %s/chat/completions HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer floor\r\n"
            b"Content-Type: application/json\r\nAccept: text/event-stream\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (url.path.rstrip("/").encode(), url.netloc.encode(), len(body), body))

    def pieces(self):
        """The content of each upstream event, until `[DONE]` or the end of the body."""
        head, raw = read_head(self.sock)
        status = head.split(b" ", 2)[1]
        if status != b"200":
            raise ConnectionError(f"upstream answered {status.decode()}")
        chunked = b"transfer-encoding: chunked" in head.lower()
        events = b""
        while True:
            if chunked:
                data, raw, ended = dechunk(raw)
                events += data
            else:
                events, raw, ended = events + raw, b"", False
            while b"\n\n" in events:
                event, events = events.split(b"\n\n", 1)
                for line in event.split(b"\n"):
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        return
                    payload = json.loads(data)
                    if "error" in payload:
                        raise ConnectionError(str(payload["error"].get("message")))
                    choices = payload.get("choices") or ()
                    content = choices[0].get("delta", {}).get("content") if choices else None
                    if content:
                        yield content
            if ended:
                return
            data = self.sock.recv(65536)
            if not data:
                return
            raw += data

    def close(self) -> None:
        self.sock.close()


def make_handler(upstream_url: str):
    def handle(client: socket.socket, address: tuple[str, int]) -> None:
        upstream = None
        try:
            head, _ = read_head(client)
            target = head.split(b" ", 2)[1].decode()
            parts = urlsplit(target)
            if parts.path == "/healthz":
                client.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                               b"Content-Length: 2\r\nConnection: close\r\n\r\n{}")
                return
            if parts.path != "/stream":
                client.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                               b"Connection: close\r\n\r\n")
                return
            prompt = parse_qs(parts.query).get("prompt", [""])[0]
            upstream = Upstream(upstream_url, prompt)
            client.sendall(SSE_HEAD)
            offset = 0
            try:
                for piece in upstream.pieces():
                    offset += len(piece)
                    client.sendall(chunk(delta_event(piece, offset)))
                terminal = b"event: done\ndata: \n\n"
            except (ConnectionError, ValueError) as err:
                terminal = f"event: error\ndata: {err}\n\n".encode()
            client.sendall(chunk(terminal) + b"0\r\n\r\n")
        except OSError:  # the client went away: drop the upstream request with it
            pass
        finally:
            if upstream is not None:
                upstream.close()
            with contextlib.suppress(OSError):
                client.close()

    return handle


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--upstream", required=True,
                        help="the model's base URL, e.g. http://127.0.0.1:9100/v1")
    args = parser.parse_args(argv)
    server = StreamServer((args.host, args.port), make_handler(args.upstream), backlog=2048)
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, server.stop)
    print(f"floor relay on http://{args.host}:{args.port} -> {args.upstream}", flush=True)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
