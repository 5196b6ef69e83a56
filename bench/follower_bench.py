"""Relay's followers: how late each token reaches them, and what an idle websocket costs.

Starts the fake model (`bench.fake_upstream`) as its own process and Relay under gunicorn with
one gevent worker, then

1. lets F websocket followers, and in a separate batch F polling followers, follow ONE reply
   that runs headless (nobody opens its SSE stream) and measures, for every token, the time
   from the model sending it to each follower first seeing it;
2. opens idle websocket followers on one thread, K at a time, and reads the worker's memory
   and open file descriptors after each step.

    python -m bench.follower_bench [--followers 1,50] [--idle 100] [--tokens 200]
                                   [--token-delay-ms 20] [--poll-interval-ms 250]
                                   [--throttle-ms MS] [--json out.json]

bench/README.md explains every figure and how it is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import html
import http.client
import json
import os
import random
import re
import socket
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import websocket

from bench.fake_upstream import numbered_tokens
from bench.harness import (
    BATCH_SLACK_S,
    REQUEST_TIMEOUT_S,
    BenchError,
    FakeUpstreamProcess,
    Rig,
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
    memory_of,
    own_cpu_seconds,
    percentile,
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
from bench.relay_client import RelayClient
from models import TERMINAL_STATUSES

# How long the followers of a batch may take to connect before the prompt is sent.
SETUP_TIMEOUT_S = 60.0
# Polling followers start at a random phase within one interval; the seed keeps runs alike.
PHASE_SEED = 20240601

# The reply's <article> in a websocket fragment: its opening tag, then its body.
_ARTICLE = re.compile(r'<article\b[^>]*\bid="message-(\d+)"[^>]*\bdata-status="([a-z]+)"[^>]*>'
                      r'(.*?)</article>', re.S)
_BODY = re.compile(r'<div class="message-body[^"]*"[^>]*>(.*?)</div>', re.S)
_TAG = re.compile(r"<[^>]+>")
_TERMINAL_REPLY = re.compile(
    r'<article\b[^>]*\bdata-role="assistant"[^>]*\bdata-status="(?:'
    + "|".join(TERMINAL_STATUSES) + ')"')
# The fake's tokens (`numbered_tokens`): token i, from 1, is "w<i> ".
_TOKEN = re.compile(r"(?<![\w-])w(\d+)(?![\w-])")


# -- reading what a follower saw ---------------------------------------------------------------
def token_indices(text: str) -> list[int]:
    """The indices of the fake's tokens in `text`, in order."""
    return [int(i) for i in _TOKEN.findall(text)]


def reply_in_frame(frame: str, message_id: int) -> tuple[str, str] | None:
    """(status, plain text) of the last fragment of `message_id` in a websocket frame."""
    found = None
    for match in _ARTICLE.finditer(frame):
        if int(match.group(1)) != message_id:
            continue
        body = _BODY.search(match.group(3))
        text = html.unescape(_TAG.sub(" ", body.group(1))) if body else ""
        found = (match.group(2), text)
    return found


@dataclass
class Observation:
    """One state of the reply as a follower received it."""

    t: float  # time.monotonic() right after it arrived
    status: str
    text: str


@dataclass
class Seen:
    """When one follower first saw each token, and anything odd about what it saw."""

    first: dict[int, float] = field(default_factory=dict)  # token index -> first seen
    not_prefix: int = 0  # observations whose text was not tokens 1..k in order
    went_back: int = 0  # observations with fewer tokens than one seen before
    final_status: str | None = None
    final_tokens: int = 0


def first_seen(observations: list[Observation]) -> Seen:
    seen = Seen()
    most = 0
    for obs in observations:
        indices = token_indices(obs.text)
        k = len(indices)
        if indices != list(range(1, k + 1)):
            seen.not_prefix += 1
            k = 0
            while k < len(indices) and indices[k] == k + 1:
                k += 1
        if k < most:
            seen.went_back += 1
        for i in range(most + 1, k + 1):
            seen.first[i] = obs.t
        most = max(most, k)
        seen.final_status, seen.final_tokens = obs.status, k
    return seen


# -- followers ---------------------------------------------------------------------------------
class Ready:
    """Counts followers that are connected (or gave up), so the prompt waits for all of them."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.count = 0

    def arrive(self) -> None:
        with self._cond:
            self.count += 1
            self._cond.notify_all()

    def wait(self, n: int, timeout: float) -> bool:
        with self._cond:
            return self._cond.wait_for(lambda: self.count >= n, timeout)


class Start:
    """The reply id, handed to polling followers once the prompt was posted."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.message_id: int | None = None

    def go(self, message_id: int | None) -> None:
        self.message_id = message_id
        self.event.set()


class Follower:
    """A follower's thread: it counts as ready exactly once, and its error is its own."""

    kind = ""

    def __init__(self, index: int) -> None:
        self.index = index
        self.arrived = False
        self.ended = False
        self.error: str | None = None

    def run(self, ready: Ready, start: Start, deadline: float) -> None:
        try:
            self.follow(ready, start, deadline)
        except Exception as err:  # reported per follower; one failure must not hide the others
            self.error = f"{type(err).__name__}: {err}"
        finally:
            if not self.arrived:  # one that gave up must not keep the prompt waiting
                ready.arrive()
            self.close()

    def arrive(self, ready: Ready) -> None:
        """Connected: count as ready."""
        self.arrived = True
        ready.arrive()

    def follow(self, ready: Ready, start: Start, deadline: float) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        """Wake a follower blocked in a read (from another thread) at the batch deadline."""
        raise NotImplementedError


class WebsocketFollower(Follower):
    """A browser page following the thread over its websocket, with the owner's cookie."""

    kind = "ws"

    def __init__(self, index: int, url: str, cookie: str, max_frames: int) -> None:
        super().__init__(index)
        self.url = url
        self.cookie = cookie
        self.max_frames = max_frames
        self.ws: websocket.WebSocket | None = None
        self.frames: list[tuple[float, str]] = []
        self.connect_s: float | None = None

    def follow(self, ready: Ready, start: Start, deadline: float) -> None:
        t0 = time.monotonic()
        self.ws = websocket.create_connection(self.url, cookie=self.cookie,
                                              timeout=REQUEST_TIMEOUT_S)
        first = self.ws.recv()
        self.connect_s = time.monotonic() - t0
        if 'id="live-status"' not in first:
            raise BenchError(f"unexpected first frame: {first[:120]!r}")
        self.arrive(ready)
        for _ in range(self.max_frames):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BenchError("the batch deadline passed before the reply ended")
            self.ws.settimeout(min(remaining, REQUEST_TIMEOUT_S))
            frame = self.ws.recv()
            now = time.monotonic()
            if not frame:
                raise BenchError("the server closed the websocket")
            self.frames.append((now, frame))
            if _TERMINAL_REPLY.search(frame):
                self.ended = True
                return
        raise BenchError(f"no terminal fragment in {self.max_frames} frames")

    def close(self) -> None:
        if self.ws is not None:
            try:
                self.ws.close(timeout=1)
            except Exception:  # already gone: make sure the socket is released
                self.abort()

    def abort(self) -> None:
        if self.ws is not None:
            with contextlib.suppress(Exception):
                self.ws.abort()

    def observations(self, message_id: int) -> list[Observation]:
        out = []
        for t, frame in self.frames:
            state = reply_in_frame(frame, message_id)
            if state is not None:
                out.append(Observation(t, *state))
        return out


class PollingFollower(Follower):
    """A page that re-reads `GET /messages/<id>` (JSON) POLL_INTERVAL_MS after every answer."""

    kind = "poll"

    def __init__(self, index: int, port: int, cookie: str, interval_s: float, phase_s: float,
                 max_polls: int) -> None:
        super().__init__(index)
        self.port = port
        self.cookie = cookie
        self.interval_s = interval_s
        self.phase_s = phase_s
        self.max_polls = max_polls
        self.conn: http.client.HTTPConnection | None = None
        self.polls: list[Observation] = []
        self.round_trips: list[float] = []
        self.reconnects = 0
        self.final_content: str | None = None

    def _connect(self) -> http.client.HTTPConnection:
        if self.conn is not None:
            self.conn.close()
        self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        return self.conn

    def _get(self, path: str) -> tuple[int, bytes]:
        headers = {"Accept": "application/json", "Cookie": self.cookie}
        for attempt in range(2):  # a kept-alive connection the server closed: reconnect once
            conn = self.conn or self._connect()
            try:
                conn.request("GET", path, headers=headers)
                resp = conn.getresponse()
                return resp.status, resp.read()
            except (http.client.RemoteDisconnected, ConnectionError):
                if attempt:
                    raise
                self.reconnects += 1
                self._connect()
        raise AssertionError("unreachable")

    def follow(self, ready: Ready, start: Start, deadline: float) -> None:
        self._connect().connect()  # a page already open holds a connection
        self.arrive(ready)
        if not start.event.wait(max(0.0, deadline - time.monotonic())):
            raise BenchError("the prompt was never posted")
        if start.message_id is None:
            return  # the batch could not post its prompt
        path = f"/messages/{start.message_id}"
        time.sleep(self.phase_s)
        for _ in range(self.max_polls):
            if time.monotonic() > deadline:
                raise BenchError("the batch deadline passed before the reply ended")
            t0 = time.monotonic()
            status, body = self._get(path)
            now = time.monotonic()
            if status != 200:
                raise BenchError(f"GET {path} answered {status}: {body[:120]!r}")
            data = json.loads(body)
            self.round_trips.append(now - t0)
            self.polls.append(Observation(now, data["status"], data["content"]))
            if data["status"] in TERMINAL_STATUSES:
                self.final_content = data["content"]
                self.ended = True
                return
            time.sleep(self.interval_s)
        raise BenchError(f"the reply did not end within {self.max_polls} polls")

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()

    def abort(self) -> None:
        conn = self.conn
        if conn is not None and conn.sock is not None:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(socket.SHUT_RDWR)

    def observations(self, message_id: int) -> list[Observation]:
        return list(self.polls)


# -- garbage-collector pauses of the server (--gc-probe) -----------------------------------------
GC_PROBE_MARK = "follower-bench-gc"
# Put first on the server's PYTHONPATH as `sitecustomize`, it reports every full collection and
# any collection of at least 5 ms on stderr (the gunicorn log), with CLOCK_MONOTONIC stamps.
GC_PROBE_SOURCE = f'''"""follower_bench --gc-probe: report slow garbage collections on stderr."""
import gc
import os
import sys
import time

_started = [0.0]


def _follower_bench_gc(phase, info):
    if phase == "start":
        _started[0] = time.monotonic()
        return
    took = time.monotonic() - _started[0]
    if info["generation"] == 2 or took >= 0.005:
        sys.stderr.write("{GC_PROBE_MARK} pid=%d gen=%d start=%.6f ms=%.2f collected=%d\\n"
                         % (os.getpid(), info["generation"], _started[0], took * 1000,
                            info["collected"]))


gc.callbacks.append(_follower_bench_gc)
'''
_GC_LINE = re.compile(GC_PROBE_MARK + r" pid=(\d+) gen=(\d) start=([\d.]+) ms=([\d.]+) "
                      r"collected=(\d+)")


def gc_pauses(log: str, pid: int | None) -> list[dict[str, Any]]:
    """The probe's lines of one process in the gunicorn log."""
    out = []
    for m in _GC_LINE.finditer(log):
        if pid is None or int(m.group(1)) == pid:
            out.append({"generation": int(m.group(2)), "start": float(m.group(3)),
                        "ms": float(m.group(4)), "collected": int(m.group(5))})
    return out


def attach_gc(results: list[dict[str, Any]], pauses: list[dict[str, Any]]) -> None:
    """Per batch: the worker's slow or full collections between the POST and its end."""
    for r in results:
        lo, hi = r["t_post"], r["t_post"] + (r["wall_s"] or 0)
        inside = [p for p in pauses if lo <= p["start"] <= hi]
        r["gc"] = {"count": len(inside), "max_ms": max((p["ms"] for p in inside), default=None),
                   "total_ms": sum(p["ms"] for p in inside),
                   "full": sum(1 for p in inside if p["generation"] == 2),
                   "at_s": [round(p["start"] - lo, 3) for p in inside]}


# -- the benchmark -----------------------------------------------------------------------------
class Bench(Rig):
    """Followers of one headless reply per batch, then idle websockets on one thread."""

    name = "follower-bench"

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.tokens = numbered_tokens(args.tokens)  # what the fake sends
        self.expected_text = "".join(self.tokens)
        self.owner: RelayClient | None = None
        self.live: list[Follower] = []  # followers to wake on the way out
        self.idle_sockets: list[websocket.WebSocket] = []

    def start(self) -> None:
        args = self.args
        fake = FakeUpstreamProcess(self.workdir, tokens=args.tokens,
                                   token_delay_ms=args.token_delay_ms, first_token_delay_ms=0.0)
        python_path = None
        if args.gc_probe:
            probe_dir = self.workdir / "gc-probe"
            probe_dir.mkdir()
            (probe_dir / "sitecustomize.py").write_text(GC_PROBE_SOURCE)
            python_path = os.pathsep.join(
                p for p in (str(probe_dir), os.environ.get("PYTHONPATH", "")) if p)
        self.start_servers(
            fake, STREAM_THROTTLE_MS=args.throttle_ms,
            # Nobody opens the reply's SSE stream: start it headless at once.
            DRIVER_GRACE_MS=0, POLL_INTERVAL_MS=args.poll_interval_ms, PYTHONPATH=python_path)
        self.owner = self.new_client()

    def unblock(self) -> None:
        for follower in self.live:
            follower.abort()
        for ws in self.idle_sockets:
            with contextlib.suppress(Exception):
                ws.abort()

    def settings(self) -> dict[str, Any]:
        # The server inherits this process's environment, so its defaults are ours.
        from config import Config

        args = self.args
        return {
            "followers": args.followers, "idle": args.idle, "idle_rounds": args.idle_rounds,
            "settle_s": args.settle_s, "tokens": args.tokens,
            "token_delay_ms": args.token_delay_ms, "reply_chars": len(self.expected_text),
            **writer_settings(args.throttle_ms),
            "poll_interval_ms": args.poll_interval_ms, "driver_grace_ms": 0,
            "ws_receive_poll_s": _ws_receive_poll_s(),
            "ws_ping_interval_s": Config.WS_PING_INTERVAL_S,
            **environment(args.worker_connections, "gevent", "greenlet", "gunicorn", "flask",
                          "flask-sock", "simple-websocket", "websocket-client"),
        }

    def ws_url(self, thread_id: int) -> str:
        assert self.server is not None
        return self.server.base_url.replace("http://", "ws://") + f"/threads/{thread_id}/ws"

    def wait_quiet(self, timeout: float = 15.0) -> dict[str, Any]:
        """/healthz once no generation runs any more (the last batch's reply is finalized)."""
        deadline = time.monotonic() + timeout
        while True:
            health = self.health()
            if not health.get("active_generations") or time.monotonic() > deadline:
                return health
            time.sleep(0.05)

    def wait_subscribers(self, n: int, timeout: float = 10.0) -> int:
        """The hub's subscriber count once it equals `n` (or whatever it is at the timeout)."""
        deadline = time.monotonic() + timeout
        while True:
            count = self.health()["hub"].get("subscribers", -1)
            if count == n or time.monotonic() > deadline:
                return count
            time.sleep(0.05)

    def cpu_snapshot(self) -> dict[str, float | None]:
        assert self.server is not None and self.server.process is not None
        assert self.fake is not None and self.fake.process is not None
        return {"worker": cpu_seconds(self.worker_pid or 0),
                "master": cpu_seconds(self.server.process.pid),
                "fake": cpu_seconds(self.fake.process.pid), "bench": own_cpu_seconds(),
                "host": host_busy_seconds(), "t": time.monotonic()}

    @staticmethod
    def cpu_use(before: dict[str, float | None], after: dict[str, float | None],
                wall: float) -> dict[str, Any]:
        """CPU seconds of each of our processes over a batch, and of everything else."""
        used = {k: difference(before[k], after[k]) for k in before if k != "t"}
        ours = [used[k] for k in ("worker", "master", "fake", "bench")]
        others = (None if used["host"] is None or None in ours
                  else max(0.0, used["host"] - sum(v for v in ours if v is not None)))
        span = (after["t"] or 0) - (before["t"] or 0)
        return {"worker_cpu_s": used["worker"], "master_cpu_s": used["master"],
                "fake_cpu_s": used["fake"], "bench_cpu_s": used["bench"],
                "host_busy_s": used["host"], "other_processes_cpu_s": others,
                "other_processes_cores": others / span if others is not None and span else None,
                "cpu_window_s": span}

    def upstream_record(self, prompt: str) -> tuple[dict[str, Any] | None, int]:
        """The fake's record for `prompt` once it has an outcome, and how many there were."""
        records = self.upstream_records({prompt}).get(prompt, [])
        return (records[0] if len(records) == 1 else None), len(records)

    # -- 1. observer lag ---------------------------------------------------------------
    def run_batch(self, kind: str, n: int, label: str) -> dict[str, Any]:
        assert self.server is not None and self.owner is not None
        assert self.worker_pid is not None
        args = self.args
        thread_id = self.owner.new_thread()
        prompt = self.prompt(label)
        cookie = self.owner.cookie_header()
        stream_s = args.tokens * args.token_delay_ms / 1000
        interval_s = args.poll_interval_ms / 1000
        rng = random.Random(PHASE_SEED + n)
        followers: list[Any] = []
        for i in range(n):
            if kind == "ws":
                followers.append(WebsocketFollower(i, self.ws_url(thread_id), cookie,
                                                   max_frames=args.tokens * 4 + 100))
            else:
                max_polls = int((stream_s + BATCH_SLACK_S) / max(interval_s, 0.01)) + 100
                followers.append(PollingFollower(i, self.server.port, cookie, interval_s,
                                                 rng.uniform(0, interval_s), max_polls))
        self.live = followers
        ready, start = Ready(), Start()
        setup_deadline = time.monotonic() + SETUP_TIMEOUT_S
        deadline = setup_deadline + stream_s + BATCH_SLACK_S
        threads = [threading.Thread(target=f.run, args=(ready, start, deadline),
                                    name=f"{kind}-follower-{f.index}", daemon=True)
                   for f in followers]
        problems: list[str] = []
        warnings: list[str] = []
        for thread in threads:
            thread.start()
        if not ready.wait(n, max(0.0, setup_deadline - time.monotonic())):
            problems.append(f"only {ready.count} of {n} followers were ready in time")
        subscribers = self.wait_subscribers(n, timeout=5.0) if kind == "ws" else None
        if kind == "ws" and subscribers != n:
            warnings.append(f"the hub has {subscribers} subscribers for {n} websocket followers")
        cpu_before = self.cpu_snapshot()
        t_post = time.monotonic()
        message_id: int | None = None
        try:
            sent = self.owner.send(thread_id, prompt)
            message_id = sent["assistant_message"]["id"]
        except Exception as err:
            problems.append(f"posting the prompt failed: {type(err).__name__}: {err}")
        t_posted = time.monotonic()
        start.go(message_id)
        finish(zip(followers, threads, strict=True), deadline, Follower.abort)
        t_end = time.monotonic()
        health = self.wait_quiet()
        cpu_after = self.cpu_snapshot()
        record, n_records = self.upstream_record(prompt)
        self.live = []
        problems += health_problems(health)
        if self.server.worker_pids() != [self.worker_pid]:
            warnings.append(f"the worker changed from {self.worker_pid} to "
                            f"{self.server.worker_pids()}")
        return self.summarise(kind, n, followers, message_id, record, n_records, problems,
                              warnings, t_post, wall_s=t_end - t_post,
                              post_s=t_posted - t_post,
                              **self.cpu_use(cpu_before, cpu_after, t_end - t_post))

    def summarise(self, kind: str, n: int, followers: list[Any], message_id: int | None,
                  record: dict[str, Any] | None, n_records: int, problems: list[str],
                  warnings: list[str], t_post: float, **extra: Any) -> dict[str, Any]:
        T = len(self.tokens)
        token_times: list[float] = (record or {}).get("token_times") or []
        if n_records != 1:
            problems.append(f"{n_records} upstream requests for the batch's prompt")
        if record is not None and (record.get("outcome") != "complete"
                                   or record.get("tokens_sent") != T):
            problems.append(f"upstream outcome {record.get('outcome')}, "
                            f"{record.get('tokens_sent')} tokens sent")
        if record is not None and len(token_times) != T:
            problems.append(f"the fake recorded {len(token_times)} token times for {T} tokens "
                            "(is bench/fake_upstream.py the version with token_times?)")
        lags: list[float] = []
        first_lags: list[float] = []  # token 1 only: the start of the reply
        per_follower: list[dict[str, Any]] = []
        round_trips: list[float] = []
        complete = 0
        for f in followers:
            obs = f.observations(message_id) if message_id is not None else []
            seen = first_seen(obs)
            mine = [seen.first[i] - token_times[i - 1]
                    for i in range(1, min(T, len(token_times)) + 1) if i in seen.first]
            lags += mine
            if 1 in seen.first and token_times:
                first_lags.append(seen.first[1] - token_times[0])
            full = seen.final_status == "complete" and seen.final_tokens == T
            if kind == "poll":
                full = full and f.final_content == self.expected_text
                round_trips += f.round_trips
            if full and not f.error:
                complete += 1
            elif f.error:
                problems.append(f"{kind} follower {f.index}: {f.error}")
            else:
                problems.append(f"{kind} follower {f.index}: ended with status "
                                f"{seen.final_status} and {seen.final_tokens}/{T} tokens")
            if seen.not_prefix or seen.went_back:
                problems.append(f"{kind} follower {f.index}: {seen.not_prefix} texts were not "
                                f"the reply's prefix, {seen.went_back} had fewer tokens than "
                                "an earlier one")
            missing = T - len(mine) if len(token_times) == T else None
            row: dict[str, Any] = {
                "follower": f.index, "error": f.error, "final_status": seen.final_status,
                "final_tokens": seen.final_tokens, "full_text": full,
                "observations": len(obs), "tokens_never_seen": missing,
                "not_prefix": seen.not_prefix, "went_back": seen.went_back,
                "lag_median_s": statistics.median(mine) if mine else None,
                "lag_max_s": max(mine) if mine else None,
            }
            if kind == "ws":
                row.update(frames=len(f.frames), connect_s=f.connect_s)
            else:
                row.update(polls=len(f.polls), phase_s=f.phase_s, reconnects=f.reconnects,
                           round_trips_ms=[round(rt * 1000, 1) for rt in f.round_trips],
                           poll_times_s=[round(o.t - t_post, 3) for o in f.polls])
            per_follower.append(row)
        if len(token_times) == T and len(lags) < T * n:
            warnings.append(f"{T * n - len(lags)} (follower, token) pairs without a time")
        lag_summary = summary(lags)
        lag_summary["mean"] = statistics.fmean(lags) if lags else None
        lag_summary["p90"] = percentile(lags, 90)
        worst = sorted(per_follower, key=lambda r: r["lag_max_s"] or 0)[-3:]
        return {
            "kind": kind, "followers": n, "complete": complete, "message_id": message_id,
            "t_post": t_post,
            "lag_s": lag_summary, "first_token_lag_s": summary(first_lags),
            "pairs": len(lags),
            "observations_per_follower": summary([r["observations"] for r in per_follower]),
            "poll_round_trip_s": summary(round_trips) if kind == "poll" else None,
            "worst_followers": [{"follower": r["follower"], "lag_max_s": r["lag_max_s"],
                                 "lag_median_s": r["lag_median_s"]} for r in reversed(worst)],
            "upstream_tokens_sent": (record or {}).get("tokens_sent"),
            "problems": problems, "warnings": warnings, "per_follower": per_follower, **extra,
        }

    # -- 2. memory per idle websocket follower -----------------------------------------
    def idle_memory(self) -> dict[str, Any]:
        assert self.owner is not None and self.worker_pid is not None
        args = self.args
        thread_id = self.owner.new_thread()
        url, cookie = self.ws_url(thread_id), self.owner.cookie_header()
        stages: list[dict[str, Any]] = []
        problems: list[str] = []
        connect_times: list[float] = []

        def stage(name: str) -> dict[str, Any]:
            assert self.worker_pid is not None
            cpu0, t0 = cpu_seconds(self.worker_pid), time.monotonic()
            time.sleep(args.settle_s)
            cpu1, t1 = cpu_seconds(self.worker_pid), time.monotonic()
            mem = memory_of(self.worker_pid)
            cpu = difference(cpu0, cpu1)
            row = {"stage": name, "open": len(self.idle_sockets), **mem,
                   "idle_cpu_pct": None if cpu is None else 100 * cpu / (t1 - t0),
                   "subscribers": self.health()["hub"].get("subscribers")}
            stages.append(row)
            return row

        def open_followers(count: int) -> None:
            for _ in range(count):
                t0 = time.monotonic()
                try:
                    ws = websocket.create_connection(url, cookie=cookie,
                                                     timeout=REQUEST_TIMEOUT_S)
                    self.idle_sockets.append(ws)
                    first = ws.recv()
                    if 'id="live-status"' not in first:
                        problems.append(f"unexpected first frame: {first[:120]!r}")
                except Exception as err:
                    problems.append(f"idle follower {len(self.idle_sockets)}: "
                                    f"{type(err).__name__}: {err}")
                    continue
                connect_times.append(time.monotonic() - t0)
            self.wait_subscribers(len(self.idle_sockets), timeout=5.0)

        def close_all() -> None:
            for ws in self.idle_sockets:
                try:
                    ws.close(timeout=1)
                except Exception as err:
                    problems.append(f"closing an idle follower: {type(err).__name__}: {err}")
            self.idle_sockets = []
            left = self.wait_subscribers(0, timeout=10.0)
            if left:
                problems.append(f"{left} subscribers still registered 10 s after closing")

        def check(row: dict[str, Any]) -> None:
            if row["subscribers"] != row["open"]:
                problems.append(f"{row['stage']}: the hub has {row['subscribers']} subscribers "
                                f"for {row['open']} open websockets")

        stage("baseline")
        for r in range(args.idle_rounds):
            open_followers(args.idle)
            check(stage(f"+{args.idle} (step {r + 1})"))
        opened = len(self.idle_sockets)
        peak = stages[-1]
        close_all()
        check(stage("all closed"))
        # Open as many again: if the RSS hardly grows, the memory kept after closing is
        # the allocator's free space being reused, not a leak.
        open_followers(opened)
        check(stage(f"reopened {opened}"))
        close_all()
        check(stage("closed again"))
        for prev, cur in zip(stages, stages[1:], strict=False):
            added = cur["open"] - prev["open"]
            for key in ("vm_rss_kib", "rss_anon_kib", "pss_kib", "fds"):
                delta = difference(prev[key], cur[key])
                cur[f"{key}_delta"] = delta
                # Per follower opened, or (negative when memory was freed) per one closed.
                cur[f"{key}_per_follower"] = (delta / abs(added) if added and delta is not None
                                              else None)
        slope = None
        if peak["open"] and peak["vm_rss_kib"] is not None:
            slope = (peak["vm_rss_kib"] - stages[0]["vm_rss_kib"]) / peak["open"]
        return {"thread_id": thread_id, "opened": opened, "stages": stages,
                "vm_rss_kib_per_follower_overall": slope,
                "connect_s": summary(connect_times), "problems": problems}


def _ws_receive_poll_s() -> float | None:
    try:
        from views.sockets import RECEIVE_POLL_S
    except Exception:  # the view module changed: the setting is informational only
        return None
    return RECEIVE_POLL_S


# -- output ------------------------------------------------------------------------------------
def render_settings(s: dict[str, Any]) -> list[str]:
    return [
        "Relay follower benchmark",
        f"  reply: {s['tokens']} tokens ({s['reply_chars']} chars, token i is 'w<i> ') every "
        f"{s['token_delay_ms']:g} ms, run headless (DRIVER_GRACE_MS=0, no SSE reader)",
        writer_line(s),
        f"  followers: websocket (owner cookie; handler wakes every {s['ws_receive_poll_s']} s "
        f"when idle, pings every {s['ws_ping_interval_s']:g} s), polling GET /messages/<id> "
        f"JSON every {s['poll_interval_ms']} ms (POLL_INTERVAL_MS={s['poll_interval_ms']}, "
        "random phase)",
        f"{server_line(s)}; flask-sock {s['flask_sock']}, simple-websocket "
        f"{s['simple_websocket']}, greenlet {s['greenlet']}",
        host_line(s),
    ]


def render_lag(results: list[dict[str, Any]]) -> list[str]:
    ms = 1000.0
    rows: list[tuple[str, Any]] = [
        ("followers ended `complete` with the full text",
         lambda r: f"{r['complete']}/{r['followers']}"),
        ("(follower, token) pairs measured", lambda r: f"{r['pairs']:,}"),
        ("LAG median (ms)", lambda r: fmt(r["lag_s"]["median"], ms)),
        ("LAG p99 (ms)", lambda r: fmt(r["lag_s"]["p99"], ms)),
        ("  lag p90 (ms)", lambda r: fmt(r["lag_s"]["p90"], ms)),
        ("  lag mean (ms)", lambda r: fmt(r["lag_s"]["mean"], ms)),
        ("  lag min / max (ms)", lambda r: f"{fmt(r['lag_s']['min'], ms)} / "
                                           f"{fmt(r['lag_s']['max'], ms)}"),
        ("  token 1 lag, median (ms)", lambda r: fmt(r["first_token_lag_s"]["median"], ms)),
        ("frames or polls per follower, median",
         lambda r: fmt(r["observations_per_follower"]["median"], 1, 0)),
        ("poll round trip median / p99 (ms)",
         lambda r: "-" if r["poll_round_trip_s"] is None else
         f"{fmt(r['poll_round_trip_s']['median'], ms)} / "
         f"{fmt(r['poll_round_trip_s']['p99'], ms)}"),
        ("worker CPU for the batch (s)", lambda r: fmt(r["worker_cpu_s"], 1, 2)),
        ("  bench clients' / fake's CPU (s)",
         lambda r: f"{fmt(r['bench_cpu_s'], 1, 2)} / {fmt(r['fake_cpu_s'], 1, 2)}"),
        ("  other processes on the host (CPU cores busy)",
         lambda r: fmt(r["other_processes_cores"], 1, 2)),
        ("worker GC >=5 ms or full: count / max (ms)",
         lambda r: "-" if "gc" not in r else f"{r['gc']['count']} / {fmt(r['gc']['max_ms'])}"),
        ("POST answered (ms)", lambda r: fmt(r["post_s"], ms)),
        ("batch wall time, POST to last follower done (s)", lambda r: fmt(r["wall_s"], 1, 2)),
    ]
    cols = [f"{r['kind']} F={r['followers']}" for r in results]
    return ["1. Observer lag: first time a follower's text holds token i - the fake's send "
            "time of token i", *table(["", *cols], by_column(rows, results), indent="",
                                      min_width=13)]


def render_memory(mem: dict[str, Any]) -> list[str]:
    lines = ["2. Idle websocket followers on one thread (after each step: "
             "settle, then read /proc/<worker>)"]
    header = (f"{'stage':<18} {'open':>5} {'subs':>5} {'VmRSS MiB':>10} {'dRSS KiB/f':>11} "
              f"{'RssAnon MiB':>12} {'dAnon KiB/f':>12} {'Pss MiB':>8} {'fds':>5} "
              f"{'dfd/f':>6} {'idle CPU %':>10}")
    lines.append(header)
    for s in mem["stages"]:
        lines.append(
            f"{s['stage']:<18} {s['open']:>5} {s['subscribers'] if s['subscribers'] is not None else '-':>5} "  # noqa: E501
            f"{fmt(s['vm_rss_kib'], 1 / 1024, 1):>10} "
            f"{fmt(s.get('vm_rss_kib_per_follower'), 1, 1):>11} "
            f"{fmt(s['rss_anon_kib'], 1 / 1024, 1):>12} "
            f"{fmt(s.get('rss_anon_kib_per_follower'), 1, 1):>12} "
            f"{fmt(s['pss_kib'], 1 / 1024, 1):>8} {s['fds'] if s['fds'] is not None else '-':>5} "
            f"{fmt(s.get('fds_per_follower'), 1, 2):>6} {fmt(s['idle_cpu_pct'], 1, 1):>10}")
    lines.append(f"VmRSS per idle follower, baseline to {mem['opened']} open: "
                 f"{fmt(mem['vm_rss_kib_per_follower_overall'], 1, 1)} KiB; connect + first "
                 f"frame median {fmt(mem['connect_s']['median'], 1000, 1)} ms, max "
                 f"{fmt(mem['connect_s']['max'], 1000, 1)} ms")
    lines.append("(d.../f: change from the previous stage / followers opened, or closed in "
                 "the last row: there a negative value is what each closed one gave back)")
    return lines


def render(settings: dict[str, Any], results: list[dict[str, Any]],
           memory: dict[str, Any] | None) -> str:
    lines = render_settings(settings)
    if results:
        lines += ["", *render_lag(results)]
    if memory is not None:
        lines += ["", *render_memory(memory)]
    for r in results:
        for kind in ("problems", "warnings"):
            lines += listing(f"{kind} in {r['kind']} F={r['followers']}", r[kind])
    if memory is not None:
        lines += listing("problems with idle followers", memory["problems"])
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.follower_bench",
        description="Relay's followers against a fake model: per-token lag of websocket and "
                    "polling followers, memory per idle websocket (see bench/README.md).")
    parser.add_argument("--followers", type=levels(500, "follower count"), default=[1, 50],
                        help="follower counts F, comma-separated (default 1,50)")
    parser.add_argument("--modes", default="ws,poll",
                        help="which followers to measure: ws, poll or ws,poll (default)")
    parser.add_argument("--idle", type=int, default=100,
                        help="idle websocket followers opened per step (100; 0 skips part 2)")
    parser.add_argument("--idle-rounds", type=int, default=2,
                        help="how many steps of --idle followers (2)")
    parser.add_argument("--settle-s", type=float, default=2.0,
                        help="wait before each memory reading (2.0)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply (200)")
    parser.add_argument("--token-delay-ms", type=float, default=20.0,
                        help="the model's pace between tokens (20)")
    parser.add_argument("--poll-interval-ms", type=int, default=250,
                        help="POLL_INTERVAL_MS of the server and the polling followers (250)")
    parser.add_argument("--gc-probe", action="store_true",
                        help="have the server log its slow and full garbage collections "
                             "(a sitecustomize on its PYTHONPATH) and report them per batch")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the unmeasured warm-up reply")
    relay_setting(parser, "--throttle-ms", "STREAM_THROTTLE_MS", int)
    run_args(parser)
    args = parser.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not args.modes or any(m not in ("ws", "poll") for m in args.modes):
        parser.error("--modes takes ws, poll or ws,poll")
    if args.tokens < 1 or args.tokens > 20_000:
        parser.error("--tokens must be within 1..20000")
    if args.token_delay_ms < 0:
        parser.error("--token-delay-ms cannot be negative")
    if not 10 <= args.poll_interval_ms <= 60_000:
        parser.error("--poll-interval-ms must be within 10..60000")
    if not 0 <= args.idle <= 1000 or not 1 <= args.idle_rounds <= 10:
        parser.error("--idle must be within 0..1000 and --idle-rounds within 1..10")
    if not 0 <= args.settle_s <= 60:
        parser.error("--settle-s must be within 0..60")
    needed = max(max(args.followers), args.idle * args.idle_rounds) + 20
    if args.worker_connections < needed:
        parser.error(f"--worker-connections must be at least {needed} (one per follower)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit(max(4096, (max(args.followers) + args.idle * args.idle_rounds) * 4 + 256))
    bench = Bench(args)
    settings = bench.settings()
    results: list[dict[str, Any]] = []
    memory: dict[str, Any] | None = None

    def measure() -> None:
        nonlocal memory
        if not args.no_warmup:
            print("warm-up: 1 websocket + 1 polling follower (not measured) ...", flush=True)
            for kind in args.modes:
                warm = bench.run_batch(kind, 1, f"warmup-{kind}")
                if warm["problems"]:
                    print("warm-up problems:\n  " + "\n  ".join(warm["problems"]), flush=True)
        if args.idle:
            # Before the lag batches: their followers' freed memory would be reused here.
            print(f"idle websocket followers: {args.idle_rounds} x {args.idle} ...", flush=True)
            memory = bench.idle_memory()
        for n in args.followers:
            for kind in args.modes:
                print(f"measuring {kind} followers F={n} ...", flush=True)
                results.append(bench.run_batch(kind, n, f"{kind}-{n}"))

    status = run(bench, measure)
    pauses = gc_pauses(bench.server_log, bench.worker_pid) if args.gc_probe else []
    attach_gc(results if args.gc_probe else [], pauses)
    print()
    print(render(settings, results, memory))
    if args.gc_probe:
        full = [p["ms"] for p in pauses if p["generation"] == 2]
        print(f"\nworker garbage collections (--gc-probe, whole run): {len(full)} full, longest "
              f"{fmt(max(full, default=None))} ms; {len(pauses) - len(full)} younger ones of "
              ">= 5 ms. A collection stops every greenlet of the worker while it runs.")
    findings, counts, noteworthy = scan_log(
        bench.server_log, ("Booting worker", "Worker exiting", "had no driver"))
    print_log(f"{counts['Booting worker']} worker boot(s), {counts['had no driver']} headless "
              f"start(s) (expected: one per reply), {len(noteworthy)} other noteworthy line(s)",
              noteworthy)
    if args.json:
        write_json(args.json, {"settings": settings, "lag": results, "idle_memory": memory,
                               "worker_gc": pauses, "gunicorn_log_findings": findings})
    problems = any(r["problems"] for r in results) or bool(memory and memory["problems"])
    if status == 0 and problems:
        status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
