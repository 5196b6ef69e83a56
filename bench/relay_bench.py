"""Relay's streaming path next to the floor: CPU per token, added latency, capacity.

Starts the fake model (`bench.fake_upstream`) as its own process, Relay under gunicorn with one
gevent worker and the floor (`bench.floor_relay`, a bare gevent relay of the same model), the
servers pinned to CPU 0 and the fake and this process to CPU 1. For each level N, one batch of
N concurrent "tabs" (threads in this process) against Relay (POST the prompt, read the reply's
SSE stream to its end), then one against the floor (one streaming GET):

    python -m bench.relay_bench [--streams 10,25,50,100,150,200] [--tokens 200]
                                [--token-delay-ms 25] [--first-token-delay-ms 500]
                                [--no-floor] [--no-pin] [--throttle-ms MS] [--json out.json]
                                [--variant NAME=VALUE ... --rounds R]

With `--variant`, a second Relay with those settings (say METRICS=off) takes the floor's
place, and each level is measured `--rounds` times, alternating which side goes first.

bench/README.md explains every figure and how it is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import select
import socket
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlsplit

from bench.fake_upstream import numbered_tokens
from bench.floor_relay import dechunk
from bench.harness import (
    BATCH_SLACK_S,
    CLIENT_CPU,
    REQUEST_TIMEOUT_S,
    SERVER_CPU,
    FakeUpstreamProcess,
    Rig,
    Tab,
    by_column,
    cpu_seconds,
    difference,
    environment,
    finish,
    fmt,
    health_problems,
    host_busy_seconds,
    host_line,
    levels,
    listing,
    own_cpu_seconds,
    pin_clients,
    pin_process,
    print_log,
    raise_fd_limit,
    relay_setting,
    run,
    run_args,
    scan_log,
    server_line,
    summary,
    table,
    write_json,
    writer_line,
    writer_settings,
)
from bench.relay_client import TERMINAL_EVENTS, RelayClient
from bench.relay_server import RelayServer
from bench.sse_client import SSEParser
from streaming.sse import decode_delta

CAPACITY_GAP_MS = 50.0  # the most p99 added inter-token delay a level within capacity has
OTHERS_WARN = 0.25  # a batch warns when processes not its own keep this many cores busy


# -- one tab -----------------------------------------------------------------------------------
@dataclass
class TimedTab(Tab):
    """A tab that also times its first and last delta; set up before timing starts."""

    t_first: float | None = None  # the first delta event arrived
    t_last: float | None = None  # the last delta event arrived
    delta_events: int = 0
    chars: int = 0
    text_ok: bool | None = None
    arrivals: list[tuple[float, int]] = field(default_factory=list)  # (time, chars so far)

    def on_delta(self, text: str, now: float) -> None:
        if self.t_first is None:
            self.t_first = now
        super().on_delta(text, now)
        self.delta_events += 1
        self.chars += len(text)
        self.t_last = now
        self.arrivals.append((now, self.chars))

    def open_stream(self) -> str:
        """Relay: post the prompt; the reply's stream URL."""
        return self.post()["stream_url"]

    def run(self, barrier: threading.Barrier, reader: StreamReader) -> None:
        try:
            barrier.wait()
            reader.open(self, self.client.base_url + self.open_stream())
        except threading.BrokenBarrierError:
            self.error = "the start barrier broke"
        except Exception as err:  # reported per tab; one failure must not hide the others
            self.error = f"{type(err).__name__}: {err}"


class FloorTab(TimedTab):
    """A tab of the floor: one GET that names the prompt and streams the reply."""

    def open_stream(self) -> str:
        self.t0 = self.t_posted = time.monotonic()
        return "/stream?prompt=" + quote(self.prompt)


class _Stream:
    """One tab's SSE response as it arrives: its head, chunked body and events."""

    def __init__(self, tab: TimedTab, sock: socket.socket) -> None:
        self.tab, self.sock = tab, sock
        self.raw = b""
        self.in_head = True
        self.chunked = False
        self.parser = SSEParser()

    def feed(self, data: bytes, now: float) -> bool:
        """Take the bytes of one read (stamped `now`); False once the stream is over."""
        tab = self.tab
        self.raw += data
        if self.in_head:
            if b"\r\n\r\n" not in self.raw:
                return bool(data)
            head, self.raw = self.raw.split(b"\r\n\r\n", 1)
            status = head.split(b" ", 2)[1].decode()
            if status != "200":
                tab.error = f"the stream answered {status}"
                return False
            tab.t_open, self.in_head = now, False
            self.chunked = b"transfer-encoding: chunked" in head.lower()
        body, ended = self.raw, not data
        if self.chunked:
            body, self.raw, last = dechunk(self.raw)
            ended = ended or last
        else:
            self.raw = b""
        for event in self.parser.feed(body):
            if event.event == "delta":
                tab.on_delta(decode_delta(event.data), now)
            elif event.event in TERMINAL_EVENTS:
                tab.terminal, tab.t_end = event.event, now
                return False
            # any other event (`queued`) is a part of its own, not the end
        if ended:
            tab.error = tab.error or "the stream ended without a terminal event"
        return not ended


class StreamReader:
    """Every tab's SSE stream, read by one thread (epoll) that stamps each read on arrival.

    Hundreds of threads blocked in http.client cost the clients' core several times as much:
    at 200 streams of 40 events/s that core, not the server's, would set the figures.
    """

    def __init__(self) -> None:
        self.epoll = select.epoll()
        self.lock = threading.Lock()
        self.streams: dict[int, _Stream] = {}
        threading.Thread(target=self.run, name="sse-reader", daemon=True).start()

    def open(self, tab: TimedTab, url: str) -> None:
        """Send `tab`'s GET of `url` from the calling thread; the reader takes it from there."""
        parts = urlsplit(url)
        sock = socket.create_connection((parts.hostname, parts.port), timeout=REQUEST_TIMEOUT_S)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
                     f"Accept: text/event-stream\r\nCookie: {tab.client.cookie_header()}\r\n"
                     "\r\n".encode())
        sock.setblocking(False)
        with self.lock:
            self.streams[sock.fileno()] = _Stream(tab, sock)
            self.epoll.register(sock.fileno(), select.EPOLLIN)

    def run(self) -> None:
        while True:
            for fd, _ in self.epoll.poll():
                now = time.monotonic()
                stream = self.streams.get(fd)
                if stream is None:
                    continue
                try:
                    data = stream.sock.recv(1 << 18)
                except BlockingIOError:
                    continue
                except OSError as err:
                    stream.tab.error = stream.tab.error or f"{type(err).__name__}: {err}"
                    data = b""
                if not stream.feed(data, now):
                    self.end(fd)

    def end(self, fd: int, error: str | None = None) -> None:
        with self.lock:
            stream = self.streams.pop(fd, None)
            if stream is None:
                return
            with contextlib.suppress(OSError):
                self.epoll.unregister(fd)
        if error and stream.tab.terminal is None:
            stream.tab.error = stream.tab.error or error
        stream.sock.close()

    def wait(self, tabs: list[TimedTab], deadline: float) -> None:
        """Until every tab's stream is over, or `deadline`: then cut the ones still open."""
        while time.monotonic() < deadline and not all(t.terminal or t.error for t in tabs):
            time.sleep(0.02)
        self.close_all("still streaming at the batch deadline")

    def close_all(self, error: str) -> None:
        for fd in list(self.streams):
            self.end(fd, error)


def seen_times(arrivals: list[tuple[float, int]], token_ends: list[int]) -> list[float]:
    """When the tab first held each token: the first delta that reached the token's end."""
    seen, it = [], iter(arrivals)
    t, chars = next(it, (None, 0))
    for end in token_ends:
        while t is not None and chars < end:
            t, chars = next(it, (None, 0))
        if t is None:
            break
        seen.append(t)
    return seen


# -- the benchmark -----------------------------------------------------------------------------
class Bench(Rig):
    """Batches of N tabs that stream one reply each, at the same time."""

    name = "relay-bench"

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.tokens = numbered_tokens(args.tokens)  # what the fake sends
        self.expected_text = "".join(self.tokens)
        self.token_ends = list(itertools.accumulate(len(t) for t in self.tokens))
        self.floor: FakeUpstreamProcess | None = None
        self.variant: RelayServer | None = None  # Relay with --variant settings
        self.variant_worker: int | None = None
        self.pinned = False
        self.reader = StreamReader()

    def start(self) -> None:
        args = self.args
        self.pinned = not args.no_pin and pin_clients()
        fake = FakeUpstreamProcess(self.workdir, tokens=args.tokens,
                                   token_delay_ms=args.token_delay_ms,
                                   first_token_delay_ms=args.first_token_delay_ms)
        self.start_servers(fake, STREAM_THROTTLE_MS=args.throttle_ms)
        assert self.server is not None and self.server.process is not None
        if args.floor:
            self.floor = FakeUpstreamProcess(self.workdir, "bench.floor_relay",
                                             ready_path="/healthz", upstream=fake.url).start()
        pids = []
        if args.variant:
            env = {**self.server_env(fake, STREAM_THROTTLE_MS=args.throttle_ms),
                   "DATABASE_URL": f"sqlite:///{self.workdir / 'variant.sqlite3'}",
                   **args.variant}
            self.variant = RelayServer(env, self.workdir, workers=1).start()
            self.variant_worker = self.variant.worker_pids()[0]
            pids = [self.variant.process.pid, self.variant_worker]
        if self.pinned:
            for pid in (*pids, self.server.process.pid, self.worker_pid,
                        self.floor.process.pid if self.floor and self.floor.process else None):
                if pid is not None:
                    pin_process(pid, {SERVER_CPU})  # workers gunicorn restarts inherit it

    def unblock(self) -> None:
        self.reader.close_all("the bench stopped")

    def stop(self) -> None:
        super().stop()
        if self.floor is not None:
            self.floor.stop()
        if self.variant is not None:
            self.variant.stop()

    def run_variant_batch(self, n: int, label: str) -> dict[str, Any]:
        """A batch against the Relay with --variant settings (the same steps as Relay's)."""
        main = self.server, self.worker_pid
        self.server, self.worker_pid = self.variant, self.variant_worker
        try:
            result = self.run_batch(n, f"{label} variant", "relay")
        finally:
            self.variant_worker = self.worker_pid
            self.server, self.worker_pid = main
        result["side"] = "variant"
        return result

    def server_pids(self, side: str) -> list[int]:
        """The processes whose CPU counts for `side`: Relay's worker and master, or the floor."""
        if side == "floor":
            assert self.floor is not None and self.floor.process is not None
            return [self.floor.process.pid]
        assert self.server is not None and self.server.process is not None
        assert self.worker_pid is not None
        return [self.worker_pid, self.server.process.pid]

    def settings(self) -> dict[str, Any]:
        args = self.args
        return {
            "streams": args.streams, "tokens": args.tokens,
            "token_delay_ms": args.token_delay_ms,
            "first_token_delay_ms": args.first_token_delay_ms,
            **writer_settings(args.throttle_ms), "reply_chars": len(self.expected_text),
            "floor": args.floor,
            **environment(args.worker_connections, "gevent", "gunicorn", "flask", "sqlalchemy",
                          "openai"),
        }

    # -- one batch ---------------------------------------------------------------------
    def run_batch(self, n: int, label: str, side: str = "relay") -> dict[str, Any]:
        assert self.server is not None and self.server.process is not None
        assert self.fake is not None and self.fake.process is not None
        assert self.worker_pid is not None
        args = self.args
        if side == "floor":
            assert self.floor is not None
            tabs = [FloorTab(i, RelayClient(self.floor.root_url, timeout=REQUEST_TIMEOUT_S), 0,
                             self.prompt(f"{label} floor tab {i}")) for i in range(n)]
        else:
            tabs = [self.new_tab(TimedTab, i, label) for i in range(n)]
        self.live_tabs = tabs
        stream_s = (args.first_token_delay_ms + args.tokens * args.token_delay_ms) / 1000
        barrier = threading.Barrier(n, timeout=REQUEST_TIMEOUT_S)
        health_before = self.health() if side == "relay" else None
        pids = self.server_pids(side)
        cpu_before = [cpu_seconds(pid) for pid in pids]
        clients_before, host_before = host_busy_seconds(CLIENT_CPU), host_busy_seconds()
        fake_before, bench_before = cpu_seconds(self.fake.process.pid), own_cpu_seconds()
        started = time.monotonic()
        deadline = started + stream_s + BATCH_SLACK_S
        threads = [threading.Thread(target=tab.run, args=(barrier, self.reader),
                                    name=f"tab-{tab.index}", daemon=True) for tab in tabs]
        for thread in threads:
            thread.start()
        finish(zip(tabs, threads, strict=True), deadline, lambda tab: barrier.abort())
        self.reader.wait(tabs, deadline)
        cpu_after = [cpu_seconds(pid) for pid in pids]
        clients_after, host_after = host_busy_seconds(CLIENT_CPU), host_busy_seconds()
        fake_after, bench_after = cpu_seconds(self.fake.process.pid), own_cpu_seconds()
        window = time.monotonic() - started
        health_after = self.health() if side == "relay" else None
        records = self.upstream_records({tab.prompt for tab in tabs})
        cpu = [difference(b, a) for b, a in zip(cpu_before, cpu_after, strict=True)]
        result = self.summarise(n, tabs, records, health_before, health_after, cpu[0],
                                cpu[1] if len(cpu) > 1 else None)
        result["side"] = side
        server_cpu = None if None in cpu else sum(cpu)
        result["server_cpu_s"] = server_cpu
        result["server_cpu_us_per_token"] = (server_cpu * 1e6 / result["tokens_relayed"]
                                             if server_cpu is not None
                                             and result["tokens_relayed"] else None)
        result["server_core_share"] = server_cpu / window if server_cpu is not None else None
        busy = difference(clients_before, clients_after)
        result["client_core_share"] = busy / window if self.pinned and busy is not None else None
        result["fake_cpu_s"] = fake_cpu = difference(fake_before, fake_after)
        result["bench_cpu_s"] = bench_after - bench_before
        host = difference(host_before, host_after)
        ours = [server_cpu, fake_cpu, result["bench_cpu_s"]]
        result["others_core_share"] = (None if host is None or None in ours
                                       else max(0.0, host - sum(ours)) / window)
        if (result["others_core_share"] or 0) > OTHERS_WARN:
            result["warnings"].append(
                f"other processes kept {result['others_core_share']:.2f} cores of the host busy "
                "during the batch: its figures may be disturbed")
        if side == "relay":
            worker_pids = self.server.worker_pids()
            if worker_pids != [self.worker_pid]:
                result["warnings"].append(f"worker changed from {self.worker_pid} to "
                                          f"{worker_pids}: the CPU figures of this batch are "
                                          "incomplete")
                if len(worker_pids) == 1:
                    self.worker_pid = worker_pids[0]
        self.live_tabs = []
        return result

    def summarise(self, n: int, tabs: list[TimedTab], records: dict[str, list[dict[str, Any]]],
                  health_before: dict[str, Any] | None, health_after: dict[str, Any] | None,
                  cpu_worker: float | None, cpu_master: float | None) -> dict[str, Any]:
        problems: list[str] = []  # a stream did not work: the exit status says so
        warnings: list[str] = []  # the figures need a second look
        added, total, upstream, to_upstream, back, post, sse_open = [], [], [], [], [], [], []
        last_back, done_lag, gaps_added, last_token = [], [], [], []
        tokens_relayed = 0
        per_tab = []
        for tab in tabs:
            recs = records.get(tab.prompt, [])
            rec = recs[0] if len(recs) == 1 else None
            if len(recs) != 1:
                problems.append(f"tab {tab.index}: {len(recs)} upstream requests for its prompt")
            tokens_relayed += sum(r.get("tokens_sent") or 0 for r in recs)
            tab.text_ok = tab.text == self.expected_text if tab.terminal == "done" else None
            if tab.error:
                problems.append(f"tab {tab.index}: {tab.error}")
            elif tab.terminal != "done":
                problems.append(f"tab {tab.index}: ended with `{tab.terminal}`, not `done`")
            elif not tab.text_ok:
                problems.append(f"tab {tab.index}: streamed text differs from the model's")
            if rec is not None and (rec.get("outcome") != "complete"
                                    or rec.get("tokens_sent") != len(self.tokens)):
                problems.append(f"tab {tab.index}: upstream outcome {rec.get('outcome')}, "
                                f"{rec.get('tokens_sent')} tokens sent")
            row: dict[str, Any] = {"tab": tab.index, "message_id": tab.message_id,
                                   "terminal": tab.terminal, "error": tab.error,
                                   "delta_events": tab.delta_events, "chars": tab.chars,
                                   "text_ok": tab.text_ok}
            times = (tab.t0, tab.t_first)
            if rec is not None and None not in times and rec.get("first_token_sent") is not None:
                up = rec["first_token_sent"] - rec["arrived"]
                tot = tab.t_first - tab.t0
                added.append(tot - up)
                total.append(tot)
                upstream.append(up)
                to_upstream.append(rec["arrived"] - tab.t0)
                back.append(tab.t_first - rec["first_token_sent"])
                row.update(total_ttft_s=tot, upstream_ttft_s=up, added_ttft_s=tot - up,
                           to_upstream_s=rec["arrived"] - tab.t0,
                           first_token_back_s=tab.t_first - rec["first_token_sent"])
            token_times = (rec or {}).get("token_times") or []
            seen = seen_times(tab.arrivals, self.token_ends[:len(token_times)])
            if token_times and len(seen) == len(token_times):
                # A token's gap as the tab saw it minus the model's own gap before it.
                gaps_added += [(seen[i] - seen[i - 1]) - (token_times[i] - token_times[i - 1])
                               for i in range(1, len(seen))]
                last_token.append(seen[-1] - token_times[-1])
                row["last_token_delay_s"] = seen[-1] - token_times[-1]
            finished = rec.get("finished") if rec is not None else None
            if finished is not None and tab.t_last is not None:
                # The fake writes the last token, then the finish/usage/[DONE] tail, then
                # stamps `finished`: the last token left at most that tail's write earlier.
                last_back.append(tab.t_last - finished)
                row["last_token_back_s"] = tab.t_last - finished
            if finished is not None and tab.t_end is not None:
                done_lag.append(tab.t_end - finished)
                row["done_after_upstream_s"] = tab.t_end - finished
            if tab.t0 is not None and tab.t_posted is not None:
                post.append(tab.t_posted - tab.t0)
                row["post_s"] = tab.t_posted - tab.t0
            if tab.t_posted is not None and tab.t_open is not None:
                sse_open.append(tab.t_open - tab.t_posted)
                row["sse_open_s"] = tab.t_open - tab.t_posted
            if tab.t0 is not None and tab.t_end is not None:
                row["stream_s"] = tab.t_end - tab.t0
            per_tab.append(row)

        starts = [t.t0 for t in tabs if t.t0 is not None]
        ends = [t.t_end for t in tabs if t.t_end is not None]
        wall = max(ends) - min(starts) if starts and ends else None
        stream_seconds = sum(r["stream_s"] for r in per_tab if "stream_s" in r)
        keys = ("commits", "deltas", "ticks", "finalized", "failures")
        writer: dict[str, Any] = dict.fromkeys(keys)
        if health_before is not None and health_after is not None:
            wb, wa = health_before["writer"], health_after["writer"]
            writer = {k: wa[k] - wb[k] for k in keys}
            writer["tick_gaps_ms"] = wa.get("tick_gaps_ms")
            problems += health_problems(health_after, health_before)
        throttle_s = self.settings()["throttle_ms"] / 1000
        if wall and throttle_s > 0 and wall > 5 * throttle_s and writer["ticks"] is not None \
                and writer["ticks"] < 0.5 * wall / throttle_s:
            # Every active stream should be flushed (or heartbeated) once per throttle period.
            warnings.append(f"the delta writer ticked {writer['ticks']} times in {wall:.2f} s "
                            f"(~{wall / throttle_s:.0f} expected at {throttle_s * 1000:g} ms): "
                            "it did not run while the replies streamed")
        ok = sum(1 for t in tabs if t.terminal == "done" and not t.error and t.text_ok)
        return {
            "streams": n, "done": ok, "wall_s": wall, "stream_seconds": stream_seconds,
            "added_ttft_s": summary(added), "total_ttft_s": summary(total),
            "upstream_ttft_s": summary(upstream), "to_upstream_s": summary(to_upstream),
            "first_token_back_s": summary(back), "post_s": summary(post),
            "sse_open_s": summary(sse_open), "last_token_back_s": summary(last_back),
            "done_after_upstream_s": summary(done_lag),
            "last_token_delay_s": summary(last_token),
            "gap_added_s": summary(gaps_added),
            "delta_events": summary([t.delta_events for t in tabs]),
            "chars": summary([t.chars for t in tabs]),
            "tokens_relayed": tokens_relayed,
            "peak_streams": peak_concurrency([r for rs in records.values() for r in rs]),
            "worker_cpu_s": cpu_worker, "master_cpu_s": cpu_master,
            "worker_cpu_us_per_token": (cpu_worker * 1e6 / tokens_relayed
                                        if tokens_relayed and cpu_worker is not None
                                        else None),
            "writer": writer,
            "commits_per_s": per(writer["commits"], wall),
            "deltas_per_s": per(writer["deltas"], wall),
            "commits_per_stream_s": per(writer["commits"], stream_seconds),
            "deltas_per_stream_s": per(writer["deltas"], stream_seconds),
            "problems": problems, "warnings": warnings, "tabs": per_tab,
        }


def per(count: float | None, seconds: float | None) -> float | None:
    return count / seconds if count is not None and seconds else None


# -- output ------------------------------------------------------------------------------------
def ratio(relay: float | None, floor: float | None) -> str:
    """Relay / floor as `3.2x`, or "-" when either is missing or the floor's is not positive."""
    if relay is None or floor is None or floor <= 0:
        return "-"
    return f"{relay / floor:,.1f}x"


def peak_concurrency(records: list[dict[str, Any]]) -> int:
    """The most upstream requests of `records` that were open at the same moment."""
    edges = sorted([(r["arrived"], 1) for r in records]
                   + [(r.get("finished") or r.get("closed_at") or float("inf"), -1)
                      for r in records])  # at a tie the end (-1) sorts first
    return max(itertools.accumulate(delta for _, delta in edges), default=0)


def capacity(results: list[dict[str, Any]], side: str) -> tuple[int | None, str]:
    """The most streams at once (peak upstream concurrency) among the levels, from the lowest
    up, whose p99 added inter-token delay is within the limit; and how it was found."""
    best: dict[str, Any] | None = None
    for r in results:
        p99 = r[side]["gap_added_s"]["p99"]
        if p99 is None or p99 * 1000 > CAPACITY_GAP_MS:
            how = f"N={r['streams']} exceeds the limit"
            break
        if best is None or r[side]["peak_streams"] >= best[side]["peak_streams"]:
            best = r
    else:
        how = "every level within the limit"
    if best is None:
        return None, f"< {results[0]['streams']} ({how})"
    peak = best[side]["peak_streams"]
    return peak, f"{peak} (at N={best['streams']}; {how})"


def render_side_by_side(settings: dict[str, Any], results: list[dict[str, Any]]) -> list[str]:
    """Each figure for Relay, the floor and their ratio, one column per level."""
    s = settings
    figures: list[tuple[str, Any, int]] = [  # label, (result -> value), digits
        ("server CPU per relayed token (us)", lambda r: r["server_cpu_us_per_token"], 0),
        ("server core share (%)", lambda r: pct(r["server_core_share"]), 0),
        ("TTFT seen by the tab, median (ms)", lambda r: ms_of(r["total_ttft_s"]["median"]), 0),
        ("TTFT seen by the tab, p99 (ms)", lambda r: ms_of(r["total_ttft_s"]["p99"]), 0),
        ("TTFT added over the model's, median (ms)",
         lambda r: ms_of(r["added_ttft_s"]["median"]), 1),
        ("TTFT added over the model's, p99 (ms)", lambda r: ms_of(r["added_ttft_s"]["p99"]), 1),
        ("last-token delay, median (ms)", lambda r: ms_of(r["last_token_delay_s"]["median"]), 1),
        ("last-token delay, p99 (ms)", lambda r: ms_of(r["last_token_delay_s"]["p99"]), 1),
        ("inter-token delay added, p99 (ms)", lambda r: ms_of(r["gap_added_s"]["p99"]), 1),
        ("SSE delta events per reply, median", lambda r: r["delta_events"]["median"], 0),
        ("upstream streams open at once, most", lambda r: r["peak_streams"], 0),
        ("CPU 1 busy (clients + fake) (%)", lambda r: pct(r["client_core_share"]), 0),
        ("other processes, host busy (% of a core)",
         lambda r: pct(r.get("others_core_share")), 0),
    ]
    lines = [f"Relay vs the floor (ratio = Relay / floor); model TTFT {s['first_token_delay_ms']:g}"
             f" ms, a token every {s['token_delay_ms']:g} ms", ""]
    rows = []
    for label, value, digits in figures:
        relay = [value(r["relay"]) for r in results]
        floor = [value(r["floor"]) if r.get("floor") else None for r in results]
        rows.append([label, "Relay", *(fmt(v, 1, digits) for v in relay)])
        rows.append(["", "floor", *(fmt(v, 1, digits) for v in floor)])
        if "busy" not in label:  # the clients' core and the host are context, not figures
            rows.append(["", "ratio", *(ratio(a, b) for a, b in zip(relay, floor, strict=True))])
    rows.append(["streams ended `done`, text exact", "Relay",
                 *(f"{r['relay']['done']}/{r['streams']}" for r in results)])
    rows.append(["", "floor", *(f"{r['floor']['done']}/{r['streams']}" if r.get("floor") else "-"
                                for r in results)])
    lines += table(["", "", *[f"N={r['streams']}" for r in results]], rows, indent="",
                   min_width=7)

    lines += ["", "capacity curve: p99 inter-token delay added (ms), and the most upstream "
              "streams open at once;", f"  capacity = the most streams at once within "
              f"{CAPACITY_GAP_MS:g} ms, levels taken from the lowest up"]
    sides = ["relay", "floor"] if all(r.get("floor") for r in results) else ["relay"]
    curve = [[str(r["streams"]), *(cell for side in sides for cell in (
        fmt(ms_of(r[side]["gap_added_s"]["p99"]), 1, 1), str(r[side]["peak_streams"])))]
        for r in results]
    lines += table(["N", *(h for side in sides for h in (f"{side} p99", "at once"))], curve,
                   min_width=8)
    found = {side: capacity(results, side) for side in sides}
    for side in sides:
        lines.append(f"  capacity, {side}: {found[side][1]}")
    if len(sides) == 2 and found["relay"][0] and found["floor"][0]:
        lines.append(f"  capacity ratio Relay / floor: "
                     f"{found['relay'][0] / found['floor'][0]:.2f}")

    lines += ["", "Relay's writer tick interval (ms): /healthz writer.tick_gaps_ms after each "
              "batch"]
    gaps = [r["relay"]["writer"].get("tick_gaps_ms") or {} for r in results]
    lines += table(["", *[f"N={r['streams']}" for r in results]],
                   [[key, *(fmt(g[key], 1, 0 if key == "n" else 1) if g.get(key) is not None
                            else "n/a" for g in gaps)] for key in ("p50", "p99", "max", "n")],
                   min_width=8)
    return lines


def ms_of(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000


def pct(share: float | None) -> float | None:
    return None if share is None else share * 100


def render_variant(variant: str, rounds: list[dict[str, Any]]) -> str:
    """Server CPU per relayed token of Relay and of its variant, round by round."""
    lines = [f"Relay vs Relay with {variant} (ratio = Relay / variant): server CPU per relayed "
             "token (us), worker + master", ""]
    rows = []
    for r in rounds:
        a, b = r["relay"]["server_cpu_us_per_token"], r["variant"]["server_cpu_us_per_token"]
        others = max(pct(r[s].get("others_core_share")) or 0 for s in ("relay", "variant"))
        rows.append([str(r["streams"]), str(r["round"]), r["order"], fmt(a, 1, 1),
                     fmt(b, 1, 1), f"{a / b:.3f}" if a and b else "-", fmt(others, 1, 0)])
    lines += table(["N", "round", "first", "Relay", "variant", "ratio", "others %"], rows,
                   min_width=8)
    for n in sorted({r["streams"] for r in rounds}):
        at = [r for r in rounds if r["streams"] == n]
        ratios = sorted(r["relay"]["server_cpu_us_per_token"] /
                        r["variant"]["server_cpu_us_per_token"] for r in at
                        if r["relay"]["server_cpu_us_per_token"]
                        and r["variant"]["server_cpu_us_per_token"])
        pooled = [sum(r[s]["server_cpu_s"] or 0 for r in at) /
                  max(1, sum(r[s]["tokens_relayed"] for r in at)) * 1e6
                  for s in ("relay", "variant")]
        if ratios:
            lines.append(f"  N={n}: median ratio {ratios[len(ratios) // 2]:.3f} (min "
                         f"{ratios[0]:.3f}, max {ratios[-1]:.3f}, {len(ratios)} rounds); "
                         f"pooled {pooled[0]:.1f} / {pooled[1]:.1f} us = "
                         f"{pooled[0] / pooled[1]:.3f}" if pooled[1] else "")
    return "\n".join(lines)


def render(settings: dict[str, Any], results: list[dict[str, Any]]) -> str:
    s = settings
    lines = [
        "Relay streaming benchmark",
        f"  reply: {s['tokens']} tokens ({s['reply_chars']} chars) every "
        f"{s['token_delay_ms']:g} ms, first token after {s['first_token_delay_ms']:g} ms",
        writer_line(s),
        server_line(s),
        "  floor: " + ("bench.floor_relay (gevent StreamServer, raw upstream socket)"
                       if s["floor"] else "not run (--no-floor)"),
        f"  CPUs: {s['pinning']}",
        host_line(s),
        "",
        *render_side_by_side(s, results),
        "",
        "Relay in detail",
    ]
    relay = [r["relay"] for r in results]
    ms = 1000.0
    rows: list[tuple[str, Any]] = [
        ("streams ended `done`, text exact", lambda r: f"{r['done']}/{r['streams']}"),
        ("batch wall time, first POST to last end (s)", lambda r: fmt(r["wall_s"], 1, 2)),
        ("ADDED TTFT median (ms)", lambda r: fmt(r["added_ttft_s"]["median"], ms)),
        ("ADDED TTFT p99 (ms)", lambda r: fmt(r["added_ttft_s"]["p99"], ms)),
        ("ADDED TTFT max (ms)", lambda r: fmt(r["added_ttft_s"]["max"], ms)),
        ("  total TTFT seen by the tab, median (ms)",
         lambda r: fmt(r["total_ttft_s"]["median"], ms)),
        ("  upstream's own TTFT, median (ms)",
         lambda r: fmt(r["upstream_ttft_s"]["median"], ms, 2)),
        ("  t0 -> upstream request arrived, median (ms)",
         lambda r: fmt(r["to_upstream_s"]["median"], ms)),
        ("  first token: upstream -> tab, median (ms)",
         lambda r: fmt(r["first_token_back_s"]["median"], ms)),
        ("  POST answered, median (ms)", lambda r: fmt(r["post_s"]["median"], ms)),
        ("  SSE headers after POST, median (ms)",
         lambda r: fmt(r["sse_open_s"]["median"], ms)),
        ("last token: upstream -> tab, median (ms)",
         lambda r: fmt(r["last_token_back_s"]["median"], ms)),
        ("last token: upstream -> tab, p99 (ms)",
         lambda r: fmt(r["last_token_back_s"]["p99"], ms)),
        ("`done` after upstream finished, median (ms)",
         lambda r: fmt(r["done_after_upstream_s"]["median"], ms)),
        ("`done` after upstream finished, p99 (ms)",
         lambda r: fmt(r["done_after_upstream_s"]["p99"], ms)),
        ("delta events per stream, median", lambda r: fmt(r["delta_events"]["median"], 1, 0)),
        ("characters per stream, median", lambda r: fmt(r["chars"]["median"], 1, 0)),
        ("tokens relayed (upstream tokens_sent)", lambda r: f"{r['tokens_relayed']:,}"),
        ("WORKER CPU per relayed token (us)",
         lambda r: fmt(r["worker_cpu_us_per_token"], 1, 1)),
        ("  worker CPU, utime+stime (s)", lambda r: fmt(r["worker_cpu_s"], 1, 2)),
        ("  master CPU, for information (s)", lambda r: fmt(r["master_cpu_s"], 1, 2)),
        ("DB COMMITS per second", lambda r: fmt(r["commits_per_s"], 1, 1)),
        ("  delta rows per second", lambda r: fmt(r["deltas_per_s"], 1, 1)),
        ("  commits per stream-second", lambda r: fmt(r["commits_per_stream_s"], 1, 3)),
        ("  delta rows per stream-second", lambda r: fmt(r["deltas_per_stream_s"], 1, 2)),
        ("  commits / delta rows / writer ticks",
         lambda r: f"{r['writer']['commits']}/{r['writer']['deltas']}/{r['writer']['ticks']}"),
    ]
    lines += table(["", *[f"N={r['streams']}" for r in relay]], by_column(rows, relay),
                   indent="", min_width=12)
    for r in results:
        for side in ("relay", "floor"):
            for kind in ("problems", "warnings"):
                if r.get(side):
                    lines += listing(f"{kind} at N={r['streams']} ({side})", r[side][kind])
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay_bench",
        description="Relay's streaming path next to the floor, against a fake model "
                    "(see bench/README.md).")
    parser.add_argument("--streams", type=levels(2000, "concurrency level"),
                        default=[10, 25, 50, 100, 150, 200],
                        help="concurrency levels, comma-separated (default 10,25,50,100,150,200)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply (200)")
    parser.add_argument("--token-delay-ms", type=float, default=25.0,
                        help="the model's pace between tokens (25: 40 tokens/s)")
    parser.add_argument("--first-token-delay-ms", type=float, default=500.0,
                        help="the model's own time to first token (500)")
    parser.add_argument("--no-floor", dest="floor", action="store_false",
                        help="measure Relay only, not the floor (bench/floor_relay.py)")
    parser.add_argument("--no-pin", action="store_true",
                        help=f"do not pin the servers to CPU {SERVER_CPU} and the fake and "
                             f"clients to CPU {CLIENT_CPU}")
    relay_setting(parser, "--throttle-ms", "STREAM_THROTTLE_MS", int)
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=VALUE",
                        help="measure a second Relay with this setting (repeatable) instead "
                             "of the floor, e.g. METRICS=off")
    parser.add_argument("--rounds", type=int, default=1,
                        help="with --variant: measurements of each level, alternating "
                             "which side goes first (1)")
    run_args(parser)
    args = parser.parse_args(argv)
    if any("=" not in v for v in args.variant):
        parser.error("--variant takes NAME=VALUE")
    args.variant = dict(v.split("=", 1) for v in args.variant)
    if args.variant:
        args.floor = False
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    if args.tokens < 1 or args.tokens > 100_000:
        parser.error("--tokens must be within 1..100000")
    if args.token_delay_ms < 0 or args.first_token_delay_ms < 0:
        parser.error("delays cannot be negative")
    if args.worker_connections < max(args.streams) + 10:
        parser.error("--worker-connections is too small for the largest level "
                     "(each tab holds one connection to the worker while it streams)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Each tab holds ~2 sockets here and ~3 in the worker (tab in, upstream out, database).
    raise_fd_limit(max(4096, max(args.streams) * 8 + 256))
    sys.setswitchinterval(0.0005)  # hundreds of tab threads share one GIL: stamp reads promptly
    bench = Bench(args)
    settings = bench.settings()
    results: list[dict[str, Any]] = []

    variant_rounds: list[dict[str, Any]] = []

    def measure_variant() -> None:
        print("warm-up: 1 stream each (not measured) ...", flush=True)
        bench.run_batch(1, "warmup")
        bench.run_variant_batch(1, "warmup")
        for n in args.streams:
            for i in range(args.rounds):
                order = ["relay", "variant"] if i % 2 == 0 else ["variant", "relay"]
                row: dict[str, Any] = {"streams": n, "round": i + 1, "order": order[0]}
                for side in order:
                    print(f"measuring N={n} round {i + 1} ({side}) ...", flush=True)
                    row[side] = (bench.run_batch(n, f"n{n} r{i}") if side == "relay"
                                 else bench.run_variant_batch(n, f"n{n} r{i}"))
                variant_rounds.append(row)
                results.append({"streams": n, "relay": row["relay"]})

    def measure() -> None:
        if args.variant:
            measure_variant()
            return
        sides = ["relay", "floor"] if args.floor else ["relay"]
        print("warm-up: 1 stream each (not measured) ...", flush=True)
        for side in sides:
            warm = bench.run_batch(1, f"warmup {side}", side)
            if warm["problems"] or warm["warnings"]:
                notes = warm["problems"] + warm["warnings"]
                print(f"warm-up problems ({side}):\n  " + "\n  ".join(notes), flush=True)
        for n in args.streams:
            result: dict[str, Any] = {"streams": n}
            for side in sides:
                print(f"measuring N={n} ({side}) ...", flush=True)
                result[side] = bench.run_batch(n, f"n{n}", side)
            results.append(result)

    status = run(bench, measure)
    settings["pinning"] = (f"servers on CPU {SERVER_CPU}, the fake and the tabs on CPU "
                           f"{CLIENT_CPU}" if bench.pinned else "not pinned")
    if variant_rounds:
        print()
        print(render_variant(" ".join(f"{k}={v}" for k, v in args.variant.items()),
                             variant_rounds))
        for r in variant_rounds:
            for side in ("relay", "variant"):
                for kind in ("problems", "warnings"):
                    if found := listing(f"{kind} at N={r['streams']} round {r['round']} "
                                        f"({side})", r[side][kind]):
                        print("\n".join(found))
    elif results:
        print()
        print(render(settings, results))
    findings, counts, noteworthy = scan_log(bench.server_log, ("Booting worker", "Worker exiting"))
    print_log(f"{counts['Booting worker']} worker boot(s), {len(noteworthy)} noteworthy line(s)",
              noteworthy)
    if args.json and results:
        write_json(args.json, {"settings": settings, "results": results,
                               "variant": args.variant, "variant_rounds": variant_rounds,
                               "gunicorn_log_findings": findings})
    if status == 0 and any(r[side]["problems"] for r in results + variant_rounds
                           for side in ("relay", "floor", "variant") if side in r):
        status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
