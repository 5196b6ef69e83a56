"""Relay as it runs for users, for tests and benchmarks: gunicorn + gevent in a subprocess."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def connection_owners(pids: Iterable[int], port: int) -> dict[int, int]:
    """Which of `pids` holds the server end of each TCP connection to local `port`.

    Keyed by the client's port: a connection's socket inode (/proc/net/tcp, tcp6) is among
    the owner's descriptors. One pass over each table, so thousands of connections are cheap.
    """
    owner_of: dict[str, int] = {}
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with contextlib.suppress(OSError):
                    link = os.readlink(f"/proc/{pid}/fd/{fd}")
                    if link.startswith("socket:["):
                        owner_of[link[8:-1]] = pid
    owners = {}
    for table_name in ("tcp", "tcp6"):
        with contextlib.suppress(FileNotFoundError), open(f"/proc/net/{table_name}") as table:
            for line in table.readlines()[1:]:
                fields = line.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if int(local.rsplit(":", 1)[1], 16) == port and inode in owner_of:
                    owners[int(remote.rsplit(":", 1)[1], 16)] = owner_of[inode]
    return owners


class RelayServer:
    """`gunicorn -k gevent wsgi:app` on a free port, its schema migrated first."""

    def __init__(self, env: dict[str, str], workdir: Path, *, workers: int = 1,
                 command: list[str] | None = None, setup: list[list[str]] | None = None,
                 cwd: Path = ROOT, preexec_fn: Callable[[], None] | None = None) -> None:
        """With `command` (a service manager's command line, say), run it in `cwd` after
        the `setup` commands, in exactly `env`, which names its PORT; else gunicorn as
        `make run` does, on a free port, in this environment plus `env`. `preexec_fn` runs
        in the server's process before it starts (pinning it to a core, say)."""
        self.workdir = workdir
        self.cwd = cwd
        if command is None:
            self.port = free_port()
            self.env = {**os.environ, "HOST": "127.0.0.1", "PORT": str(self.port),
                        "WEB_CONCURRENCY": str(workers), "ACCESS_LOG": "",
                        "PYTHONUNBUFFERED": "1", **env}
            flask = str(Path(sys.executable).parent / "flask")
            self.setup = [[flask, "--app", "app", "db", "upgrade"]]
            self.command = [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py",
                            "wsgi:app"]
        else:
            self.port = int(env["PORT"])
            self.env, self.setup, self.command = dict(env), setup or [], command
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / f"gunicorn-{self.port}.log"
        self.process: subprocess.Popen | None = None
        self.preexec_fn = preexec_fn  # run in gunicorn's process before it starts (pinning)

    def start(self, timeout: float = 120.0) -> RelayServer:
        for step in self.setup:
            done = subprocess.run(step, cwd=self.cwd, env=self.env, capture_output=True,
                                  text=True)
            if done.returncode != 0:
                raise RuntimeError(f"{step} failed:\n{done.stdout}{done.stderr}")
        self._log = open(self.log_path, "ab")  # noqa: SIM115 - lives as long as the server
        self.process = subprocess.Popen(
            self.command, cwd=self.cwd, env=self.env, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=self.preexec_fn)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"gunicorn exited early:\n{self.log()}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=2) as resp:
                    if resp.status == 200:
                        return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"gunicorn did not become healthy:\n{self.log()}")

    def worker_pids(self) -> list[int]:
        """The gevent worker processes (children of the gunicorn master)."""
        assert self.process is not None
        out = subprocess.run(["pgrep", "-P", str(self.process.pid)], capture_output=True,
                             text=True).stdout
        return [int(pid) for pid in out.split()]

    def worker_of(self, client_port: int) -> int | None:
        """The worker pid that accepted the client connection from 127.0.0.1:`client_port`."""
        return connection_owners(self.worker_pids(), self.port).get(client_port)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 20.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self._log.close()

    def __enter__(self) -> RelayServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
