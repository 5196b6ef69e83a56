"""Relay's hub across workers: how late websocket followers see each token, and what it costs.

For each hub backend (in-process + database watcher on SQLite, PostgreSQL LISTEN/NOTIFY,
Redis pub/sub) Relay runs under gunicorn with two gevent workers on one CPU; the fake model,
a driver tab (the reply's SSE stream) and F websocket followers, half on each worker, run on
the other CPU. Per token: the fake's send time -> the token's text reaching each follower,
split by whether the follower is on the worker that generates the reply or on the other one.

    python -m bench.hub_bench [--backends local,postgres,redis] [--followers 1,200,1000]
                              [--tokens 200] [--token-delay-ms 20] [--json out.json]

bench/README.md explains every figure and how it is measured.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import selectors
import signal
import struct
import sys
import threading
import time
from collections import Counter
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import websocket

from bench.fake_upstream import numbered_tokens
from bench.follower_bench import _TERMINAL_REPLY, Observation, first_seen, reply_in_frame
from bench.harness import (
    BenchError,
    FakeUpstreamProcess,
    Rig,
    Tab,
    cpu_seconds,
    difference,
    environment,
    finish,
    fmt,
    get_json,
    host_busy_seconds,
    host_line,
    levels,
    listing,
    own_cpu_seconds,
    percentile,
    pin_process,
    print_log,
    raise_fd_limit,
    relay_setting,
    run,
    run_args,
    scan_log,
    summary,
    table,
    write_json,
    writer_settings,
)
from bench.relay_server import RelayServer, connection_owners

BACKENDS = ("local", "postgres", "redis")
SERVER_CPU, CLIENT_CPU = 0, 1
IDLE_S = 1.0  # followers connected, no reply: the idle cost of F followers
TAIL_S = 1.0  # CPU and database counts run this long past the driver's `done`
HEALTH_EVERY_S = 0.05  # an unrelated request (GET /healthz) this often while the reply runs
CONNECT_TIMEOUT_S = 10.0  # one websocket's handshake and first frame
STEER_LIMIT_S = 20.0  # a worker is paused at most this long (gunicorn's timeout is 30 s)
SETTLE_S = 1.5  # after closing a batch's followers, before the next batch
_TERMINAL = re.compile(_TERMINAL_REPLY.pattern.encode())

# Put first on the server's PYTHONPATH as `sitecustomize`: counts every SQL statement and
# every commit SQLAlchemy runs, per process, in a 16-byte file the bench reads at any time.
# It attaches once sqlalchemy.engine is imported (after gevent's monkey-patching).
DB_PROBE_SOURCE = '''"""hub_bench: count SQLAlchemy statements and commits per process."""
import importlib.abc
import importlib.util
import mmap
import os
import struct
import sys

_DIR = os.environ.get("HUB_BENCH_PROBE_DIR")
_state = {"pid": None, "map": None, "counts": [0, 0]}


def _bump(i):
    pid = os.getpid()
    if _state["pid"] != pid:  # the first statement of this process (a forked worker)
        fd = os.open(os.path.join(_DIR, "%d.counts" % pid), os.O_RDWR | os.O_CREAT, 0o600)
        os.ftruncate(fd, 16)
        _state.update(pid=pid, map=mmap.mmap(fd, 16), counts=[0, 0])
        os.close(fd)
    _state["counts"][i] += 1
    struct.pack_into("<QQ", _state["map"], 0, *_state["counts"])


class _AfterImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != "sqlalchemy.engine":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(name)
        load = spec.loader.exec_module

        def exec_module(module):
            load(module)
            event = sys.modules["sqlalchemy.event"]
            event.listen(module.Engine, "before_cursor_execute", lambda *a, **k: _bump(0))
            event.listen(module.Engine, "commit", lambda *a, **k: _bump(1))

        spec.loader.exec_module = exec_module
        return spec


if _DIR:
    sys.meta_path.insert(0, _AfterImport())
'''


# -- websocket followers, all read by one thread -----------------------------------------------
class Follower:
    """One websocket on the reply's thread: the arrival time of every message it got."""

    def __init__(self, index: int, ws: websocket.WebSocket) -> None:
        self.index = index
        self.ws = ws  # kept: it owns the socket
        self.sock = ws.sock
        self.port: int = self.sock.getsockname()[1]
        self.worker: int | None = None  # the pid holding the server end
        self.frames: list[tuple[float, bytes]] = []
        self.ended = False  # a fragment showed the reply terminal
        self.error: str | None = None
        self._buf = bytearray()
        self._message = bytearray()

    def feed(self, data: bytes, now: float, cache: dict[bytes, tuple[bytes, bool]]) -> None:
        """Parse server frames (never masked) out of the received bytes."""
        buf = self._buf
        buf += data
        pos = 0
        while len(buf) - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            if b0 & 0x70 or b1 & 0x80 or b0 & 0x0F not in (0x0, 0x1, 0x2, 0x8, 0x9, 0xA):
                # Reserved bits, a mask or an unknown opcode: not (or no longer) a websocket.
                self.error = f"not a websocket frame: {bytes(buf[pos:pos + 40])!r}"
                buf.clear()
                return
            n, head = b1 & 0x7F, 2
            if n >= 126:
                head = 4 if n == 126 else 10
                if len(buf) - pos < head:
                    break
                n = int.from_bytes(buf[pos + 2:pos + head], "big")
            end = pos + head + n
            if len(buf) < end:
                break
            self._on_frame(b0 & 0x0F, bool(b0 & 0x80), bytes(buf[pos + head:end]), now, cache)
            pos = end
        del buf[:pos]

    def _on_frame(self, opcode: int, fin: bool, payload: bytes, now: float,
                  cache: dict[bytes, tuple[bytes, bool]]) -> None:
        if opcode == 0x9:  # ping: a masked pong (a zero mask leaves the payload as it is)
            with contextlib.suppress(OSError):
                self.sock.send(bytes([0x8A, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)
        elif opcode == 0x8:
            code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
            self.error = self.error or f"the server closed the websocket (code {code})"
        elif opcode in (0x0, 0x1, 0x2):
            self._message += payload
            if fin:
                message = bytes(self._message)
                self._message.clear()
                # Followers of one worker usually get identical frames: keep one copy.
                entry = cache.get(message)
                if entry is None:
                    entry = cache[message] = (message, bool(_TERMINAL.search(message)))
                self.frames.append((now, entry[0]))
                self.ended = self.ended or entry[1]

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.shutdown(2)
        with contextlib.suppress(OSError):
            self.sock.close()


class Reader(threading.Thread):
    """One thread reads every follower's socket (epoll), stamping each read on arrival."""

    def __init__(self, followers: list[Follower]) -> None:
        super().__init__(name="hub-bench-reader", daemon=True)
        self.followers = followers
        self.halt = threading.Event()
        self.cache: dict[bytes, tuple[bytes, bool]] = {}

    def run(self) -> None:
        with selectors.DefaultSelector() as sel:
            for f in self.followers:
                f.sock.setblocking(False)
                sel.register(f.sock, selectors.EVENT_READ, f)
            while not self.halt.is_set():
                for key, _ in sel.select(0.05):
                    f = key.data
                    try:
                        data = f.sock.recv(1 << 18)
                    except BlockingIOError:
                        continue
                    except OSError as err:
                        data, f.error = b"", f.error or f"{type(err).__name__}: {err}"
                    now = time.monotonic()
                    if data:
                        f.feed(data, now, self.cache)
                    else:
                        f.error = f.error or "the server closed the connection"
                    if f.error:
                        sel.unregister(f.sock)


class Driver(Tab):
    """The tab that asked: it opens the reply's SSE stream (so its worker generates the reply)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.port: int | None = None
        self.seen: list[Observation] = []

    def on_delta(self, text: str, now: float) -> None:
        super().on_delta(text, now)
        if self.port is None and self.conn is not None and self.conn._sock is not None:
            self.port = self.conn._sock.getsockname()[1]
        self.seen.append(Observation(now, "streaming", self.text))


class HealthSampler(threading.Thread):
    """GET /healthz every HEALTH_EVERY_S on a new connection: its latency, who answered."""

    def __init__(self, url: str) -> None:
        super().__init__(name="hub-bench-healthz", daemon=True)
        self.url = url
        self.halt = threading.Event()
        self.samples: list[dict[str, Any]] = []
        self.failures: list[str] = []

    def run(self) -> None:
        due = time.monotonic()
        while not self.halt.wait(max(0.0, due - time.monotonic())):
            t0 = time.monotonic()
            try:
                body = get_json(self.url, timeout=5.0)
            except Exception as err:  # a 503 or a timeout is a figure, not a crash
                self.failures.append(f"{type(err).__name__}: {err}")
                continue
            finally:
                due = max(due + HEALTH_EVERY_S, time.monotonic())
            self.samples.append({"s": time.monotonic() - t0, "worker": body.get("worker"),
                                 "generating": bool(body.get("active_generations"))})


# -- the benchmark -----------------------------------------------------------------------------
class Bench(Rig):
    """The fake model, then Relay with 2 workers per backend, a batch per follower count."""

    name = "hub-bench"

    def __init__(self, args: argparse.Namespace) -> None:
        super().__init__(args)
        self.tokens = numbered_tokens(args.tokens)
        self.expected_text = "".join(self.tokens)
        self.probe_dir = self.workdir / "db-probe"
        self.live: list[Follower] = []
        self.paused: set[int] = set()
        self.pg: Any = None  # the admin connection (autocommit) when PostgreSQL is used
        self.redis: Any = None
        self.backend_url: str | None = None
        self.listener: Any = None  # LISTENs to the batch thread's channel (postgres hub)
        self.notified = 0
        self.backend_db: str | None = None
        self.logs: dict[str, str] = {}
        self.pinned = False
        self.owner_cookie = ""
        self.hub_prefix = f"{self.name}-{self.run_id}:"

    # -- servers -------------------------------------------------------------------------
    def start(self) -> None:
        args = self.args
        if not args.no_pin and {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
            os.sched_setaffinity(0, {CLIENT_CPU})  # this thread; the fake and threads inherit
            self.pinned = True
        if not args.no_db_probe:
            self.probe_dir.mkdir()
            (self.probe_dir / "sitecustomize.py").write_text(DB_PROBE_SOURCE)
        self.fake = FakeUpstreamProcess(self.workdir, tokens=args.tokens,
                                        token_delay_ms=args.token_delay_ms,
                                        first_token_delay_ms=0.0).start()

    @contextlib.contextmanager
    def backend(self, name: str) -> Any:
        """Relay with two workers on a fresh database and hub for `name`; stopped afterwards."""
        args = self.args
        assert self.fake is not None
        settings: dict[str, object] = {
            "HUB_BACKEND": name, "REDIS_URL": "", "STREAM_THROTTLE_MS": args.throttle_ms,
            "HUB_PREFIX": self.hub_prefix}
        if not args.no_db_probe:
            settings.update(HUB_BENCH_PROBE_DIR=self.probe_dir, PYTHONPATH=os.pathsep.join(
                p for p in (str(self.probe_dir), os.environ.get("PYTHONPATH", "")) if p))
        if name == "local":
            settings["DATABASE_URL"] = f"sqlite:///{self.workdir / f'relay-{name}.sqlite3'}"
        else:
            settings["DATABASE_URL"] = self.backend_url = self.create_database(name)
        if name == "redis":
            import redis

            url = f"{args.redis_url.rstrip('/')}/{args.redis_db}"
            self.redis = redis.Redis.from_url(url, socket_timeout=5)
            self.redis.flushdb()
            settings["REDIS_URL"] = url
        server = RelayServer(self.server_env(self.fake, **settings), self.workdir, workers=2)
        self.server = server
        try:
            server.start()
            if self.pinned:
                pin_process(server.process.pid, {SERVER_CPU})  # workers it restarts inherit it
                for pid in server.worker_pids():
                    pin_process(pid, {SERVER_CPU})
            yield server
        finally:
            self.unblock()
            server.stop()
            self.logs[name] = server.log()
            self.server = None
            self.drop_backend()

    def create_database(self, backend: str) -> str:
        import psycopg

        if self.pg is None:
            self.pg = psycopg.connect(self.args.pg_url, autocommit=True, connect_timeout=5)
        self.backend_db = f"hub_bench_{self.run_id}_{backend}"
        self.pg.execute(f'CREATE DATABASE "{self.backend_db}"')
        parts = urlsplit(self.args.pg_url)
        return urlunsplit(parts._replace(path=f"/{self.backend_db}"))

    def listen(self, backend: str, thread_id: int) -> None:
        """Count the NOTIFYs on a thread's channel (the postgres hub's name for it)."""
        import psycopg
        from psycopg import sql

        from models import thread_channel

        if self.listener is not None:
            self.listener.close()
            self.listener = None
        if backend == "postgres" and self.backend_url is not None:
            self.listener = psycopg.connect(self.backend_url, autocommit=True, connect_timeout=5)
            self.listener.execute(sql.SQL("LISTEN {}").format(
                sql.Identifier(f"{self.hub_prefix}{thread_channel(thread_id)}")))

    def hub_messages(self) -> int | None:
        """PUBLISH calls on the Redis server, or NOTIFYs on the batch's channel, so far."""
        if self.redis is not None:
            stats = self.redis.info("commandstats")
            return sum(v.get("calls", 0) for k, v in stats.items()
                       if k in ("cmdstat_publish", "cmdstat_spublish"))
        if self.listener is not None:
            self.notified += sum(1 for _ in self.listener.notifies(timeout=0.0))
            return self.notified
        return None

    def drop_backend(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(Exception):
                self.listener.close()
            self.listener = None
        self.backend_url = None
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.flushdb()
                self.redis.close()
            self.redis = None
        if self.backend_db is not None:
            import psycopg

            for attempt in range(3):  # PostgreSQL may have restarted under us: reconnect
                try:
                    if self.pg is None or self.pg.closed:
                        self.pg = psycopg.connect(self.args.pg_url, autocommit=True,
                                                  connect_timeout=5)
                    self.pg.execute(f'DROP DATABASE IF EXISTS "{self.backend_db}" WITH (FORCE)')
                    break
                except psycopg.Error as err:
                    with contextlib.suppress(Exception):
                        self.pg.close()
                    if attempt == 2:
                        print(f"could not drop database {self.backend_db}: {err}",
                              file=sys.stderr, flush=True)
                    time.sleep(1.0)
            self.backend_db = None

    def unblock(self) -> None:
        for pid in list(self.paused):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.paused.clear()
        for f in self.live:
            f.close()
        self.live = []

    def stop(self) -> None:
        super().stop()
        if self.pg is not None:
            self.pg.close()

    # -- readings ------------------------------------------------------------------------
    def probe_counts(self, pids: list[int]) -> dict[int, tuple[int, int]] | None:
        """SQL statements and commits of each worker so far (the probe's files)."""
        if self.args.no_db_probe:
            return None
        counts = {}
        for pid in pids:
            try:
                counts[pid] = struct.unpack("<QQ", (self.probe_dir / f"{pid}.counts").read_bytes())
            except (FileNotFoundError, struct.error):
                counts[pid] = (0, 0)
        return counts

    def snapshot(self, workers: list[int]) -> dict[str, Any]:
        assert self.server is not None and self.server.process is not None
        assert self.fake is not None and self.fake.process is not None
        snap: dict[str, Any] = {
            "t": time.monotonic(), "workers": {pid: cpu_seconds(pid) for pid in workers},
            "master": cpu_seconds(self.server.process.pid), "bench": own_cpu_seconds(),
            "fake": cpu_seconds(self.fake.process.pid), "host": host_busy_seconds(),
            "db": self.probe_counts(workers), "hub": self.hub_messages()}
        return snap

    @staticmethod
    def usage(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
        """What happened between two snapshots."""
        server = [difference(a["workers"].get(p), b["workers"].get(p)) for p in a["workers"]]
        server.append(difference(a["master"], b["master"]))
        ours = [*server, difference(a["bench"], b["bench"]), difference(a["fake"], b["fake"])]
        host = difference(a["host"], b["host"])
        span = b["t"] - a["t"]
        out: dict[str, Any] = {
            "span_s": span,
            "server_cpu_s": None if None in server else sum(server),
            "bench_cpu_s": difference(a["bench"], b["bench"]),
            "fake_cpu_s": difference(a["fake"], b["fake"]),
            "other_processes_cores": (None if host is None or None in ours
                                      else max(0.0, host - sum(ours)) / span),
            "statements": None, "commits": None, "hub_messages": difference(a["hub"], b["hub"])}
        if a["db"] is not None and b["db"] is not None:
            out["statements"] = sum(b["db"][p][0] - a["db"][p][0] for p in a["db"])
            out["commits"] = sum(b["db"][p][1] - a["db"][p][1] for p in a["db"])
        return out

    # -- followers -----------------------------------------------------------------------
    def connect(self, thread_id: int, quotas: dict[int, int],
                problems: list[str]) -> list[Follower]:
        """Open quotas[pid] followers on each worker: the others are paused (SIGSTOP) meanwhile,
        so the one left accepts every connection; each follower has read its first frame."""
        assert self.server is not None
        url = self.server.base_url.replace("http://", "ws://") + f"/threads/{thread_id}/ws"
        cookie = self.owner_cookie
        followers: list[Follower] = []
        for pid, count in quotas.items():
            self.paused = {p for p in quotas if p != pid}
            for other in self.paused:
                os.kill(other, signal.SIGSTOP)
            try:
                give_up = time.monotonic() + STEER_LIMIT_S
                placed = failures = 0
                while placed < count:
                    if time.monotonic() > give_up or failures >= 3:
                        problems.append(f"only {placed} of {count} followers could be opened "
                                        f"on worker {pid}")
                        break
                    try:
                        ws = websocket.create_connection(url, cookie=cookie,
                                                         timeout=CONNECT_TIMEOUT_S)
                    except Exception as err:
                        failures += 1
                        problems.append(f"opening a follower: {type(err).__name__}: {err}")
                        continue
                    placed += 1
                    follower = Follower(len(followers), ws)
                    followers.append(follower)
                    self.live.append(follower)
                    try:
                        first = ws.recv()
                    except Exception as err:
                        failures += 1
                        first = f"{type(err).__name__}: {err}"
                    if 'id="live-status"' not in first:
                        follower.error = f"unexpected first frame: {first[:120]!r}"
            finally:
                self.unblock_paused()
        owners = connection_owners(quotas, self.server.port)
        for f in followers:
            f.worker = owners.get(f.port)
        return followers

    def unblock_paused(self) -> None:
        for pid in list(self.paused):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)
        self.paused.clear()

    # -- one batch -----------------------------------------------------------------------
    def run_batch(self, backend: str, n: int, label: str) -> dict[str, Any]:
        """One reply, followed by n websockets (half per worker; at n = 1, one on each)."""
        assert self.server is not None
        args = self.args
        problems: list[str] = []
        warnings: list[str] = []
        owner = self.new_client()
        self.owner_cookie = owner.cookie_header()
        thread_id = owner.new_thread()
        self.listen(backend, thread_id)
        workers = self.server.worker_pids()
        if len(workers) != 2:
            raise BenchError(f"expected two gunicorn workers, found {workers}")
        quotas = {workers[0]: max(1, math.ceil(n / 2)), workers[1]: max(1, n // 2)}
        followers = self.connect(thread_id, quotas, problems)
        misplaced = sum(1 for f in followers if f.worker not in quotas)
        if misplaced:
            warnings.append(f"{misplaced} followers' server end was found on no worker")
        reader = Reader(followers)
        reader.start()

        idle0 = self.snapshot(workers)
        time.sleep(IDLE_S)
        idle = self.usage(idle0, self.snapshot(workers))

        driver = Driver(0, owner, thread_id, self.prompt(label))
        stream_s = args.tokens * args.token_delay_ms / 1000
        deadline = time.monotonic() + stream_s + 30.0

        def drive() -> None:
            try:
                sent = driver.post()
                driver.read(sent["stream_url"], deadline)
            except Exception as err:  # reported below; the batch carries on
                driver.error = f"{type(err).__name__}: {err}"

        sampler = HealthSampler(self.server.base_url + "/healthz")
        before = self.snapshot(workers)
        driving = threading.Thread(target=drive, name="hub-bench-driver", daemon=True)
        driving.start()
        sampler.start()
        generating = None
        while driving.is_alive() and generating is None:
            if driver.port is not None:
                generating = connection_owners(workers, self.server.port).get(driver.port)
                if generating is None:
                    break
            time.sleep(0.005)
        finish([(driver, driving)], deadline, Tab.close)
        t_done = driver.t_end or time.monotonic()
        time.sleep(max(0.0, t_done + TAIL_S - time.monotonic()))
        after = self.snapshot(workers)
        sampler.halt.set()
        # Followers still behind get until --grace-s after `done`; those that never end are
        # the finding (no fan-out to their worker), not a reason to wait longer.
        while time.monotonic() < t_done + args.grace_s:
            if all(f.ended or f.error for f in followers):
                break
            time.sleep(0.02)
        reader.halt.set()
        reader.join(5.0)
        sampler.join(6.0)
        for f in followers:
            f.close()
        self.live = []
        record = self.upstream_records({driver.prompt}).get(driver.prompt, [])
        time.sleep(SETTLE_S)  # the handlers notice their sockets closed
        if self.server.worker_pids() != workers:
            warnings.append(f"the workers changed from {workers} to {self.server.worker_pids()}")
        return self.summarise(backend, n, followers, driver, generating, record, problems,
                              warnings, before, after, idle, sampler)

    def summarise(self, backend: str, n: int, followers: list[Follower], driver: Driver,
                  generating: int | None, records: list[dict[str, Any]], problems: list[str],
                  warnings: list[str], before: dict[str, Any], after: dict[str, Any],
                  idle: dict[str, Any], sampler: HealthSampler) -> dict[str, Any]:
        T = len(self.tokens)
        record = records[0] if len(records) == 1 else {}
        token_times: list[float] = record.get("token_times") or []
        if len(records) != 1:
            problems.append(f"{len(records)} upstream requests for the batch's prompt")
        elif record.get("outcome") != "complete" or len(token_times) != T:
            problems.append(f"upstream outcome {record.get('outcome')}, "
                            f"{len(token_times)} token times for {T} tokens")
        if driver.error or driver.terminal != "done" or driver.text != self.expected_text:
            problems.append(f"driver: {driver.error or driver.terminal}, "
                            f"{len(driver.text)}/{len(self.expected_text)} chars")
        if generating is None:
            problems.append("the generating worker could not be identified (driver's socket)")

        def lags_of(seen: list[Observation]) -> tuple[list[float], Any]:
            got = first_seen(seen)
            return [got.first[i] - token_times[i - 1] for i in range(1, len(token_times) + 1)
                    if i in got.first], got

        driver_lags, _ = lags_of(driver.seen)
        message_id = driver.message_id
        parsed: dict[bytes, Any] = {}
        groups: dict[str, dict[str, Any]] = {}
        errors: Counter[tuple[str, str]] = Counter()
        for where in ("same", "other"):
            members = [f for f in followers
                       if f.worker is not None and (f.worker == generating) == (where == "same")]
            lags: list[float] = []
            firsts: list[float] = []
            whole = saw = 0
            for f in members:
                seen = []
                for t, frame in f.frames:
                    if frame not in parsed:
                        parsed[frame] = (None if message_id is None else
                                         reply_in_frame(frame.decode("utf-8", "replace"),
                                                        message_id))
                    if parsed[frame] is not None:
                        seen.append(Observation(t, *parsed[frame]))
                mine, got = lags_of(seen)
                lags += mine
                if 1 in got.first and token_times:
                    firsts.append(got.first[1] - token_times[0])
                saw += bool(mine)
                full = got.final_status == "complete" and got.final_tokens == T
                whole += full
                if f.error and not full:
                    errors[where, f.error] += 1
                if got.not_prefix or got.went_back:
                    problems.append(f"{where}-worker follower {f.index}: {got.not_prefix} texts "
                                    f"not a prefix of the reply, {got.went_back} went back")
            stats = summary(lags)
            groups[where] = {"followers": len(members), "whole": whole, "saw_any": saw,
                             "pairs": len(lags), "lag_s": {**stats, "p90": percentile(lags, 90)},
                             "first_token_lag_s": summary(firsts),
                             "frames_per_follower": summary([len(f.frames) for f in members])}
            if members and whole < len(members):
                problems.append(
                    f"{where} worker: {whole}/{len(members)} followers got the whole reply, "
                    f"{saw}/{len(members)} saw any token"
                    + (" (no fan-out across workers?)" if where == "other" and not saw else ""))
        problems += [f"{where} worker: {count} follower(s): {error}"
                     for (where, error), count in errors.most_common()]
        used = self.usage(before, after)
        reply_s = (driver.t_end or after["t"]) - before["t"]
        per_s = {k: (None if used[k] is None else used[k] / reply_s)
                 for k in ("statements", "commits", "hub_messages")}
        idle_per_s = {k: (None if idle[k] is None else idle[k] / idle["span_s"])
                      for k in ("statements", "commits", "hub_messages")}
        busy = used["other_processes_cores"]
        if busy is not None and busy > 0.25:
            warnings.append(f"other processes kept {busy:.2f} CPU cores busy during the reply "
                            "(the host is shared): its figures may be off")
        connected = len(followers)
        cpu_per = (None if used["server_cpu_s"] is None or not connected or not token_times
                   else used["server_cpu_s"] / len(token_times) / connected)
        health = [s["s"] for s in sampler.samples]
        if sampler.failures:
            problems.append(f"{len(sampler.failures)} /healthz requests failed, e.g. "
                            f"{sampler.failures[0]}")
        return {
            "backend": backend, "followers_asked": n, "followers": connected,
            "generating_worker": generating, "message_id": message_id,
            "driver_lag_s": summary(driver_lags), "same": groups["same"],
            "other": groups["other"], "reply_s": reply_s,
            "server_cpu_s": used["server_cpu_s"], "cpu_per_token_follower_s": cpu_per,
            "idle_server_cpu_pct": (None if idle["server_cpu_s"] is None
                                    else 100 * idle["server_cpu_s"] / idle["span_s"]),
            "bench_cpu_s": used["bench_cpu_s"], "fake_cpu_s": used["fake_cpu_s"],
            "other_processes_cores": used["other_processes_cores"],
            "healthz_s": summary(health), "healthz_failures": len(sampler.failures),
            "healthz_on_generating_worker": sum(s["generating"] for s in sampler.samples),
            "per_reply_s": per_s, "idle_per_s": idle_per_s, "counts": used,
            "problems": problems, "warnings": warnings,
        }

    def warm_up(self, backend: str) -> None:
        """One reply with one follower per worker, not measured (imports, templates, pools)."""
        grace, self.args.grace_s = self.args.grace_s, min(self.args.grace_s, 1.0)
        try:
            self.run_batch(backend, 1, f"{backend} warm-up")
        finally:
            self.args.grace_s = grace

    def health_of(self) -> dict[str, Any]:
        try:
            return self.health()
        except Exception as err:
            return {"error": f"{type(err).__name__}: {err}"}


# -- output ------------------------------------------------------------------------------------
def ratio(value: float | None, reference: float | None) -> str:
    if value is None or not reference:
        return ""
    return f" x{value / reference:.2g}" if value / reference < 10 else \
        f" x{value / reference:,.0f}"


def pair(stats: dict[str, Any], ref: dict[str, Any] | None = None) -> str:
    """`median / p99` in ms, with ratios to `ref`'s when given."""
    if not stats.get("n"):
        return "-"
    ms = 1000.0
    if ref is None:
        return f"{fmt(stats['median'], ms)} / {fmt(stats['p99'], ms)}"
    return (f"{fmt(stats['median'], ms)}{ratio(stats['median'], ref.get('median'))} / "
            f"{fmt(stats['p99'], ms)}{ratio(stats['p99'], ref.get('p99'))}")


def render(settings: dict[str, Any], results: list[dict[str, Any]],
           servers: dict[str, dict[str, Any]]) -> str:
    lines = [
        "Relay hub benchmark: websocket followers of one reply, on the generating worker "
        "(same) and the other one",
        f"  reply: {settings['tokens']} tokens every {settings['token_delay_ms']:g} ms, "
        f"driven by an SSE tab; writer throttle {settings['throttle_ms']} ms "
        f"({settings['throttle_source']}); gunicorn -k gevent, 2 workers, "
        f"{settings['worker_connections']} connections each",
        f"  CPUs: {settings['pinning']}",
        host_line(settings),
    ]
    for name, s in servers.items():
        lines.append(f"  {name}: database {s['database']}, hub {s['hub']}"
                     + (f"; STOPPED: {s['error']}" if s.get("error") else ""))
    lines += ["", "Lag: fake's send time of token i -> token i in a follower's text, "
              "median / p99 in ms (x = ratio to the driver's SSE lag of the same batch)"]
    T = settings["tokens"]

    def got(g: dict[str, Any]) -> str:
        return (f"{g['whole']}/{g['followers']}, "
                f"{100 * g['pairs'] / (T * g['followers']) if g['followers'] else 0:.0f}%")

    rows = []
    for r in results:
        s, o = r["same"], r["other"]
        complete = o["pairs"] == T * o["followers"] and s["pairs"] == T * s["followers"]
        rows.append([r["backend"], f"{r['followers_asked']} ({s['followers']}+{o['followers']})",
                     pair(r["driver_lag_s"]),
                     got(s), pair(s["lag_s"], r["driver_lag_s"]),
                     got(o), pair(o["lag_s"], r["driver_lag_s"]),
                     (ratio(o["lag_s"]["median"], s["lag_s"]["median"]).strip() or "-")
                     if complete else "-"])
    lines += table(["backend", "F (same+other)", "driver SSE", "same: whole, tokens",
                    "same-worker lag", "other: whole, tokens", "other-worker lag",
                    "other/same p50"], rows, indent="  ")
    lines.append("  (whole = followers that got the reply complete; tokens = (follower, token) "
                 "pairs seen at all)")
    lines += ["", "Cost: server = both workers + master, POST -> `done` + 1 s "
              "(x = ratio to the backend's first F; marginal = CPU beyond the first F's, per "
              "token per added follower)"]
    rows = []
    first: dict[str, dict[str, Any]] = {}
    for r in results:
        ref = first.setdefault(r["backend"], r)
        per, ref_per = r["per_reply_s"], ref["per_reply_s"]

        def rate(key: str, per: dict = per, ref_per: dict = ref_per) -> str:
            return "-" if per[key] is None else f"{per[key]:,.1f}{ratio(per[key], ref_per[key])}"

        added = r["followers"] - ref["followers"]
        marginal = (None if not added or None in (r["server_cpu_s"], ref["server_cpu_s"])
                    else (r["server_cpu_s"] - ref["server_cpu_s"]) / settings["tokens"] / added)
        rows.append([
            r["backend"], str(r["followers_asked"]), fmt(r["server_cpu_s"], 1, 2),
            fmt(r["cpu_per_token_follower_s"], 1e6, 1), fmt(marginal, 1e6, 1),
            fmt(r["idle_server_cpu_pct"], 1, 0), fmt(r["idle_per_s"]["statements"], 1, 0),
            pair(r["healthz_s"], ref["healthz_s"]) if r is not ref else pair(r["healthz_s"]),
            rate("statements"), rate("commits"), rate("hub_messages"),
            f"{fmt(r['bench_cpu_s'], 1, 2)} / {fmt(r['other_processes_cores'], 1, 2)}"])
    lines += table(["backend", "F", "server CPU s", "us/token/follower", "marginal",
                    "idle CPU %", "idle SQL/s",
                    "/healthz p50 / p99 ms", "SQL stmts/s", "SQL commits/s",
                    "hub msgs/s", "bench CPU s / others"], rows,
                   indent="  ")
    lines.append("  (rates: per second of reply, one reply active; idle = both workers with F "
                 "followers and no reply; SQL = statements and commits through SQLAlchemy; hub "
                 "msgs = NOTIFYs on the reply's thread channel (postgres) or PUBLISH calls on "
                 "the Redis server (redis); others = CPU cores busy outside our processes)")
    for r in results:
        for kind in ("problems", "warnings"):
            lines += listing(f"{kind} in {r['backend']} F={r['followers_asked']}", r[kind])
    return "\n".join(lines)


# -- command line ------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.hub_bench",
        description="Relay's hub with two workers: per-token lag of websocket followers on the "
                    "generating and the other worker, CPU, /healthz latency, database and "
                    "Redis traffic, per backend (see bench/README.md).")
    parser.add_argument("--backends", default="local,postgres,redis",
                        help="hub backends to measure (default local,postgres,redis)")
    parser.add_argument("--followers", type=levels(5000, "follower count"), default=[1, 200, 1000],
                        help="websocket followers F, half on each worker (default 1,200,1000)")
    parser.add_argument("--tokens", type=int, default=200, help="tokens per reply (200)")
    parser.add_argument("--token-delay-ms", type=float, default=20.0,
                        help="the model's pace between tokens (20)")
    parser.add_argument("--grace-s", type=float, default=3.0,
                        help="how long after the driver's `done` followers may still finish (3)")
    parser.add_argument("--pg-url", default="postgresql://postgres@127.0.0.1:5432/test",
                        help="a PostgreSQL database to connect to; each backend gets a fresh "
                             "database beside it, dropped afterwards")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379",
                        help="the Redis server (default redis://127.0.0.1:6379)")
    parser.add_argument("--redis-db", type=int, default=11,
                        help="Redis database number, flushed before and after (11)")
    parser.add_argument("--no-pin", action="store_true",
                        help="do not pin the server to CPU 0 and the clients to CPU 1")
    parser.add_argument("--no-db-probe", action="store_true",
                        help="do not count the server's SQL statements (a sitecustomize)")
    parser.add_argument("--no-warmup", action="store_true",
                        help="skip the unmeasured warm-up reply of each backend")
    relay_setting(parser, "--throttle-ms", "STREAM_THROTTLE_MS", int)
    run_args(parser)
    args = parser.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not args.backends or any(b not in BACKENDS for b in args.backends):
        parser.error(f"--backends takes a comma-separated subset of {','.join(BACKENDS)}")
    if not 1 <= args.tokens <= 20_000 or args.token_delay_ms < 0:
        parser.error("--tokens must be within 1..20000, --token-delay-ms not negative")
    if args.worker_connections < max(args.followers) // 2 + 50:
        parser.error("--worker-connections must hold half the followers plus 50")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_fd_limit(max(4096, max(args.followers) * 2 + 512))
    sys.setswitchinterval(0.0005)  # the reader, driver and sampler threads share one GIL
    bench = Bench(args)
    results: list[dict[str, Any]] = []
    servers: dict[str, dict[str, Any]] = {}
    settings = {"tokens": args.tokens, "token_delay_ms": args.token_delay_ms,
                "followers": args.followers, "backends": args.backends,
                "grace_s": args.grace_s, "db_probe": not args.no_db_probe,
                **writer_settings(args.throttle_ms),
                **environment(args.worker_connections, "gevent", "gunicorn", "websocket-client",
                              "psycopg", "redis")}

    def measure() -> None:
        settings["pinning"] = (f"server on CPU {SERVER_CPU}, clients and fake on CPU "
                               f"{CLIENT_CPU}" if bench.pinned else "not pinned")
        for backend in args.backends:
            print(f"{backend}: starting Relay with 2 workers ...", flush=True)
            try:
                with bench.backend(backend):
                    health = bench.health_of()
                    hub = health.get("hub", {})
                    servers[backend] = {"database": health.get("database", {}).get("dialect"),
                                        "hub": hub.get("backend", "?"), "healthz": health}
                    if not args.no_warmup:
                        print(f"{backend}: warm-up reply (not measured) ...", flush=True)
                        bench.warm_up(backend)
                    for n in args.followers:
                        print(f"{backend}: F={n} ...", flush=True)
                        results.append(bench.run_batch(backend, n, f"{backend} F={n}"))
            except (BenchError, ImportError, OSError, RuntimeError) as err:
                # A service or its client is missing (or went away): say so, go on.
                entry = servers.setdefault(backend, {"database": "-", "hub": "-"})
                entry["error"] = f"{type(err).__name__}: {err}"
                print(f"{backend}: stopped: {entry['error']}", flush=True)

    status = run(bench, measure)
    settings.setdefault("pinning", "not pinned")
    print()
    print(render(settings, results, servers))
    for backend, log in bench.logs.items():
        findings, counts, noteworthy = scan_log(log, ("Booting worker",))
        print_log(f"{backend}: {counts['Booting worker']} worker boot(s), {len(noteworthy)} "
                  "other noteworthy line(s)", noteworthy)
    if args.json:
        write_json(args.json, {"settings": settings, "servers": servers, "batches": results,
                               "gunicorn_logs": {k: scan_log(v, ())[0]
                                                 for k, v in bench.logs.items()}})
    stopped = any(s.get("error") for s in servers.values())
    if status == 0 and (stopped or any(r["problems"] for r in results)):
        status = 2
    return status


if __name__ == "__main__":
    sys.exit(main())
