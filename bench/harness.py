"""What the benchmarks share: the servers, a tab, /proc readings, figures, output, the run.

`relay_bench`, `follower_bench` and `failure_bench` each start the fake model as its own process
and Relay under gunicorn with one gevent worker (a `Rig`), drive them from threads of this
process, and print their figures as tables; `run` stops every process whatever happens.
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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any, TypeVar

from bench.fake_upstream import interrupt_on_sigterm
from bench.relay_client import TERMINAL_EVENTS, RelayClient
from bench.relay_server import ROOT, RelayServer, free_port
from bench.sse_client import SSEConnection
from streaming.sse import decode_delta

CLK_TCK = os.sysconf("SC_CLK_TCK")
# Pinned runs: the servers measured on one CPU, the fake model and the clients on another.
SERVER_CPU, CLIENT_CPU = 0, 1
# Every blocking call of a client (a POST, one SSE or websocket read, one poll) gives up after this.
REQUEST_TIMEOUT_S = 30.0
# A batch ends at the latest this long after the reply should have been fully streamed.
BATCH_SLACK_S = 60.0
# Log lines worth reporting, and how many of them to print.
LOG_MARKERS = ("Traceback", "ERROR", "CRITICAL", "WARNING", "headless", "Worker exiting",
               "WORKER TIMEOUT", "Booting worker")
LOG_LINES_SHOWN = 25


class BenchError(RuntimeError):
    """Something stopped the benchmark before it could measure."""


# -- figures -----------------------------------------------------------------------------------
def percentile(values: list[float], q: float) -> float | None:
    """The nearest-rank percentile (q in 0..100): an observed value, never interpolated."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


def summary(values: list[float]) -> dict[str, float | None]:
    """Count, median, p99, max and min of `values` (None for each when there are none)."""
    if not values:
        return {"n": 0, "median": None, "p99": None, "max": None, "min": None}
    return {"n": len(values), "median": statistics.median(values),
            "p99": percentile(values, 99), "max": max(values), "min": min(values)}


def difference(before: float | None, after: float | None) -> float | None:
    """after - before, or None when either reading is missing."""
    return None if before is None or after is None else after - before


# -- the servers' answers ----------------------------------------------------------------------
def get_json(url: str, timeout: float = 10.0) -> Any:
    """GET `url` and decode its JSON body."""
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.loads(resp.read())


def last_user_prompt(body: Any) -> str | None:
    """The last user message of a Chat Completions request body: it names the tab that sent it."""
    if not isinstance(body, dict):
        return None
    for message in reversed(body.get("messages") or []):
        if isinstance(message, dict) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, list):  # with attachments: the prompt is the last text part
                texts = [p.get("text") for p in content
                         if isinstance(p, dict) and p.get("type") == "text"]
                content = texts[-1] if texts else None
            return content if isinstance(content, str) else None
    return None


def health_problems(after: dict[str, Any], before: dict[str, Any] | None = None) -> list[str]:
    """What /healthz says went wrong in a batch: generations left running, failed commits."""
    problems = []
    if after.get("active_generations"):
        problems.append(f"{after['active_generations']} generations still active after the "
                        "batch")
    failures = after["writer"]["failures"] - before["writer"]["failures"] if before else 0
    if failures:
        problems.append(f"the delta writer reported {failures} failed commits")
    return problems


# -- processes, from /proc ---------------------------------------------------------------------
def _stat_fields(pid: int) -> list[str] | None:
    """/proc/<pid>/stat from field 3 (the state) on; None once the process is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces; the fields after it are fixed.
    return stat[stat.rindex(")") + 2:].split()


def cpu_seconds(pid: int) -> float | None:
    """utime + stime of a process, in seconds; None once it is gone."""
    fields = _stat_fields(pid)
    if fields is None:
        return None
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # fields 14 and 15 of stat(5)


def process_gone(pid: int) -> bool:
    """True once `pid` has exited (gone, or a zombie its parent has not reaped yet)."""
    fields = _stat_fields(pid)
    return fields is None or fields[0] in ("Z", "X")


def proc_kib(pid: int, name: str, field_name: str) -> int | None:
    """A `Name:  N kB` line of /proc/<pid>/<name> in KiB; None when unavailable."""
    try:
        with open(f"/proc/{pid}/{name}") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except (FileNotFoundError, PermissionError, ProcessLookupError):
        return None
    return None


def open_fds(pid: int) -> int | None:
    """How many file descriptors a process has open; None when unavailable."""
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except (FileNotFoundError, PermissionError):
        return None


def memory_of(pid: int) -> dict[str, int | None]:
    """A process's resident and proportional memory (KiB) and its open descriptors."""
    return {"vm_rss_kib": proc_kib(pid, "status", "VmRSS"),
            "rss_anon_kib": proc_kib(pid, "status", "RssAnon"),
            "pss_kib": proc_kib(pid, "smaps_rollup", "Pss"),
            "fds": open_fds(pid)}


def host_busy_seconds(cpu: int | None = None) -> float | None:
    """CPU seconds all CPUs of the host (or CPU `cpu` only) spent busy (not idle or waiting
    for I/O) since boot."""
    name = "cpu" if cpu is None else f"cpu{cpu}"
    try:
        with open("/proc/stat") as f:
            line = next((line for line in f if line.split(maxsplit=1)[0] == name), None)
        if line is None:
            return None
        fields = [int(v) for v in line.split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / CLK_TCK


def own_cpu_seconds() -> float:
    """CPU of this process (every client thread), user + system."""
    t = os.times()
    return t.user + t.system


def pin_process(pid: int, cpus: set[int]) -> None:
    """Run every thread of `pid` on `cpus` only (threads and children it starts inherit it)."""
    with contextlib.suppress(FileNotFoundError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(ProcessLookupError):
                os.sched_setaffinity(int(task), cpus)


def pin_clients() -> bool:
    """Move this process to CLIENT_CPU (threads and processes it starts inherit it) when both
    CLIENT_CPU and SERVER_CPU are usable, so that servers pinned to SERVER_CPU get a core of
    their own; whether it did."""
    if not {SERVER_CPU, CLIENT_CPU} <= os.sched_getaffinity(0):
        return False
    os.sched_setaffinity(0, {CLIENT_CPU})
    return True


def raise_fd_limit(wanted: int) -> tuple[int, int]:
    """Raise the soft open-files limit (inherited by the servers we start) towards `wanted`."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# -- the settings of a run ---------------------------------------------------------------------
def version_of(package: str) -> str:
    """The installed version of `package`, or "?"."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "?"


def from_flag(value: Any, default: Any, flag: str) -> tuple[Any, str]:
    """A setting and where it came from: the command line's `flag`, or Relay's default."""
    return (default, "default") if value is None else (value, flag)


def writer_settings(throttle_ms: int | None) -> dict[str, Any]:
    """The delta writer's settings: the throttle (--throttle-ms or Relay's), max lag, chunking."""
    # The server inherits this process's environment, so its defaults are ours.
    from config import Config

    throttle, source = from_flag(throttle_ms, Config.STREAM_THROTTLE_MS, "--throttle-ms")
    return {"throttle_ms": throttle, "throttle_source": source,
            "max_lag_ms": Config.STREAM_MAX_LAG_MS, "chunking": Config.STREAM_CHUNKING}


def environment(worker_connections: int, *packages: str) -> dict[str, Any]:
    """The server's shape, and the versions of Python and `packages`, and the host."""
    return {"workers": 1, "worker_connections": worker_connections,
            "database": "sqlite (temp dir)", "python": platform.python_version(),
            **{package.replace("-", "_"): version_of(package) for package in packages},
            "platform": platform.platform(), "cpu_count": os.cpu_count(),
            "cpus_usable": len(os.sched_getaffinity(0)),
            "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[0]}


# -- the fake model in its own process ---------------------------------------------------------
class FakeUpstreamProcess:
    """`python -m <module> [command] --port P --<option> V ...` on a free port, ended by stop().

    Ready once GET `ready_path` answers JSON (the fake's stats; another module, its own path).
    """

    def __init__(self, workdir: Path, module: str = "bench.fake_upstream", *,
                 command: str | None = None, ready_path: str = "/_fake/stats",
                 **options: float | str) -> None:
        self.port = free_port()
        self.root_url = f"http://127.0.0.1:{self.port}"
        self.url = self.root_url + "/v1"
        self.ready_path = ready_path
        self.log_path = workdir / f"{module.rsplit('.', 1)[-1].replace('_', '-')}-{self.port}.log"
        flags = [part for name, value in options.items()
                 for part in (f"--{name.replace('_', '-')}", str(value))]
        self.argv = [sys.executable, "-m", module, *([command] if command else []),
                     "--host", "127.0.0.1", "--port", str(self.port), *flags]
        self.process: subprocess.Popen | None = None
        self._log: Any = None

    def start(self, timeout: float = 15.0) -> FakeUpstreamProcess:
        """Start the process and wait until its `ready_path` answers."""
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.process = subprocess.Popen(self.argv, cwd=ROOT, stdout=self._log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"{self.argv[2]} exited early:\n{self.log()}")
            try:
                get_json(self.root_url + self.ready_path, timeout=2)
                return self
            except OSError:
                time.sleep(0.1)
        raise BenchError(f"{self.argv[2]} did not answer within {timeout} s:\n{self.log()}")

    def stats(self) -> dict[str, Any]:
        """Every request the fake recorded, with its body."""
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
    """One browser tab driving one reply: its own client (cookie, CSRF token) and thread."""

    index: int
    client: RelayClient
    thread_id: int
    prompt: str
    t0: float | None = None  # right before the POST
    t_posted: float | None = None  # the POST answered
    t_open: float | None = None  # the SSE response's headers arrived
    t_end: float | None = None  # the terminal event arrived
    message_id: int | None = None
    terminal: str | None = None
    pieces: list[str] = field(default_factory=list)  # the text of each delta event
    error: str | None = None
    conn: SSEConnection | None = None

    @property
    def text(self) -> str:
        return "".join(self.pieces)

    def post(self) -> dict[str, Any]:
        """Post the tab's prompt; the answer (both messages and `stream_url`)."""
        self.t0 = time.monotonic()
        sent = self.client.send(self.thread_id, self.prompt)
        self.t_posted = time.monotonic()
        self.message_id = sent["assistant_message"]["id"]
        return sent

    def read(self, stream_url: str, deadline: float = math.inf) -> None:
        """Read the reply's stream to its terminal event, or to its end when it has none."""
        self.conn = self.client.stream(stream_url, timeout=REQUEST_TIMEOUT_S)
        self.t_open = time.monotonic()
        if self.conn.status != 200:
            raise BenchError(f"stream answered {self.conn.status}: {self.conn.body[:200]!r}")
        with self.conn:
            for event in self.conn:
                now = time.monotonic()
                if event.event in TERMINAL_EVENTS:
                    self.terminal, self.t_end = event.event, now
                    return
                if event.event != "delta":
                    continue  # a part of its own (`queued`): not the end
                self.on_delta(decode_delta(event.data), now)
                if now > deadline:
                    raise BenchError("the batch deadline passed mid-stream")

    def on_delta(self, text: str, now: float) -> None:
        """Keep one delta's text; subclasses also note when it came."""
        self.pieces.append(text)

    def close(self) -> None:
        """Disconnect (from any thread): a read in progress ends."""
        if self.conn is not None:
            self.conn.close()


TabT = TypeVar("TabT", bound=Tab)


def finish(runs: Iterable[tuple[Any, threading.Thread]], deadline: float,
           give_up: Callable[[Any], None]) -> None:
    """Join each client's thread by `deadline`; mark the clients still running and `give_up`."""
    runs = list(runs)
    for _, thread in runs:
        thread.join(max(0.0, deadline - time.monotonic()))
    late = [(client, thread) for client, thread in runs if thread.is_alive()]
    for client, _ in late:
        client.error = client.error or "still running at the batch deadline"
        give_up(client)
    for _, thread in late:
        thread.join(5.0)


# -- the fake model and Relay ------------------------------------------------------------------
class Rig:
    """The fake model and Relay under gunicorn with one gevent worker, for one benchmark run."""

    name = "bench"  # names the temp dir and every prompt, so the fake's records can be told apart

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        self.db_path = self.workdir / "relay.sqlite3"
        self.run_id = uuid.uuid4().hex[:8]
        self.fake: FakeUpstreamProcess | None = None
        self.server: RelayServer | None = None
        self.worker_pid: int | None = None  # gunicorn's one worker, once the servers run
        self.server_log = ""
        self.live_tabs: list[Tab] = []

    def start(self) -> None:
        """Start the servers (each benchmark with its own fake and settings)."""
        raise NotImplementedError

    def start_servers(self, fake: FakeUpstreamProcess, **settings: object) -> None:
        """Start `fake`, then Relay against it with `settings` (None: Relay's default)."""
        self.fake = fake
        fake.start()
        self.server = RelayServer(self.server_env(fake, **settings), self.workdir, workers=1)
        self.server.start()
        self.worker_pid = self.single_worker()

    def server_env(self, fake: FakeUpstreamProcess, **settings: object) -> dict[str, str]:
        """Relay's environment against `fake`, SQLite in the temp dir, plus `settings`."""
        return {"CHAT_PROVIDER": "openai", "OPENAI_BASE_URL": fake.url,
                "OPENAI_API_KEY": "bench", "SECRET_KEY": "bench",
                "DATABASE_URL": f"sqlite:///{self.db_path}",
                "ACCESS_LOG": "",
                "WORKER_CONNECTIONS": str(self.args.worker_connections),
                **{name: str(value) for name, value in settings.items() if value is not None}}

    def single_worker(self) -> int:
        """The pid of gunicorn's one worker."""
        assert self.server is not None
        pids = self.server.worker_pids()
        if len(pids) != 1:
            raise BenchError(f"expected one gunicorn worker, found {pids}")
        return pids[0]

    def unblock(self) -> None:
        """Disconnect every client still reading, so that the server can stop."""
        for tab in self.live_tabs:
            tab.close()

    def stop(self) -> None:
        """Stop the clients, then the servers; the server's log stays in `server_log`."""
        self.unblock()
        if self.server is not None:
            self.server.stop()
            self.server_log = self.server.log()
        if self.fake is not None:
            self.fake.stop()

    def health(self) -> dict[str, Any]:
        assert self.server is not None
        return get_json(self.server.base_url + "/healthz")

    def new_client(self) -> RelayClient:
        """A new browser: its own owner cookie and CSRF token."""
        assert self.server is not None
        return RelayClient(self.server.base_url, timeout=REQUEST_TIMEOUT_S).open()

    def prompt(self, label: str) -> str:
        """A prompt no other batch of any run posts."""
        return f"{self.name} {self.run_id} {label}: tell me something"

    def new_tab(self, kind: type[TabT], index: int, label: str) -> TabT:
        """A tab in a browser of its own, with a new thread and its own prompt."""
        client = self.new_client()
        return kind(index, client, client.new_thread(), self.prompt(f"{label} tab {index}"))

    def upstream_records(self, prompts: set[str]) -> dict[str, list[dict[str, Any]]]:
        """The fake's records of `prompts` by prompt, once each of them has an outcome."""
        assert self.fake is not None
        deadline = time.monotonic() + 10.0
        while True:
            by_prompt: dict[str, list[dict[str, Any]]] = {}
            for record in self.fake.stats()["requests"]:
                prompt = last_user_prompt(record.get("body"))
                if prompt in prompts:
                    by_prompt.setdefault(prompt, []).append(record)
            # A client can see a reply end a moment before the fake's thread records its end.
            settled = all(r.get("outcome") for rs in by_prompt.values() for r in rs)
            if settled or time.monotonic() > deadline:
                return by_prompt
            time.sleep(0.05)


def run(rig: Rig, measure: Callable[[], None]) -> int:
    """Start the servers and `measure`, then stop every process whatever happened; the status."""
    interrupt_on_sigterm()  # stop the servers as on Ctrl-C
    status = 0
    try:
        print(f"starting the fake upstream and Relay (work dir {rig.workdir}) ...", flush=True)
        rig.start()
        measure()
    except KeyboardInterrupt:
        print("interrupted; stopping the servers ...", file=sys.stderr, flush=True)
        status = 130
    except (BenchError, RuntimeError, OSError) as err:  # servers failed to start or answer
        print(f"benchmark failed: {err}", file=sys.stderr, flush=True)
        status = 1
    finally:
        rig.stop()
        if rig.args.keep_workdir:
            print(f"work dir kept: {rig.workdir}")
        else:
            shutil.rmtree(rig.workdir, ignore_errors=True)
    return status


# -- output ------------------------------------------------------------------------------------
def fmt(value: float | None, scale: float = 1.0, digits: int = 1) -> str:
    """`value * scale` with thousands separators, or "-" when there is none."""
    return "-" if value is None else f"{value * scale:,.{digits}f}"


def table(header: list[str], rows: list[list[str]], indent: str = "  ",
          min_width: int = 0) -> list[str]:
    """Aligned lines: the first column to the left, the others (at least min_width) right."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h)
              for i, h in enumerate(header)]
    widths = [w if i == 0 else max(w, min_width) for i, w in enumerate(widths)]
    return [indent + "  ".join(f"{c:>{w}}" if i else f"{c:<{w}}"
                               for i, (c, w) in enumerate(zip(row, widths, strict=True)))
            for row in [header, *rows]]


def by_column(spec: list[tuple[str, Callable[[Any], str]]], results: list[Any]) -> list[list[str]]:
    """A table's rows: each label of `spec`, then its cell for each result (one column each)."""
    return [[label, *[cell(r) for r in results]] for label, cell in spec]


def listing(title: str, items: list[str], most: int = 20) -> list[str]:
    """A blank line, `title (n):` and the first `most` items; nothing when there are none."""
    if not items:
        return []
    lines = [f"\n{title} ({len(items)}):", *(f"  {item}" for item in items[:most])]
    if len(items) > most:
        lines.append(f"  ... and {len(items) - most} more (see --json)")
    return lines


def writer_line(s: dict[str, Any]) -> str:
    """The delta writer's settings, for a report's header."""
    return (f"  writer: throttle {s['throttle_ms']} ms ({s['throttle_source']}), max lag "
            f"{s['max_lag_ms']} ms, chunking {s['chunking']}; database {s['database']}")


def server_line(s: dict[str, Any]) -> str:
    """gunicorn's shape, for a report's header."""
    return (f"  server: gunicorn {s['gunicorn']} -k gevent, {s['workers']} worker, "
            f"{s['worker_connections']} worker connections")


def host_line(s: dict[str, Any]) -> str:
    """Python, gevent and the host, for a report's header."""
    return (f"  Python {s['python']}, gevent {s['gevent']}, {s['cpus_usable']} usable CPUs "
            f"(of {s['cpu_count']}), {s['platform']}")


def scan_log(text: str, expected: tuple[str, ...]) -> tuple[list[str], dict[str, int], list[str]]:
    """The log's findings, how many of them hold each `expected` marker, and all the others."""
    findings = [line for line in text.splitlines() if any(m in line for m in LOG_MARKERS)]
    counts = {m: sum(m in line for line in findings) for m in expected}
    noteworthy = [line for line in findings if not any(m in line for m in expected)]
    return findings, counts, noteworthy


def print_log(headline: str, noteworthy: list[str]) -> None:
    """The gunicorn log's summary, then its first noteworthy lines."""
    print(f"\ngunicorn log: {headline}")
    for line in noteworthy[:LOG_LINES_SHOWN]:
        print(f"  {line}")
    if len(noteworthy) > LOG_LINES_SHOWN:
        print(f"  ... and {len(noteworthy) - LOG_LINES_SHOWN} more")


def write_json(path: str, data: dict[str, Any]) -> None:
    """Write the results (anything not JSON as its str()) to `path`, and say so."""
    Path(path).write_text(json.dumps(data, indent=2, default=str) + "\n")
    print(f"results written to {path}")


# -- command line ------------------------------------------------------------------------------
def levels(most: int, what: str) -> Callable[[str], list[int]]:
    """An argparse type: comma-separated counts, each within 1..most."""

    def parse(value: str) -> list[int]:
        try:
            counts = [int(part) for part in value.split(",") if part.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected numbers like 1,10, got {value!r}") from None
        if not counts or any(n < 1 or n > most for n in counts):
            raise argparse.ArgumentTypeError(f"each {what} must be within 1..{most}")
        return counts

    return parse


def relay_setting(parser: argparse.ArgumentParser, flag: str, name: str, kind: type) -> None:
    """A flag that overrides one of Relay's settings (default: Relay's own)."""
    parser.add_argument(flag, type=kind, default=None,
                        help=f"{name} for Relay (default: Relay's default)")


def run_args(parser: argparse.ArgumentParser) -> None:
    """The flags every benchmark has: the worker's connections, --json, --keep-workdir."""
    parser.add_argument("--worker-connections", type=int, default=1000,
                        help="gunicorn WORKER_CONNECTIONS (1000)")
    parser.add_argument("--json", metavar="PATH", help="also write the results as JSON")
    parser.add_argument("--keep-workdir", action="store_true",
                        help="keep the temp dir (database, server logs) and print its path")
