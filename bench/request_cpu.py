"""Relay's worker CPU per request at idle: posting a prompt, claiming its stream, a 404.

One client sends each kind of request N times in a row (each waits for the previous answer);
the worker's utime + stime from /proc before and after, less its idle rate, divided by N:

    python -m bench.request_cpu [--requests 200] [--no-pin] [--json out.json]

bench/README.md says what each row measures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from bench.harness import (
    CLIENT_CPU,
    SERVER_CPU,
    BenchError,
    FakeUpstreamProcess,
    Rig,
    cpu_seconds,
    fmt,
    host_busy_seconds,
    own_cpu_seconds,
    pin_clients,
    pin_process,
    run,
    run_args,
    table,
    write_json,
)
from bench.relay_client import read_reply

IDLE_S = 2.0  # how long the idle worker's own CPU (periodic greenlets) is read for


class RequestCpu(Rig):
    name = "request-cpu"
    pinned = False

    def start(self) -> None:
        self.pinned = not self.args.no_pin and pin_clients()
        # One token at once: a claimed reply ends as soon as it starts. Nothing starts a
        # pending reply but its claim, and one client may post as often as it likes.
        fake = FakeUpstreamProcess(self.workdir, tokens=1, token_delay_ms=0,
                                   first_token_delay_ms=0)
        self.start_servers(fake, DRIVER_GRACE_MS=3_600_000, RATE_LIMIT="1000000/minute")
        assert self.server is not None and self.server.process is not None
        if self.pinned:
            pin_process(self.server.process.pid, {SERVER_CPU})
            pin_process(self.worker_pid, {SERVER_CPU})

    def cpu(self) -> float:
        value = cpu_seconds(self.worker_pid) if self.worker_pid else None
        if value is None:
            raise BenchError("the worker is gone")
        return value

    def measure(self, n: int, idle_rate: float, send: Callable[[int], None]) -> dict[str, Any]:
        """`send(i)` for i in 0..n-1, one after another: worker CPU and wall time per request."""
        walls = []
        before, started = self.cpu(), time.monotonic()
        for i in range(n):
            t = time.monotonic()
            send(i)
            walls.append(time.monotonic() - t)
        elapsed = time.monotonic() - started
        used = self.cpu() - before
        return {"n": n, "cpu_s": used, "seconds": elapsed,
                "cpu_ms_per_request": (used - idle_rate * elapsed) * 1000 / n,
                "wall_ms_median": statistics.median(walls) * 1000}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.request_cpu",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests of each kind (200)")
    parser.add_argument("--no-pin", action="store_true",
                        help=f"do not pin the server to CPU {SERVER_CPU} and this process and "
                             f"the fake to CPU {CLIENT_CPU}")
    run_args(parser)
    args = parser.parse_args(argv)
    n = args.requests
    rig = RequestCpu(args)
    results: dict[str, Any] = {}

    def measure() -> None:
        client = rig.new_client()
        threads = [client.new_thread() for _ in range(2 * n + 1)]  # a thread per prompt
        replies: list[str] = []

        def post_json(i: int) -> None:
            replies.append(client.send(threads[i], f"{rig.prompt('json')} {i}")["stream_url"])

        def post_htmx(i: int) -> None:
            answer = client.request(
                "POST", f"/threads/{threads[n + i]}/messages",
                data=f"content=htmx+{i}&csrf_token={client.csrf}".encode(),
                headers={"HX-Request": "true",
                         "Content-Type": "application/x-www-form-urlencoded"})
            if answer.status != 200:
                raise BenchError(f"htmx POST answered {answer.status}")

        def claim(i: int) -> None:
            _, terminal, _ = read_reply(client.stream(replies[i]))
            if terminal != "done":
                raise BenchError(f"claim {i} ended with {terminal!r}")

        def not_found(i: int) -> None:
            if client.request("GET", f"/no-such-page/{i}").status != 404:
                raise BenchError("the 404 reference did not answer 404")

        # Warm every path once (not measured), then let the worker go idle.
        post_json(0)
        claim(0)
        replies.clear()
        not_found(0)
        time.sleep(1.0)
        before = rig.cpu()
        time.sleep(IDLE_S)
        idle_rate = (rig.cpu() - before) / IDLE_S
        results["idle_worker_ms_per_s"] = idle_rate * 1000
        assert rig.fake is not None and rig.fake.process is not None
        ours = (rig.worker_pid, rig.fake.process.pid)
        host, mine, started = host_busy_seconds(), own_cpu_seconds(), time.monotonic()
        procs = [cpu_seconds(pid) or 0.0 for pid in ours]
        for name, send in (("404", not_found), ("post_json", post_json),
                           ("post_htmx", post_htmx), ("claim", claim)):
            print(f"measuring {name} x {n} ...", flush=True)
            results[name] = rig.measure(n, idle_rate, send)
        busy = (host_busy_seconds() or 0.0) - (host or 0.0) - (own_cpu_seconds() - mine) - sum(
            (cpu_seconds(pid) or 0.0) - before for pid, before in zip(ours, procs, strict=True))
        results["others_core_share"] = max(0.0, busy) / (time.monotonic() - started)

    status = run(rig, measure)
    if "claim" in results:
        rows = [["GET /no-such-page (404, reference)", "404"],
                ["POST /threads/<id>/messages (JSON)", "post_json"],
                ["POST /threads/<id>/messages (htmx, fragment)", "post_htmx"],
                ["GET /messages/<id>/stream (claim; 1-token reply to `done`)", "claim"]]
        print(f"\nRelay worker CPU per request at idle: {n} sequential requests of each kind; "
              f"idle worker {results['idle_worker_ms_per_s']:.2f} ms/s subtracted; "
              f"{'server on CPU 0, client on CPU 1' if rig.pinned else 'not pinned'}; "
              f"other processes kept {results['others_core_share'] * 100:.0f} % of a core busy")
        print("\n".join(table(
            ["request", "CPU/request (ms)", "wall median (ms)", "x 404"],
            [[label, fmt(results[key]["cpu_ms_per_request"], 1, 2),
              fmt(results[key]["wall_ms_median"], 1, 2),
              fmt(results[key]["cpu_ms_per_request"] / results["404"]["cpu_ms_per_request"], 1,
                  1) if results["404"]["cpu_ms_per_request"] > 0 else "-"]
             for label, key in rows])))
        if args.json:
            write_json(args.json, {"requests": n, "results": results})
    return status


if __name__ == "__main__":
    sys.exit(main())
