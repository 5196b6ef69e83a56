"""Soak and chaos: Relay with two workers under load and faults for minutes, then checked.

Starts, all on 127.0.0.1 and all ended with this process (Ctrl-C, a crash, a kill): a private
PostgreSQL cluster (initdb into the work dir), a private Redis, Relay under gunicorn with two
gevent workers (pinned to one CPU), and the fake model in this process (on the other CPU,
with the clients: gevent greenlets, one per reply slot, websocket follower and poller).
During --duration it keeps --replies replies running, kills a worker every --kill-every
seconds, restarts PostgreSQL once and Redis once; then it lets the replies end, continues
every reply that did not complete, and checks what was stored against what the model sent.

    python -m bench.soak [--duration 300] [--replies 200] [--ws 1000] [--pollers 100]

bench/README.md ("Soak and chaos") says what is checked and how.
"""

from __future__ import annotations

if __name__ == "__main__":  # the clients are greenlets: patch before anything imports socket
    from gevent import monkey

    monkey.patch_all()

import argparse  # noqa: E402 - after the monkey-patch
import contextlib  # noqa: E402
import html as html_lib  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import pwd  # noqa: E402
import random  # noqa: E402
import shutil  # noqa: E402
import signal  # noqa: E402
import socket  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections import Counter  # noqa: E402
from dataclasses import dataclass, field  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import gevent  # noqa: E402
import gevent.pool  # noqa: E402
import websocket  # noqa: E402

from bench.fake_upstream import interrupt_on_sigterm  # noqa: E402
from bench.follower_bench import _ARTICLE, _BODY, _TAG  # noqa: E402
from bench.harness import (  # noqa: E402
    CLIENT_CPU,
    SERVER_CPU,
    get_json,
    memory_of,
    pin_clients,
    raise_fd_limit,
    scan_log,
    write_json,
)
from bench.relay_client import TERMINAL_EVENTS, RelayClient  # noqa: E402
from bench.relay_server import RelayServer, free_port  # noqa: E402
from bench.sse_client import SSEConnection  # noqa: E402
from models import TERMINAL_STATUSES  # noqa: E402
from streaming.sse import decode_delta  # noqa: E402
from tests.services import RedisServer, _die_with_parent, _wait  # noqa: E402

REQUEST_TIMEOUT_S = 30.0
REPLIES_PER_THREAD = 4  # then a slot starts a new thread, so histories stay short
CONTINUE_TRIES = 5  # continues of one reply before it counts as never completed
DRAIN_TIMEOUT_S = 120.0  # after the load: how long running replies may take to end
DB_WINDOW_SLACK_S = 10.0  # 503s this long after PostgreSQL is back still count as its own
RSS_TOLERANCE = 0.10
# The most connections an idle worker keeps open to each service: the database pool
# (DB_POOL_SIZE) and the hub's listener; the hub's and the rate limiter's Redis pools; the
# model client's kept-alive connections (the openai SDK's pool keeps up to 100).
POOLS = {"postgres": 5 + 2, "redis": 10, "model": 100}


# -- the fake model, in its own process (bench/soak_model.py) ---------------------------------
class RemoteModel:
    """The soak's fake model as a child process with plain threads, read over HTTP."""

    def __init__(self, token_delay_s: float, seed: int) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "bench.soak_model", "--token-delay-ms",
             str(token_delay_s * 1000), "--seed", str(seed)],
            stdout=subprocess.PIPE, text=True, preexec_fn=_die_with_parent)
        assert self.process.stdout is not None
        line = self.process.stdout.readline().strip()
        if not line.isdigit():
            self.process.kill()
            raise RuntimeError(f"the fake model did not start: {line!r}")
        self.port = int(line)
        self.url = f"http://127.0.0.1:{self.port}/v1"

    def _get(self, path: str) -> Any:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=REQUEST_TIMEOUT_S)
        try:
            conn.request("GET", path)
            return json.loads(conn.getresponse().read())
        finally:
            conn.close()

    def transcript(self) -> dict[str, list[dict[str, Any]]]:
        return self._get("/_soak/transcript")

    @property
    def active_streams(self) -> int:
        return self._get("/_soak/streams")["active"]

    @property
    def max_active_streams(self) -> int:
        return self._get("/_soak/streams")["max"]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


# -- private PostgreSQL ------------------------------------------------------------------------
def postgres_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"),
                   key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit()
                   else 0)
    if not found:
        raise RuntimeError("no PostgreSQL server in /usr/lib/postgresql/*/bin")
    return found[-1].parent


class PrivatePostgres:
    """A throw-away cluster in `workdir` on a free port, run as the postgres user when root.

    Restarted at will; dies with this process (PR_SET_PDEATHSIG)."""

    def __init__(self, workdir: Path, max_connections: int) -> None:
        self.bin = postgres_bin()
        self.dir = workdir / "pg"
        self.port = free_port()
        self.max_connections = max_connections
        self.log_path = workdir / "postgres.log"
        self.process: subprocess.Popen | None = None
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/relay"

    def _as_owner(self) -> None:
        if self.user is not None:
            os.setgid(self.user.pw_gid)
            os.setuid(self.user.pw_uid)
        os.sched_setaffinity(0, {SERVER_CPU})
        _die_with_parent()  # after setuid, which clears it

    def init(self) -> PrivatePostgres:
        self.dir.mkdir()
        if self.user is not None:
            os.chown(self.dir.parent, self.user.pw_uid, self.user.pw_gid)
            os.chown(self.dir, self.user.pw_uid, self.user.pw_gid)
        subprocess.run([str(self.bin / "initdb"), "-D", str(self.dir), "-U", "postgres",
                        "--auth=trust", "-E", "UTF8", "--no-sync"], check=True,
                       capture_output=True, preexec_fn=self._as_owner)
        self.start()
        import psycopg

        with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres", autocommit=True) as c:
            c.execute("CREATE DATABASE relay")
        return self

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(self.bin / "postgres"), "-D", str(self.dir), "-p", str(self.port),
                 "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1",
                 "-c", f"max_connections={self.max_connections}",
                 # A clean shutdown is all this cluster sees: durability is not measured here.
                 "-c", "fsync=off", "-c", "synchronous_commit=off"],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=self._as_owner)
        _wait(self.accepts, 30, "the private PostgreSQL did not start", interval=0.2)

    def accepts(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url.rsplit("/", 1)[0] + "/postgres",
                                 connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        """Fast shutdown (SIGINT): every connection is cut, as in a real restart."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


# -- what the clients saw ----------------------------------------------------------------------
class Statuses:
    """Every HTTP status the clients got, with when; 5xx split by cause."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, int]] = Counter()
        self.server_errors: list[tuple[float, str, int]] = []

    def note(self, what: str, status: int) -> None:
        self.counts[(what, status)] += 1
        if status >= 500:
            self.server_errors.append((time.monotonic(), what, status))


@dataclass
class ReplyRun:
    """One reply a slot asked for, and what its driver saw."""

    slot: int
    prompt: str
    thread_id: int
    message_id: int
    posted: float
    driven: bool  # its driver read the SSE stream
    sse_text: str = ""
    sse_terminal: str | None = None
    status: str | None = None  # the last status the slot saw
    first_end: float | None = None  # when the slot saw it end, before any continue
    continues: int = 0
    continue_refused: list[int] = field(default_factory=list)


@dataclass
class FollowerSeen:
    """What one follower saw of each reply: its last state, and when it (re)connected."""

    kind: str
    index: int
    last: dict[int, tuple[str, str]] = field(default_factory=dict)  # message -> status, text
    connected_at: dict[int, float] = field(default_factory=dict)  # thread -> last connect
    replies_of: dict[int, set[int]] = field(default_factory=dict)  # thread -> replies seen
    # Polls whose text was not an extension of the poll before: (message, t before, t, chars
    # of the earlier text not kept)
    went_back: list[tuple[int, float, float, int, str]] = field(default_factory=list)
    seen_at: dict[int, float] = field(default_factory=dict)  # message -> time of last poll
    reconnects: int = 0
    frames: int = 0  # websocket frames received, or poll answers read
    errors: Counter = field(default_factory=Counter)

    def settled(self, thread_id: int) -> int:
        """The newest message of the thread before which this follower has seen every
        reply end (0: none)."""
        seen = self.replies_of.get(thread_id, set())
        running = [i for i in seen if self.last[i][0] not in TERMINAL_STATUSES]
        return min(running) - 1 if running else max(seen, default=0)


def normal(text: str) -> str:
    return " ".join(text.split())


def frame_replies(frame: str) -> list[tuple[int, str, str]]:
    """(message id, status, plain text) of every assistant message in a websocket frame."""
    out = []
    for match in _ARTICLE.finditer(frame):
        if 'data-role="assistant"' not in match.group(0)[:400]:
            continue
        body = _BODY.search(match.group(3))
        text = html_lib.unescape(_TAG.sub(" ", body.group(1))) if body else ""
        out.append((int(match.group(1)), match.group(2), text))
    return out


def _wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- the run -----------------------------------------------------------------------------------
class Soak:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.rng = random.Random(args.seed)
        self.workdir = Path(tempfile.mkdtemp(prefix="soak-"))
        self.run_id = f"{args.seed:x}{int(time.time()) % 100000:x}"
        self.statuses = Statuses()
        self.replies: list[ReplyRun] = []
        self.followers: list[FollowerSeen] = []
        self.slot_thread: dict[int, int] = {}
        self.slot_message: dict[int, int] = {}
        self.slot_client: dict[int, RelayClient] = {}
        self.faults: list[dict[str, Any]] = []
        self.db_windows: list[tuple[float, float]] = []
        self.replayed = 0  # prompts sent again that Relay had stored the first time
        self.loading = True  # slots post new prompts
        self.following = True  # followers keep following
        self.rss: dict[int, list[tuple[float, int]]] = {}
        self.fds: dict[int, list[tuple[float, int]]] = {}  # pid -> (t, open fds)
        self.model: RemoteModel | None = None
        self.pg: PrivatePostgres | None = None
        self.redis: RedisServer | None = None
        self.server: RelayServer | None = None
        self.capture: subprocess.Popen | None = None
        self.capture_port: int | None = None  # Relay's way to the model, when recorded
        self.t0 = time.monotonic()

    # -- servers ---------------------------------------------------------------------------
    def start(self) -> None:
        raise_fd_limit(65536)
        pinned = pin_clients()
        print(f"work dir {self.workdir}; clients and fake model pinned to CPU {CLIENT_CPU}: "
              f"{pinned}", flush=True)
        self.model = RemoteModel(self.args.token_delay_ms / 1000, self.args.seed)
        self.pg = PrivatePostgres(self.workdir, self.args.max_connections).init()
        self.redis = RedisServer(self.workdir)
        self.redis_start_pinned()
        model_url = self.model.url
        if self.args.capture:
            # Relay talks to the model through a recording proxy: the bytes on the wire.
            port = free_port()
            self.capture_port = port
            self.capture = subprocess.Popen(
                [sys.executable, "-m", "bench.tcp_capture", "--listen", str(port),
                 "--to", f"127.0.0.1:{self.model.port}", "--dir", self.args.capture],
                stdout=subprocess.DEVNULL)
            _wait_for_port(port)
            model_url = f"http://127.0.0.1:{port}/v1"
        env = {"CHAT_PROVIDER": "openai", "OPENAI_BASE_URL": model_url,
               "OPENAI_API_KEY": "soak", "SECRET_KEY": "soak", "DATABASE_URL": self.pg.url,
               "REDIS_URL": self.redis.url(), "RATE_LIMIT": "1000000/minute",
               "WORKER_CONNECTIONS": str(self.args.worker_connections),
               "HEALTH_DIAGNOSTICS": "1", "ACCESS_LOG": ""}
        self.server = RelayServer(env, self.workdir, workers=2, preexec_fn=self._server_proc)
        self.server.start(timeout=60)

    @staticmethod
    def _server_proc() -> None:
        os.sched_setaffinity(0, {SERVER_CPU})
        _die_with_parent()

    def redis_start_pinned(self) -> None:
        assert self.redis is not None
        self.redis.start()
        with contextlib.suppress(OSError):
            os.sched_setaffinity(self.redis.process.pid, {SERVER_CPU})

    def stop(self) -> None:
        self.following = self.loading = False
        if self.server is not None:
            self.server.stop()
        if self.redis is not None:
            self.redis.stop()
        if self.pg is not None:
            self.pg.stop()
        if self.model is not None:
            self.model.stop()
        if self.capture is not None:
            self.capture.kill()
            self.capture.wait()

    def now(self) -> float:
        return time.monotonic() - self.t0

    def workers(self) -> list[int]:
        assert self.server is not None
        return sorted(self.server.worker_pids())

    def worker_health(self, tries: int = 60) -> dict[int, dict[str, Any]]:
        """/healthz of each worker, on fresh connections until both have answered."""
        assert self.server is not None
        seen: dict[int, dict[str, Any]] = {}
        for _ in range(tries):
            with contextlib.suppress(OSError, ValueError):
                body = get_json(self.server.base_url + "/healthz", timeout=10)
                seen[body["worker"]] = body
            if len(seen) >= 2:
                break
        return seen

    def idle_readings(self) -> dict[int, dict[str, Any]]:
        out = {}
        for pid, health in sorted(self.worker_health().items()):
            out[pid] = {**memory_of(pid), "sockets": self.sockets_of(pid),
                        "greenlets": health["diagnostics"]["greenlets"],
                        "greenlet_kinds": health["diagnostics"]["greenlet_kinds"],
                        "hub_subscribers": health["hub"].get("subscribers"),
                        "ws_followers": health["followers"]["followers"],
                        "active_generations": health["active_generations"]}
        return out

    def sockets_of(self, pid: int) -> dict[str, int]:
        """A worker's TCP sockets by what they reach: PostgreSQL, Redis, the model, other."""
        assert self.pg and self.redis and self.model and self.server
        names = {self.pg.port: "postgres", self.redis.port: "redis",
                 self.model.port: "model", self.server.port: "listening/clients"}
        if self.capture_port is not None:
            names[self.capture_port] = "model"
        inodes = set()
        with contextlib.suppress(OSError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        inodes.add(link[8:-1])
        counts: Counter[str] = Counter()
        for table_name in ("tcp", "tcp6"):
            with contextlib.suppress(OSError), open(f"/proc/net/{table_name}") as table:
                for line in table.readlines()[1:]:
                    fields = line.split()
                    if fields[9] in inodes:
                        local = int(fields[1].rsplit(":", 1)[1], 16)
                        remote = int(fields[2].rsplit(":", 1)[1], 16)
                        counts[names.get(remote, names.get(local, "other"))] += 1
        return dict(counts)

    # -- clients ---------------------------------------------------------------------------
    def client(self) -> RelayClient:
        assert self.server is not None
        for _ in range(30):
            try:
                return RelayClient(self.server.base_url, timeout=REQUEST_TIMEOUT_S).open()
            except (OSError, RuntimeError):
                gevent.sleep(1)
        raise RuntimeError("could not open a browser session")

    def post(self, client: RelayClient, path: str, what: str,
             payload: dict | None = None) -> Any:
        """POST until an answer that is not a 503 or a cut connection (bounded); the answer."""
        for _ in range(60):
            try:
                answer = client.post_json(path, payload)
            except (OSError, http.client.HTTPException):
                self.statuses.note(what, 0)
                gevent.sleep(1)
                continue
            self.statuses.note(what, answer.status)
            if answer.status in (502, 503, 504):
                gevent.sleep(1)
                continue
            return answer
        return None

    def send_prompt(self, client: RelayClient, thread_id: int,
                    prompt: str) -> dict[str, Any] | None:
        """Post a prompt as a careful API client does: with an Idempotency-Key, so that
        trying again after a lost answer (a cut connection, no answer in 30 s: the first
        try may still be served, late) stores the prompt once. None: refused (a 409 waits a
        second first, so a busy thread is not asked in a loop)."""
        path = f"/threads/{thread_id}/messages"
        key = {"Idempotency-Key": prompt.split(":")[0].replace(" ", "-")}
        for _ in range(60):
            try:
                answer = client.post_json(path, {"content": prompt}, **key)
            except (OSError, http.client.HTTPException):
                self.statuses.note("POST message", 0)
                gevent.sleep(1)
                continue
            self.statuses.note("POST message", answer.status)
            if answer.status in (502, 503, 504):
                gevent.sleep(1)
                continue
            if answer.status == 201:
                if answer.headers.get("Idempotent-Replayed") == "true":
                    self.replayed += 1
                return answer.json()
            gevent.sleep(1)
            return None
        return None

    def message(self, client: RelayClient, message_id: int) -> dict[str, Any] | None:
        try:
            answer = client.get_json(f"/messages/{message_id}")
        except (OSError, http.client.HTTPException):
            self.statuses.note("GET message", 0)
            return None
        self.statuses.note("GET message", answer.status)
        return answer.json() if answer.status == 200 else None

    def wait_terminal(self, client: RelayClient, message_id: int, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.message(client, message_id)
            if found and found["status"] in TERMINAL_STATUSES:
                return found["status"]
            gevent.sleep(1)
        return None

    def slot(self, index: int) -> None:
        client = self.client()
        self.slot_client[index] = client
        n = 0
        thread_id = None
        while self.loading:
            if thread_id is None or n % REPLIES_PER_THREAD == 0:
                answer = self.post(client, "/threads", "POST /threads")
                if answer is None or answer.status != 201:
                    gevent.sleep(1)
                    continue
                thread_id = answer.json()["thread"]["id"]
                self.slot_thread[index] = thread_id
            n += 1
            prompt = f"soak {self.run_id} s{index}n{n}: tell me something"
            sent = self.send_prompt(client, thread_id, prompt)
            if sent is None:
                continue
            reply = ReplyRun(index, prompt, thread_id, sent["assistant_message"]["id"],
                             self.now(), driven=self.rng.random() < 0.7)
            self.replies.append(reply)
            self.slot_message[index] = reply.message_id
            if reply.driven:
                self.drive(client, reply, sent["stream_url"])
            reply.status = self.wait_terminal(client, reply.message_id, DRAIN_TIMEOUT_S)
            reply.first_end = self.now()

    def drive(self, client: RelayClient, reply: ReplyRun, stream_url: str) -> None:
        """Read the reply's stream as a tab does: reconnect with the last id when cut."""
        last_id = None
        pieces: list[str] = []
        for _ in range(20):
            try:
                conn = SSEConnection(client.base_url + stream_url, cookies=client.cookie_header(),
                                     last_event_id=last_id, timeout=REQUEST_TIMEOUT_S)
            except (OSError, http.client.HTTPException):
                self.statuses.note("GET stream", 0)
                gevent.sleep(1)
                continue
            self.statuses.note("GET stream", conn.status)
            if conn.status != 200:
                conn.close()
                gevent.sleep(1)
                continue
            try:
                with conn:
                    for event in conn:
                        if event.event in TERMINAL_EVENTS:
                            reply.sse_terminal = event.event
                            reply.sse_text = "".join(pieces)
                            return
                        if event.event == "delta":
                            pieces.append(decode_delta(event.data))
                            last_id = event.id
            except (OSError, http.client.HTTPException):
                pass
            gevent.sleep(self.rng.uniform(0.2, 1.0))  # as EventSource's retry
        reply.sse_text = "".join(pieces)

    def ws_follower(self, seen: FollowerSeen) -> None:
        assert self.server is not None
        slot = seen.index % self.args.replies
        base = self.server.base_url.replace("http://", "ws://")
        while self.following:
            thread_id = self.slot_thread.get(slot)
            client = self.slot_client.get(slot)
            if thread_id is None or client is None:
                gevent.sleep(0.5)
                continue
            try:
                # As a page that polls what it missed while its socket was closed: the
                # first frame brings every message after the last one seen at its end.
                after = seen.settled(thread_id)
                ws = websocket.create_connection(f"{base}/threads/{thread_id}/ws?after={after}",
                                                 cookie=client.cookie_header(),
                                                 timeout=REQUEST_TIMEOUT_S)
            except websocket.WebSocketBadStatusException as err:
                self.statuses.note("ws upgrade", err.status_code)
                seen.errors[f"upgrade {err.status_code}"] += 1
                gevent.sleep(1)
                continue
            except (OSError, websocket.WebSocketException) as err:
                self.statuses.note("ws upgrade", 0)
                seen.errors[type(err).__name__] += 1
                gevent.sleep(1)
                continue
            self.statuses.note("ws upgrade", 101)
            seen.connected_at[thread_id] = self.now()
            leave_at = self.now() + self.rng.expovariate(1 / 90)  # some reconnect at random
            try:
                ws.settimeout(1.0)
                while self.following and self.slot_thread.get(slot) == thread_id:
                    if self.loading and self.now() > leave_at:
                        seen.reconnects += 1
                        break
                    try:
                        frame = ws.recv()
                    except websocket.WebSocketTimeoutException:
                        continue
                    if not frame:
                        break
                    seen.frames += 1
                    for message_id, status, text in frame_replies(frame):
                        seen.last[message_id] = (status, text)
                        seen.replies_of.setdefault(thread_id, set()).add(message_id)
            except (OSError, websocket.WebSocketException) as err:
                seen.errors[f"{type(err).__name__}: {str(err)[:60]}"] += 1
            finally:
                with contextlib.suppress(Exception):
                    ws.abort()
                    ws.close(timeout=0.5)
            gevent.sleep(self.rng.uniform(0.1, 2.0))

    def poller(self, seen: FollowerSeen) -> None:
        slot = seen.index % self.args.replies
        interval = 1.0
        while self.following:
            client = self.slot_client.get(slot)
            message_id = self.slot_message.get(slot)
            if client is None or message_id is None:
                gevent.sleep(0.5)
                continue
            found = self.message(client, message_id)
            if found is not None:
                seen.frames += 1
                before = seen.last.get(message_id)
                text = found["content"]
                if before is not None and not text.startswith(before[1]) and \
                        before[0] not in TERMINAL_STATUSES:
                    kept = len(os.path.commonprefix([before[1], text]))
                    seen.went_back.append((message_id, seen.seen_at[message_id], self.now(),
                                           len(before[1]) - kept,
                                           f"{before[0]} {len(before[1])} chars, then "
                                           f"{found['status']} {len(text)} chars"))
                seen.last[message_id] = (found["status"], text)
                seen.seen_at[message_id] = self.now()
            gevent.sleep(interval * self.rng.uniform(0.8, 1.2))

    # -- faults ----------------------------------------------------------------------------
    def fault(self, kind: str, at: float, **detail: Any) -> None:
        """Note a fault injected at `at` (seconds into the load)."""
        self.faults.append({"t": round(at, 1), "kind": kind, **detail})
        print(f"  t={at:6.1f}s  {kind} {detail}", flush=True)

    def kill_worker(self) -> None:
        pids = self.workers()
        if not pids:
            return
        victim = pids[len(self.faults) % len(pids)]
        at = self.now()
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = self.workers()
            if len(now) == 2 and victim not in now:
                break
            gevent.sleep(0.2)
        self.fault("worker SIGKILL", at, pid=victim,
                   replaced_by=sorted(set(self.workers()) - set(pids)))

    def restart_postgres(self) -> None:
        assert self.pg is not None
        at, down = self.now(), time.monotonic()
        self.pg.stop()
        gevent.sleep(2)  # down for a moment, as a restart with a failover would be
        self.pg.start()
        self.db_windows.append((down, time.monotonic() + DB_WINDOW_SLACK_S))
        self.fault("PostgreSQL restart", at, down_s=round(time.monotonic() - down, 1))

    def restart_redis(self) -> None:
        assert self.redis is not None
        at, down = self.now(), time.monotonic()
        self.redis.stop()
        gevent.sleep(2)
        self.redis_start_pinned()
        self.fault("Redis restart", at, down_s=round(time.monotonic() - down, 1))

    def chaos(self) -> None:
        d = self.args.duration
        plan = [(t, self.kill_worker) for t in range(self.args.kill_every, d,
                                                      self.args.kill_every)]
        plan += [(int(d * 0.45), self.restart_postgres), (int(d * 0.75), self.restart_redis)]
        for at, action in sorted(plan, key=lambda p: p[0]):
            gevent.sleep(max(0.0, at - self.now()))
            if not self.loading:
                return
            gevent.spawn(action).join()

    def sample_rss(self) -> None:
        while self.following:
            for pid in self.workers():
                reading, now = memory_of(pid), self.now()
                if reading["vm_rss_kib"]:
                    self.rss.setdefault(pid, []).append((now, reading["vm_rss_kib"]))
                if reading["fds"] is not None:
                    self.fds.setdefault(pid, []).append((now, reading["fds"]))
            gevent.sleep(5)

    # -- the phases ------------------------------------------------------------------------
    def measure(self) -> dict[str, Any]:
        a = self.args
        baseline = self.idle_readings()
        print(f"idle before the load: {baseline}", flush=True)
        self.t0 = time.monotonic()
        sampler = gevent.spawn(self.sample_rss)
        self.followers = [FollowerSeen("ws", i) for i in range(a.ws)] + \
            [FollowerSeen("poll", i) for i in range(a.pollers)]
        group = [gevent.spawn(self.slot, i) for i in range(a.replies)]
        followers = [gevent.spawn(self.ws_follower if f.kind == "ws" else self.poller, f)
                     for f in self.followers]
        chaos = gevent.spawn(self.chaos)
        progress = gevent.spawn(self.progress)
        gevent.sleep(a.duration)
        self.loading = False
        chaos.kill()
        print(f"t={self.now():.0f}s load stopped; waiting for running replies ...", flush=True)
        gevent.joinall(group, timeout=DRAIN_TIMEOUT_S + 30)
        continued = self.continue_all()
        gevent.sleep(5)  # the last frames reach the followers
        self.following = False
        gevent.joinall(followers, timeout=30)
        progress.kill()
        sampler.kill()
        gevent.sleep(a.settle_s)  # closed sockets, ended greenlets, dropped subscriptions
        after = self.idle_readings()
        print(f"idle after the load: {after}", flush=True)
        return {"baseline": baseline, "after": after, "continued": continued}

    def progress(self) -> None:
        while True:
            gevent.sleep(15)
            done = sum(r.status == "complete" for r in self.replies)
            print(f"  t={self.now():6.1f}s  replies {len(self.replies)} ({done} complete), "
                  f"model streams {self.model.active_streams}, 5xx "
                  f"{len(self.statuses.server_errors)}", flush=True)

    def continue_all(self) -> dict[str, int]:
        """Continue every reply that did not complete until it does (CONTINUE_TRIES each)."""
        todo = [r for r in self.replies if r.status != "complete"]
        print(f"t={self.now():.0f}s continuing {len(todo)} replies ...", flush=True)
        pool = gevent.pool.Pool(50)

        def resume(reply: ReplyRun) -> None:
            client = self.slot_client[reply.slot]
            for _ in range(CONTINUE_TRIES):
                found = self.message(client, reply.message_id)
                if found is None:
                    gevent.sleep(1)
                    continue
                if found["status"] == "complete":
                    reply.status = "complete"
                    return
                if found["status"] not in TERMINAL_STATUSES:
                    reply.status = self.wait_terminal(client, reply.message_id, DRAIN_TIMEOUT_S)
                    continue
                answer = self.post(client, f"/messages/{reply.message_id}/continue",
                                   "POST continue")
                if answer is None or answer.status != 202:
                    reply.continue_refused.append(answer.status if answer else 0)
                    continue
                reply.continues += 1
                reply.status = self.wait_terminal(client, reply.message_id, DRAIN_TIMEOUT_S)
                if reply.status == "complete":
                    return

        pool.map(resume, todo)
        return {"replies": len(todo), "continues": sum(r.continues for r in todo),
                "completed": sum(r.status == "complete" for r in todo)}


# -- the checks --------------------------------------------------------------------------------
def stored_replies(url: str) -> dict[int, tuple[str, str]]:
    import psycopg

    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT id, status, content FROM messages "
                            "WHERE role = 'assistant'").fetchall()
    return {row[0]: (row[1], row[2]) for row in rows}


def check_text(stored: str, status: str, attempts: list[dict[str, Any]],
               killed: bool) -> str | None:
    """Why `stored` is not what the model's requests add up to, or None when it is.

    A request the model itself ended early (an error event, a cut connection) must have
    been kept whole unless a worker was killed meanwhile (`killed`)."""
    if not attempts:
        return None if stored == "" else "stored text but the model never saw the prompt"
    have = ""
    for i, a in enumerate(attempts):
        partial = a["partial"]
        if not partial.startswith(have) or not a_prefix(partial[len(have):],
                                                         attempts[i - 1]["sent"] if i else ""):
            return f"request {i + 1} continued from text the model had not sent before it"
        if i and not killed and attempts[i - 1]["outcome"] in ("error_event", "dropped") \
                and partial != have + attempts[i - 1]["sent"]:
            return (f"request {i} ended by the model ({attempts[i - 1]['outcome']}) kept "
                    f"{len(partial) - len(have)} of the {len(attempts[i - 1]['sent'])} "
                    "chars it sent")
        have = partial
    last = attempts[-1]
    tail = stored[len(have):]
    if not stored.startswith(have):
        return "the stored text does not start with the text last continued"
    if status == "complete":
        if tail != last["sent"] or not last["all_sent"]:
            return (f"complete, but its last part ({len(tail)} chars) is not the model's whole "
                    f"answer ({len(last['sent'])} chars, {last['outcome']})")
    elif not a_prefix(tail, last["sent"]):
        return "its last part is not a prefix of what the model sent"
    return None


def a_prefix(part: str, sent: str) -> bool:
    return sent.startswith(part)


def check(soak: Soak, readings: dict[str, Any]) -> dict[str, Any]:
    assert soak.model is not None and soak.pg is not None
    transcript = soak.model.transcript()
    stored = stored_replies(soak.pg.url)
    problems: list[str] = []
    kill_times = [f["t"] for f in soak.faults if f["kind"] == "worker SIGKILL"]
    details: list[dict[str, Any]] = []  # every reply with a problem, in full, for the JSON
    outcome = Counter()
    for reply in soak.replies:
        status, text = stored.get(reply.message_id, ("missing", ""))
        outcome[status] += 1
        if status in ("pending", "streaming", "missing"):
            problems.append(f"reply {reply.message_id} left {status}")
            continue
        ended = reply.first_end if reply.first_end is not None else float("inf")
        killed = any(reply.posted <= k <= ended for k in kill_times)
        why = check_text(text, status, transcript.get(reply.prompt, []), killed)
        if why:
            problems.append(f"reply {reply.message_id} ({status}): {why}")
            details.append({"message": reply.message_id, "status": status, "stored": text,
                            "driven": reply.driven, "sse_terminal": reply.sse_terminal,
                            "sse_text": reply.sse_text, "posted": reply.posted,
                            "first_end": reply.first_end, "continues": reply.continues,
                            "requests": transcript.get(reply.prompt, [])})
        if reply.driven and reply.continues == 0 and status == "complete" and \
                reply.sse_terminal == "done" and reply.sse_text != text:
            problems.append(f"reply {reply.message_id}: its driver's stream showed "
                            f"{len(reply.sse_text)} chars, stored {len(text)}")
    kinds = Counter(a["kind"] for attempts in transcript.values() for a in attempts[:1])
    # Followers: every end a follower saw has the stored text; a websocket follower
    # connected to a thread before a reply was posted there sees its end; a poller sees the
    # end of the last reply of its slot.
    followers_checked = mismatched = missed = 0
    lost_to_kills: list[int] = []
    for seen in soak.followers:
        slot = seen.index % soak.args.replies
        for message_id, (status, text) in seen.last.items():
            stored_status, stored_text = stored.get(message_id, ("missing", ""))
            if status not in TERMINAL_STATUSES or status != stored_status:
                continue
            followers_checked += 1
            equal = normal(text) == normal(stored_text) if seen.kind == "ws" else \
                text == stored_text
            if not equal:
                mismatched += 1
                problems.append(f"{seen.kind} follower {seen.index}: reply {message_id} "
                                "ended with other text than stored")
        if seen.kind == "ws":
            thread_id = soak.slot_thread.get(slot)
            since = seen.connected_at.get(thread_id, float("inf"))
            owed = [r.message_id for r in soak.replies
                    if r.thread_id == thread_id and r.posted > since]
        else:
            owed = [soak.slot_message[slot]] if slot in soak.slot_message else []
        for message_id in owed:
            status = seen.last.get(message_id, ("unseen", ""))[0]
            if status != stored.get(message_id, ("missing", ""))[0]:
                missed += 1
                problems.append(f"{seen.kind} follower {seen.index}: shows reply "
                                f"{message_id} as {status}, stored "
                                f"{stored.get(message_id, ('missing',))[0]}")
        for message_id, t_before, t_after, lost, how in seen.went_back:
            # Shown live, then lost with a killed worker: the documented throttle window.
            if any(t_before <= k <= t_after for k in kill_times):
                lost_to_kills.append(lost)
            else:
                problems.append(f"poll follower {seen.index}: reply {message_id} lost "
                                f"{lost} chars between polls at {t_before:.1f} and "
                                f"{t_after:.1f} s with no worker killed ({how})")
    # 5xx: only 503s while PostgreSQL restarts.
    causes = Counter()
    for t, what, status in soak.statuses.server_errors:
        in_db = any(a <= t <= b for a, b in soak.db_windows)
        cause = "503 during the PostgreSQL restart" if in_db and status == 503 else \
            f"{status} on {what}"
        causes[cause] += 1
    for cause, n in causes.items():
        if not cause.startswith("503 during"):
            problems.append(f"{n} x {cause}")
    # Leaks and memory.
    base, after = readings["baseline"], readings["after"]
    def unpooled(reading: dict[str, Any]) -> int:
        """Open fds less the kept-alive connections of the worker's pools."""
        pooled = sum(n for k, n in reading["sockets"].items() if k in POOLS)
        return (reading["fds"] or 0) - pooled

    base_fds = max(unpooled(v) for v in base.values())
    for pid, v in after.items():
        if v["hub_subscribers"] or v["ws_followers"]:
            problems.append(f"worker {pid}: {v['hub_subscribers']} hub subscriptions, "
                            f"{v['ws_followers']} followers left after the load")
        if v["active_generations"]:
            problems.append(f"worker {pid}: {v['active_generations']} generations left")
        # Idle, a worker keeps its pools' connections (bounded by the pools): anything
        # else that stays open is a leak.
        if unpooled(v) > base_fds + soak.args.fd_slack:
            problems.append(f"worker {pid}: {unpooled(v)} open fds besides pooled "
                            f"connections after the load, {base_fds} before")
        for kind, most in POOLS.items():
            if v["sockets"].get(kind, 0) > most:
                problems.append(f"worker {pid}: {v['sockets'][kind]} connections to {kind} "
                                f"kept after the load (its pool holds at most {most})")
        if v["greenlets"] > max(b["greenlets"] for b in base.values()) + soak.args.greenlet_slack:
            problems.append(f"worker {pid}: {v['greenlets']} greenlets after the load")
    rss_lives = []
    for pid, samples in soak.rss.items():
        warm = [(t, kib) for t, kib in samples if t >= samples[0][0] + soak.args.warmup_s
                and t >= soak.args.warmup_s]
        if len(warm) < 4:
            continue
        growth = warm[-1][1] / warm[0][1] - 1
        rss_lives.append({"pid": pid, "from_t": warm[0][0], "to_t": warm[-1][0],
                          "rss_kib_warm": warm[0][1], "rss_kib_end": warm[-1][1],
                          "max_kib": max(k for _, k in warm), "growth": round(growth, 3)})
        if growth > RSS_TOLERANCE:
            problems.append(f"worker {pid}: RSS grew {growth:.0%} after warm-up")
    log = soak.server.log() if soak.server else ""
    findings, _, noteworthy = scan_log(log, ())
    return {"problems": problems, "replies": len(soak.replies), "outcomes": dict(outcome),
            "first_request_kinds": dict(kinds), "continued": readings["continued"],
            "model_requests": sum(len(a) for a in transcript.values()),
            "model_chars_sent": sum(len(a["sent"]) for v in transcript.values() for a in v),
            "followers": {"ws": soak.args.ws, "poll": soak.args.pollers,
                          "checked": followers_checked, "mismatched": mismatched,
                          "missed_end": missed, "polls_that_lost_text_to_a_kill":
                          len(lost_to_kills), "most_chars_lost": max(lost_to_kills, default=0),
                          "reconnects": sum(f.reconnects for f in soak.followers),
                          "ws_frames": sum(f.frames for f in soak.followers if f.kind == "ws"),
                          "poll_answers": sum(f.frames for f in soak.followers
                                              if f.kind == "poll"),
                          "errors": dict(sum((f.errors for f in soak.followers), Counter()))},
            "faults": soak.faults, "server_errors": dict(causes),
            # Requests that got no status at all: timed out (REQUEST_TIMEOUT_S) or cut.
            "no_answer": {w: n for (w, st), n in soak.statuses.counts.items() if st == 0},
            "statuses": {f"{w} {s}": n for (w, s), n in sorted(soak.statuses.counts.items())},
            "rss": rss_lives, "idle_before": base, "idle_after": after,
            "rss_samples": {str(pid): samples for pid, samples in soak.rss.items()},
            "fd_samples": {str(pid): samples for pid, samples in soak.fds.items()},
            "log_findings": len(findings), "log_sample": noteworthy[:25],
            "model_peak_streams": soak.model.max_active_streams,
            "prompts_sent_again_and_found_stored": soak.replayed,
            "replies_per_s": round(len(soak.replies) / soak.args.duration, 2),
            "problem_replies": details}


def render(result: dict[str, Any]) -> None:
    print("\n== soak results ==")
    for key in ("replies", "replies_per_s", "model_peak_streams", "outcomes",
                "first_request_kinds", "continued", "model_requests", "model_chars_sent",
                "prompts_sent_again_and_found_stored", "followers", "server_errors",
                "no_answer", "faults"):
        print(f"{key}: {json.dumps(result[key], default=str)}")
    print("RSS per worker life after warm-up:")
    for life in result["rss"]:
        print(f"  {life}")
    print("RSS (MiB) and open fds per worker, every 30 s:")
    for pid, samples in result["rss_samples"].items():
        fds = dict(result["fd_samples"].get(pid, []))
        print(f"  {pid}: " + "  ".join(
            f"t={t:.0f} {kib / 1024:.0f}/{fds.get(t, '?')}" for t, kib in samples[::6]))
    print("idle before:", json.dumps(result["idle_before"]))
    print("idle after: ", json.dumps(result["idle_after"]))
    print(f"gunicorn log: {result['log_findings']} lines of note")
    for line in result["log_sample"][:10]:
        print(f"  {line[:200]}")
    problems = result["problems"]
    print(f"\n{len(problems)} problems" + (":" if problems else ""))
    for p in problems[:60]:
        print(f"  {p}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--duration", type=int, default=300, help="seconds of load (300)")
    p.add_argument("--replies", type=int, default=200, help="replies running at once (200)")
    p.add_argument("--ws", type=int, default=1000, help="websocket followers (1000)")
    p.add_argument("--pollers", type=int, default=100, help="polling followers (100)")
    p.add_argument("--kill-every", type=int, default=60, help="SIGKILL a worker every N s (60)")
    p.add_argument("--token-delay-ms", type=float, default=40.0,
                   help="the model's pause between tokens (40; long replies a third)")
    p.add_argument("--max-connections", type=int, default=100,
                   help="the private PostgreSQL's max_connections (100)")
    p.add_argument("--worker-connections", type=int, default=4000)
    # At the full load a worker's RSS rises for its first 60-90 s and is flat after (within 2 %
    # in three worker lives of 177-319 s): compared from 90 s in, growth means growth.
    p.add_argument("--warmup-s", type=float, default=90.0, help="RSS is compared after this")
    p.add_argument("--settle-s", type=float, default=10.0,
                   help="idle time after the load before the leak readings (10)")
    p.add_argument("--fd-slack", type=int, default=2,
                   help="open fds, besides pooled connections, an idle worker may have over "
                        "a fresh one (2)")
    p.add_argument("--greenlet-slack", type=int, default=20)
    p.add_argument("--seed", type=int, default=14)
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    p.add_argument("--keep-workdir", action="store_true")
    p.add_argument("--capture", metavar="DIR",
                   help="record the bytes between Relay and the model here "
                        "(bench/tcp_capture.py), one file a connection and direction")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    interrupt_on_sigterm()
    soak = Soak(args)
    status = 1
    try:
        soak.start()
        readings = soak.measure()
        result = check(soak, readings)
        render(result)
        if args.json:
            write_json(args.json, result)
        status = 1 if result["problems"] else 0
    except KeyboardInterrupt:
        print("interrupted; stopping everything ...", file=sys.stderr, flush=True)
        status = 130
    finally:
        soak.stop()
        if args.keep_workdir:
            print(f"work dir kept: {soak.workdir}")
        else:
            shutil.rmtree(soak.workdir, ignore_errors=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
