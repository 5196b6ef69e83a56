"""Relay's streaming baseline: added time to first token, CPU per token, commits per second.

Starts the fake model (`bench.fake_upstream`) as its own process and Relay under gunicorn with
one gevent worker, then runs batches of N concurrent "tabs" (threads in this process, one
browser identity each) that post a prompt and read the reply's SSE stream to its end:

    python -m bench.relay_bench [--streams 1,100] [--tokens 200] [--token-delay-ms 20]
                                [--throttle-ms MS] [--json out.json]

bench/README.md explains every figure and how it is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

from bench.relay_client import RelayClient
from bench.relay_server import ROOT, RelayServer, free_port
from bench.sse_client import SSEConnection
from streaming.sse import decode_delta

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Every request a tab makes (POST, each SSE read) gives up after this long.
REQUEST_TIMEOUT_S = 30.0
# A batch ends at the latest this long after the reply should have been fully streamed.
BATCH_SLACK_S = 60.0
# Log lines worth reporting, and how many of them to print.
LOG_MARKERS = ("Traceback", "ERROR", "CRITICAL", "WARNING", "headless", "Worker exiting",
               "WORKER TIMEOUT", "Booting worker")
LOG_LINES_SHOWN = 25


class BenchError(RuntimeError):
    """Something stopped the benchmark before it could measure."""


# -- small helpers ----------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile (q in 0..100): an observed value, never interpolated."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"n": 0, "median": None, "p99": None, "max": None, "min": None}
    return {"n": len(values), "median": statistics.median(values),
            "p99": percentile(values, 99), "max": max(values), "min": min(values)}


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process from /proc/<pid>/stat, in seconds; None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return None
    # The command name (field 2) may contain spaces; the fields after it are fixed.
    fields = stat[stat.rindex(")") + 2:].split()
    utime, stime = int(fields[11]), int(fields[12])  # fields 14 and 15 of stat(5)
    return (utime + stime) / CLK_TCK


def difference(before: float | None, after: float | None) -> float | None:
    return None if before is None or after is None else after - before


def raise_fd_limit(wanted: int) -> tuple[int, int]:
    """Raise the soft open-files limit (inherited by the servers we start) towards `wanted`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


def version_of(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def last_user_prompt(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else None
    return None


# -- the fake model in its own process ---------------------------------------------------------
class FakeUpstreamProcess:
    """`python -m bench.fake_upstream` on a free port, stopped by stop() (also on errors)."""

    def __init__(self, workdir: Path, *, tokens: int, token_delay_ms: float,
                 first_token_delay_ms: float) -> None:
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.url = self.root_url + "/v1"
        self.log_path = workdir / f"fake-upstream-{self.port}.log"
        self.args = ["--host", "127.0.0.1", "--port", str(self.port), "--tokens", str(tokens),
                     "--token-delay-ms", str(token_delay_ms),
                     "--first-token-delay-ms", str(first_token_delay_ms)]
        self.process: subprocess.Popen | None = None
        self._log: Any = None

    def start(self, timeout: float = 15.0) -> FakeUpstreamProcess:
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.fake_upstream", *self.args], cwd=ROOT,
            stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"the fake upstream exited early:\n{self.log()}")
            try:
                get_json(self.root_url + "/_fake/stats", timeout=2)
                return self
            except OSError:
                time.sleep(0.1)
        raise BenchError(f"the fake upstream did not answer within {timeout} s:\n{self.log()}")

    def stats(self) -> dict[str, Any]:
        return get_json(self.root_url + "/_fake/stats?full=1", timeout=30)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)  # the CLI exits cleanly on SIGTERM
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout)
        if self._log is not None:
            self._log.close()
            self._log = None


# -- one tab -----------------------------------------------------------------------------------
@dataclass
class Tab:
    """One browser tab: its client and thread are set up before timing starts."""

    index: int
    client: RelayClient
    thread_id: int
    prompt: str
    t0: float | None = None  # right before the POST
    t_posted: float | None = None  # the POST answered
    t_open: float | None = None  # the SSE response's headers arrived
    t_first: float | None = None  # the first delta event arrived
    t_end: float | None = None  # the terminal event arrived
    message_id: int | None = None
    terminal: str | None = None
    delta_events: int = 0
    chars: int = 0
    text_ok: bool | None = None
    t_last: float | None = None  # the last delta event arrived
    error: str | None = None
    conn: SSEConnection | None = None

    def run(self, barrier: threading.Barrier, deadline: float, expected_text: str) -> None:
        try:
            barrier.wait()
            self.t0 = time.monotonic()
            sent = self.client.send(self.thread_id, self.prompt)
            self.t_posted = time.monotonic()
            self.message_id = sent["assistant_message"]["id"]
            self.conn = self.client.stream(sent["stream_url"], timeout=REQUEST_TIMEOUT_S)
            self.t_open = time.monotonic()
            if self.conn.status != 200:
                raise BenchError(f"stream answered {self.conn.status}: {self.conn.body[:200]!r}")
            pieces: list[str] = []
            with self.conn:
                for event in self.conn:
                    now = time.monotonic()
                    if event.event == "delta":
                        if self.t_first is None:
                            self.t_first = now
                        text = decode_delta(event.data)
                        pieces.append(text)
                        self.delta_events += 1
                        self.chars += len(text)
                        self.t_last = now
                    else:
                        self.terminal, self.t_end = event.event, now
                        break
                    if now > deadline:
                        raise BenchError("the batch deadline passed mid-stream")
            if self.terminal is None:
                raise BenchError("the stream ended without a terminal event"
                                 + (" (truncated)" if self.conn.truncated else ""))
            self.text_ok = "".join(pieces) == expected_text
        except threading.BrokenBarrierError:
            self.error = "the start barrier broke"
        except Exception as err:  # reported per tab; one failure must not hide the others
            self.error = f"{type(err).__name__}: {err}"


# -- the benchmark -----------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.run_id = uuid.uuid4().hex[:8]
        self.tokens = [f"w{i} " for i in range(1, args.tokens + 1)]  # what the fake CLI sends
        self.expected_text = "".join(self.tokens)
        self.fake: FakeUpstreamProcess | None = None
        self.server: RelayServer | None = None
        self.worker_pid: int | None = None
        self.live_tabs: list[Tab] = []

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> None:
        args = self.args
        self.fake = FakeUpstreamProcess(self.workdir, tokens=args.tokens,
                                        token_delay_ms=args.token_delay_ms,
                                        first_token_delay_ms=args.first_token_delay_ms)
        self.fake.start()
        env = {"CHAT_PROVIDER": "openai", "OPENAI_BASE_URL": self.fake.url,
               "OPENAI_API_KEY": "bench", "SECRET_KEY": "bench",
               "DATABASE_URL": f"sqlite:///{self.workdir / 'relay.sqlite3'}",
               "WEB_CONCURRENCY": "1", "ACCESS_LOG": "",
               "WORKER_CONNECTIONS": str(args.worker_connections)}
        if args.throttle_ms is not None:
            env["STREAM_THROTTLE_MS"] = str(args.throttle_ms)
        self.server = RelayServer(env, self.workdir, workers=1)
        self.server.start()
        pids = self.server.worker_pids()
        if len(pids) != 1:
            raise BenchError(f"expected one gunicorn worker, found {pids}")
        self.worker_pid = pids[0]

    def stop(self) -> None:
        for tab in self.live_tabs:  # unblock any tab still reading, so the server can stop
            if tab.conn is not None:
                tab.conn.close()
        if self.server is not None:
            self.server.stop()
        if self.fake is not None:
            self.fake.stop()

    def settings(self) -> dict[str, Any]:
        # The server inherits this process's environment, so its defaults are ours.
        from config import Config

        args = self.args
        throttle = Config.STREAM_THROTTLE_MS if args.throttle_ms is None else args.throttle_ms
        return {
            "streams": args.streams, "tokens": args.tokens,
            "token_delay_ms": args.token_delay_ms,
            "first_token_delay_ms": args.first_token_delay_ms,
            "throttle_ms": throttle,
            "throttle_source": "--throttle-ms" if args.throttle_ms is not None else "default",
            "max_lag_ms": Config.STREAM_MAX_LAG_MS, "chunking": Config.STREAM_CHUNKING,
            "reply_chars": len(self.expected_text), "workers": 1,
            "worker_connections": args.worker_connections, "database": "sqlite (temp dir)",
            "python": platform.python_version(), "gevent": version_of("gevent"),
            "gunicorn": version_of("gunicorn"), "flask": version_of("flask"),
            "sqlalchemy": version_of("sqlalchemy"), "openai": version_of("openai"),
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0],
        }

    # -- one batch ---------------------------------------------------------------------
    def make_tabs(self, n: int, label: str) -> list[Tab]:
        assert self.server is not None
        tabs = []
        for i in range(n):
            client = RelayClient(self.server.base_url, timeout=REQUEST_TIMEOUT_S).open()
            prompt = f"relay-bench {self.run_id} {label} tab {i}: tell me something"
            tabs.append(Tab(i, client, client.new_thread(), prompt))
        return tabs

    def health(self) -> dict[str, Any]:
        assert self.server is not None
        return get_json(self.server.base_url + "/healthz")

    def run_batch(self, n: int, label: str) -> dict[str, Any]:
        assert self.server is not None and self.server.process is not None
        assert self.fake is not None and self.worker_pid is not None
        args = self.args
        tabs = self.make_tabs(n, label)
        self.live_tabs = tabs
        stream_s = (args.first_token_delay_ms + args.tokens * args.token_delay_ms) / 1000
        barrier = threading.Barrier(n, timeout=REQUEST_TIMEOUT_S)
        health_before = self.health()
        cpu_worker_before = cpu_seconds(self.worker_pid)
        cpu_master_before = cpu_seconds(self.server.process.pid)
        started = time.monotonic()
        deadline = started + stream_s + BATCH_SLACK_S
        threads = [threading.Thread(target=tab.run, args=(barrier, deadline, self.expected_text),
                                    name=f"tab-{tab.index}", daemon=True) for tab in tabs]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        if any(t.is_alive() for t in threads):
            barrier.abort()
            for tab, thread in zip(tabs, threads, strict=True):
                if thread.is_alive():
                    tab.error = tab.error or "still running at the batch deadline"
                    if tab.conn is not None:
                        tab.conn.close()
            for thread in threads:
                thread.join(5.0)
        cpu_worker_after = cpu_seconds(self.worker_pid)
        cpu_master_after = cpu_seconds(self.server.process.pid)
        health_after = self.health()
        records = self.upstream_records(tabs)
        result = self.summarise(n, tabs, records, health_before, health_after,
                                difference(cpu_worker_before, cpu_worker_after),
                                difference(cpu_master_before, cpu_master_after))
        pids = self.server.worker_pids()
        if pids != [self.worker_pid]:
            result["warnings"].append(f"worker changed from {self.worker_pid} to {pids}: "
                                      "the CPU figures of this batch are incomplete")
            if len(pids) == 1:
                self.worker_pid = pids[0]
        self.live_tabs = []
        return result

    def upstream_records(self, tabs: list[Tab]) -> dict[str, list[dict[str, Any]]]:
        """The fake's records of this batch by prompt, once each of them has an outcome."""
        assert self.fake is not None
        prompts = {tab.prompt for tab in tabs}
        deadline = time.monotonic() + 10.0
        while True:
            by_prompt: dict[str, list[dict[str, Any]]] = {}
            for record in self.fake.stats()["requests"]:
                prompt = last_user_prompt(record.get("body"))
                if prompt in prompts:
                    by_prompt.setdefault(prompt, []).append(record)
            # A client can see `done` a moment before the fake's thread records `finished`.
            settled = all(r.get("outcome") for rs in by_prompt.values() for r in rs)
            if settled or time.monotonic() > deadline:
                return by_prompt
            time.sleep(0.05)

    def summarise(self, n: int, tabs: list[Tab], records: dict[str, list[dict[str, Any]]],
                  health_before: dict[str, Any], health_after: dict[str, Any],
                  cpu_worker: float | None, cpu_master: float | None) -> dict[str, Any]:
        problems: list[str] = []  # a stream did not work: the exit status says so
        warnings: list[str] = []  # the figures need a second look
        added, total, upstream, to_upstream, back, post, sse_open = [], [], [], [], [], [], []
        last_back, done_lag = [], []
        tokens_relayed = 0
        per_tab = []
        for tab in tabs:
            recs = records.get(tab.prompt, [])
            rec = recs[0] if len(recs) == 1 else None
            if len(recs) != 1:
                problems.append(f"tab {tab.index}: {len(recs)} upstream requests for its prompt")
            tokens_relayed += sum(r.get("tokens_sent") or 0 for r in recs)
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
        wb, wa = health_before["writer"], health_after["writer"]
        writer = {k: wa[k] - wb[k] for k in ("commits", "deltas", "ticks", "finalized",
                                              "failures")}
        if writer["failures"]:
            problems.append(f"the delta writer reported {writer['failures']} failed commits")
        if health_after.get("active_generations"):
            problems.append(f"{health_after['active_generations']} generations still active "
                            "after the batch")
        throttle_s = self.settings()["throttle_ms"] / 1000
        if wall and throttle_s > 0 and wall > 5 * throttle_s \
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
            "delta_events": summary([t.delta_events for t in tabs]),
            "chars": summary([t.chars for t in tabs]),
            "tokens_relayed": tokens_relayed,
            "worker_cpu_s": cpu_worker, "master_cpu_s": cpu_master,
            "worker_cpu_us_per_token": (cpu_worker * 1e6 / tokens_relayed
                                        if tokens_relayed and cpu_worker is not None
                                        else None),
            "writer": writer,
            "commits_per_s": writer["commits"] / wall if wall else None,
            "deltas_per_s": writer["deltas"] / wall if wall else None,
            "commits_per_stream_s": (writer["commits"] / stream_seconds
                                     if stream_seconds else None),
            "deltas_per_stream_s": (writer["deltas"] / stream_seconds
                                    if stream_seconds else None),
            "problems": problems, "warnings": warnings, "tabs": per_tab,
        }


# -- output ------------------------------------------------------------------------------------
def _fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def render(settings: dict[str, Any], results: list[dict[str, Any]]) -> str:
    s = settings
    lines = [
        "Relay streaming benchmark",
        f"  reply: {s['tokens']} tokens ({s['reply_chars']} chars) every "
        f"{s['token_delay_ms']:g} ms, first token after {s['first_token_delay_ms']:g} ms",
        f"  writer: throttle {s['throttle_ms']} ms ({s['throttle_source']}), max lag "
        f"{s['max_lag_ms']} ms, chunking {s['chunking']}; database {s['database']}",
        f"  server: gunicorn {s['gunicorn']} -k gevent, {s['workers']} worker, "
        f"{s['worker_connections']} worker connections",
        f"  Python {s['python']}, gevent {s['gevent']}, {s['cpus_usable']} usable CPUs "
        f"(of {s['cpu_count']}), {s['platform']}",
        "",
    ]
    ms = 1000.0
    rows: list[tuple[str, Any]] = [
        ("streams ended `done`, text exact", lambda r: f"{r['done']}/{r['streams']}"),
        ("batch wall time, first POST to last end (s)", lambda r: _fmt(r["wall_s"], 1, 2)),
        ("ADDED TTFT median (ms)", lambda r: _fmt(r["added_ttft_s"]["median"], ms)),
        ("ADDED TTFT p99 (ms)", lambda r: _fmt(r["added_ttft_s"]["p99"], ms)),
        ("ADDED TTFT max (ms)", lambda r: _fmt(r["added_ttft_s"]["max"], ms)),
        ("  total TTFT seen by the tab, median (ms)",
         lambda r: _fmt(r["total_ttft_s"]["median"], ms)),
        ("  upstream's own TTFT, median (ms)",
         lambda r: _fmt(r["upstream_ttft_s"]["median"], ms, 2)),
        ("  t0 -> upstream request arrived, median (ms)",
         lambda r: _fmt(r["to_upstream_s"]["median"], ms)),
        ("  first token: upstream -> tab, median (ms)",
         lambda r: _fmt(r["first_token_back_s"]["median"], ms)),
        ("  POST answered, median (ms)", lambda r: _fmt(r["post_s"]["median"], ms)),
        ("  SSE headers after POST, median (ms)",
         lambda r: _fmt(r["sse_open_s"]["median"], ms)),
        ("last token: upstream -> tab, median (ms)",
         lambda r: _fmt(r["last_token_back_s"]["median"], ms)),
        ("last token: upstream -> tab, p99 (ms)",
         lambda r: _fmt(r["last_token_back_s"]["p99"], ms)),
        ("`done` after upstream finished, median (ms)",
         lambda r: _fmt(r["done_after_upstream_s"]["median"], ms)),
        ("`done` after upstream finished, p99 (ms)",
         lambda r: _fmt(r["done_after_upstream_s"]["p99"], ms)),
        ("delta events per stream, median", lambda r: _fmt(r["delta_events"]["median"], 1, 0)),
        ("characters per stream, median", lambda r: _fmt(r["chars"]["median"], 1, 0)),
        ("tokens relayed (upstream tokens_sent)", lambda r: f"{r['tokens_relayed']:,}"),
        ("WORKER CPU per relayed token (us)",
         lambda r: _fmt(r["worker_cpu_us_per_token"], 1, 1)),
        ("  worker CPU, utime+stime (s)", lambda r: _fmt(r["worker_cpu_s"], 1, 2)),
        ("  master CPU, for information (s)", lambda r: _fmt(r["master_cpu_s"], 1, 2)),
        ("DB COMMITS per second", lambda r: _fmt(r["commits_per_s"], 1, 1)),
        ("  delta rows per second", lambda r: _fmt(r["deltas_per_s"], 1, 1)),
        ("  commits per stream-second", lambda r: _fmt(r["commits_per_stream_s"], 1, 3)),
        ("  delta rows per stream-second", lambda r: _fmt(r["deltas_per_stream_s"], 1, 2)),
        ("  commits / delta rows / writer ticks",
         lambda r: f"{r['writer']['commits']}/{r['writer']['deltas']}/{r['writer']['ticks']}"),
    ]
    label_width = max(len(label) for label, _ in rows)
    cols = [f"N={r['streams']}" for r in results]
    widths = [max(12, len(c)) for c in cols]
    lines.append(" " * label_width + "".join(f"  {c:>{w}}" for c, w in zip(cols, widths,
                                                                              strict=True)))
    for label, cell in rows:
        cells = "".join(f"  {cell(r):>{w}}" for r, w in zip(results, widths, strict=True))
        lines.append(f"{label:<{label_width}}{cells}")
    for r in results:
        for kind in ("problems", "warnings"):
            if r[kind]:
                lines.append(f"\n{kind} at N={r['streams']} ({len(r[kind])}):")
                lines.extend(f"  {p}" for p in r[kind][:20])
                if len(r[kind]) > 20:
                    lines.append(f"  ... and {len(r[kind]) - 20} more (see --json)")
    return "\n".join(lines)


def log_findings(text: str) -> list[str]:
    """Lines of the gunicorn log that deserve a look (errors, warnings, restarts)."""
    return [line for line in text.splitlines() if any(m in line for m in LOG_MARKERS)]


# -- command line ------------------------------------------------------------------------------
def parse_streams(value: str) -> list[int]:
    try:
        levels = [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,100, got {value!r}") from None
    if not levels or any(n < 1 or n > 2000 for n in levels):
        raise argparse.ArgumentTypeError("each concurrency level must be within 1..2000")
    return levels


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.relay_bench",
        description="Relay's streaming baseline against a fake model (see bench/README.md).")
    parser.add_argument("--streams", type=parse_streams, default=[1, 100],
                        help="concurrency levels, comma-separated (default 1,100)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply (200)")
    parser.add_argument("--token-delay-ms", type=float, default=20.0,
                        help="the model's pace between tokens (20)")
    parser.add_argument("--first-token-delay-ms", type=float, default=0.0,
                        help="the model's own time to first token (0)")
    parser.add_argument("--throttle-ms", type=int, default=None,
                        help="STREAM_THROTTLE_MS for Relay (default: Relay's default)")
    parser.add_argument("--worker-connections", type=int, default=1000,
                        help="gunicorn WORKER_CONNECTIONS (1000)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--keep-workdir", action="store_true",
                        help="keep the temp dir (database, server logs) and print its path")
    args = parser.parse_args(argv)
    if args.tokens < 1 or args.tokens > 100_000:
        parser.error("--tokens must be within 1..100000")
    if args.token_delay_ms < 0 or args.first_token_delay_ms < 0:
        parser.error("delays cannot be negative")
    if args.worker_connections < max(args.streams) + 10:
        parser.error("--worker-connections is too small for the largest level "
                     "(each tab holds one connection to the worker while it streams)")
    return args


def _on_sigterm(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, _on_sigterm)  # stop the servers as on Ctrl-C
    # Each tab holds ~2 sockets here and ~3 in the worker (tab in, upstream out, database).
    raise_fd_limit(max(4096, max(args.streams) * 8 + 256))
    workdir = Path(tempfile.mkdtemp(prefix="relay-bench-"))
    bench = Bench(args, workdir)
    results: list[dict[str, Any]] = []
    settings = bench.settings()
    status = 0
    try:
        print(f"starting the fake upstream and Relay (work dir {workdir}) ...", flush=True)
        bench.start()
        print("warm-up: 1 stream (not measured) ...", flush=True)
        warm = bench.run_batch(1, "warmup")
        if warm["problems"] or warm["warnings"]:
            notes = warm["problems"] + warm["warnings"]
            print("warm-up problems:\n  " + "\n  ".join(notes), flush=True)
        for n in args.streams:
            print(f"measuring N={n} ...", flush=True)
            results.append(bench.run_batch(n, f"n{n}"))
    except KeyboardInterrupt:
        print("interrupted; stopping the servers ...", file=sys.stderr, flush=True)
        status = 130
    except (BenchError, RuntimeError, OSError) as err:  # servers failed to start or answer
        print(f"benchmark failed: {err}", file=sys.stderr, flush=True)
        status = 1
    finally:
        bench.stop()
        server_log = bench.server.log() if bench.server is not None else ""
        if args.keep_workdir:
            print(f"work dir kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)

    if results:
        print()
        print(render(settings, results))
    findings = log_findings(server_log)
    boots = sum("Booting worker" in line for line in findings)
    noteworthy = [line for line in findings if "Booting worker" not in line
                  and "Worker exiting" not in line]
    print(f"\ngunicorn log: {boots} worker boot(s), {len(noteworthy)} noteworthy line(s)")
    for line in noteworthy[:LOG_LINES_SHOWN]:
        print(f"  {line}")
    if len(noteworthy) > LOG_LINES_SHOWN:
        print(f"  ... and {len(noteworthy) - LOG_LINES_SHOWN} more")
    if args.json and results:
        out = {"settings": settings, "results": results, "gunicorn_log_findings": findings}
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")
        print(f"results written to {args.json}")
    if status == 0 and any(r["problems"] for r in results):
        status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
