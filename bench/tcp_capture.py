"""A recording TCP proxy: what a client and a server really said to each other, byte for byte.

    python -m bench.tcp_capture --listen 9300 --to 127.0.0.1:9100 --dir capture/

Each accepted connection is forwarded to `--to`; the bytes each way are written as they pass
to `<dir>/<n>.up` (client to server) and `<dir>/<n>.down` (server to client). Used by the
soak (`--capture`) to tell whether a fault is on the wire or made in Relay's client.
Plain threads, no gevent: it must not share the event-loop behaviour it helps to judge.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import socket
import sys
import threading
from pathlib import Path


def _pump(source: socket.socket, sink: socket.socket, record: Path) -> None:
    with record.open("wb", buffering=0) as out:
        while True:
            try:
                data = source.recv(65536)
            except OSError:
                data = b""
            if not data:
                break
            out.write(data)
            try:
                sink.sendall(data)
            except OSError:
                break
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)  # the end passes on; the other direction goes on


def _serve(client: socket.socket, target: tuple[str, int], directory: Path, n: int) -> None:
    try:
        upstream = socket.create_connection(target)
    except OSError:
        client.close()
        return
    pumps = [threading.Thread(target=_pump, args=(client, upstream, directory / f"{n}.up"),
                              daemon=True),
             threading.Thread(target=_pump, args=(upstream, client, directory / f"{n}.down"),
                              daemon=True)]
    for pump in pumps:
        pump.start()
    for pump in pumps:
        pump.join()
    client.close()
    upstream.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--listen", type=int, required=True, help="port on 127.0.0.1")
    p.add_argument("--to", required=True, help="host:port to forward to")
    p.add_argument("--dir", required=True, help="where the recordings go")
    args = p.parse_args(argv)
    host, port = args.to.rsplit(":", 1)
    directory = Path(args.dir)
    directory.mkdir(parents=True, exist_ok=True)
    listener = socket.create_server(("127.0.0.1", args.listen), backlog=1024)
    print(f"capturing 127.0.0.1:{args.listen} -> {args.to} into {directory}", flush=True)
    for n in itertools.count(1):
        client, _ = listener.accept()
        threading.Thread(target=_serve, args=(client, (host, int(port)), directory, n),
                         daemon=True).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
