"""Services the multi-host tests run beside Relay: a private Redis, nginx, PostgreSQL control.

Plain classes, no pytest: the fixtures in conftest.py decide when a missing service is a
skip and when it is a failure.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from bench.relay_server import ROOT, free_port

NGINX_SITE = ROOT / "deploy" / "nginx.conf"


def _wait(predicate, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"{what} within {timeout} s")


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    """In the child before exec: a SIGTERM when the test process dies, even if killed.

    Without it a test run cut short (a timeout, a kill) leaves its servers running.
    """
    try:
        # The program's own symbols, libc's among them: no library search, which would run
        # a subprocess (ldconfig) here, between fork and exec, where that can hang.
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG (Linux)
    except (OSError, AttributeError, TypeError):
        pass  # not Linux: the fixtures' teardown stops them as usual


def _stop_process(process: subprocess.Popen, sig: int, timeout: float = 10.0) -> None:
    if process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


# -- Redis -------------------------------------------------------------------------------------
class RedisServer:
    """A private `redis-server` on a free port, nothing persisted; stop and start it at will.

    It keeps its port across restarts, so clients configured with `url` find it again.
    """

    def __init__(self, workdir: Path, binary: str = "redis-server") -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port()
        self.log_path = workdir / f"redis-{self.port}.log"
        self.process: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self, timeout: float = 10.0) -> RedisServer:
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                 "--appendonly", "no", "--dir", str(self.workdir)],
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent)
        try:
            _wait(lambda: self.process.poll() is None and self.ping(), timeout,
                  f"redis-server on port {self.port} did not answer PING")
        except RuntimeError:
            self.stop()
            raise RuntimeError(self.log()) from None
        return self

    def ping(self) -> bool:
        """True when the server answers PING (raw protocol: no client library needed)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                return conn.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Shut down (SIGTERM); the port is free again when this returns."""
        if self.process is not None:
            _stop_process(self.process, signal.SIGTERM)
            _wait(lambda: not _accepts(self.port), 10, f"port {self.port} still accepting")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


# -- nginx -------------------------------------------------------------------------------------
def nginx_binary() -> str | None:
    """nginx lives in /usr/sbin on Debian, which is not on every user's PATH."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/usr/local/sbin")


def site_config(text: str, upstreams: Iterable[str], listen: str) -> str:
    """deploy/nginx.conf with its upstream servers and its `listen` lines replaced."""
    servers = "".join(f"    server {address} max_fails=2 fail_timeout=10s;\n"
                      for address in upstreams)
    block = re.compile(r"(upstream\s+relay\s*\{)(.*?)(\n\})", re.S)
    found = block.search(text)
    if found is None:
        raise ValueError("no `upstream relay { ... }` block in the nginx site")
    body = re.sub(r"^\s*server\s[^;]*;[^\n]*\n", "", found.group(2), flags=re.M)
    text = text[:found.start(2)] + "\n" + servers + body.lstrip("\n") + text[found.end(2):]
    text, listens = re.subn(r"^(\s*)listen\s[^;]*;", rf"\1listen {listen};", text, flags=re.M)
    if listens != 1:
        raise ValueError(f"expected one `listen` line in the nginx site, found {listens}")
    return text


def main_config(prefix: Path, site: Path) -> str:
    """The smallest complete nginx.conf around the site, every path inside `prefix`."""
    user = "user root;\n" if os.geteuid() == 0 else ""  # workers must reach the prefix
    temp = "".join(f"    {kind}_temp_path {prefix / kind};\n"
                   for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    return (f"{user}daemon off;\nworker_processes 2;\npid {prefix / 'nginx.pid'};\n"
            f"error_log {prefix / 'error.log'} info;\n"
            "events { worker_connections 4096; }\n"
            "http {\n"
            "    log_format upstreams '$request_method $uri $status $upstream_addr';\n"
            f"    access_log {prefix / 'access.log'} upstreams;\n"
            f"{temp}"
            # As an operator might have it: compress everything, so the site must opt out.
            "    gzip on;\n    gzip_min_length 1;\n"
            "    gzip_types text/event-stream application/json text/css;\n"
            f"    include {site};\n"
            "}\n")


@dataclass
class Hit:
    """One request as nginx logged it (logged when the request ends)."""

    method: str
    path: str
    status: int
    upstreams: list[str]  # every host tried, in order ("-" if none)


class NginxProxy:
    """nginx running deploy/nginx.conf on a free port in front of the given Relay hosts."""

    def __init__(self, upstreams: list[str], workdir: Path, binary: str = "nginx", *,
                 configure: Callable[[str, list[str], str], str] | None = None) -> None:
        """`configure(text, upstreams, listen)` makes the site from deploy/nginx.conf's text
        (default: site_config)."""
        self.binary = binary
        self.configure = configure or site_config
        self.upstreams = upstreams
        self.workdir = workdir
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> NginxProxy:
        site = self.workdir / "relay.conf"
        site.write_text(self.configure(NGINX_SITE.read_text(), self.upstreams,
                                       f"127.0.0.1:{self.port}"))
        conf = self.workdir / "nginx.conf"
        conf.write_text(main_config(self.workdir, site))
        command = [self.binary, "-p", str(self.workdir), "-e", str(self.workdir / "error.log"),
                   "-c", str(conf)]
        checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
        if checked.returncode != 0:
            raise RuntimeError(f"nginx refused the configuration:\n{checked.stderr}")
        with open(self.workdir / "stderr.log", "ab") as log:
            self.process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True, preexec_fn=_die_with_parent)
        try:
            _wait(lambda: self.process.poll() is None and _accepts(self.port), timeout,
                  f"nginx did not listen on port {self.port}")
        except RuntimeError:
            self.stop()
            raise RuntimeError(self.log()) from None
        return self

    def hits(self) -> list[Hit]:
        path = self.workdir / "access.log"
        lines = path.read_text().splitlines() if path.exists() else []
        hits = []
        for line in lines:
            method, uri, status, upstreams = line.split(" ", 3)
            # Hosts tried in turn are listed "a, b"; after an internal redirect, "a : b".
            hits.append(Hit(method, uri, int(status), re.split(r", | : ", upstreams)))
        return hits

    def log(self) -> str:
        path = self.workdir / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Fast shutdown (SIGTERM): open streams are cut, as when nginx is restarted."""
        if self.process is not None:
            _stop_process(self.process, signal.SIGTERM)


# -- PostgreSQL --------------------------------------------------------------------------------
@dataclass
class PostgresCluster:
    """The Debian cluster (pg_ctlcluster) that serves a given URL on this machine."""

    version: str
    name: str
    port: int
    url: str

    @classmethod
    def serving(cls, url: str) -> PostgresCluster:
        """The local cluster listening on `url`'s port; LookupError saying why if none."""
        parts = urlsplit(url)
        if parts.hostname not in ("127.0.0.1", "localhost", "::1", None):
            raise LookupError(f"the database server {parts.hostname} is not on this machine")
        if shutil.which("pg_ctlcluster") is None or shutil.which("pg_lsclusters") is None:
            raise LookupError("pg_ctlcluster is not installed (Debian's postgresql-common)")
        port = parts.port or 5432
        listing = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True,
                                 text=True).stdout
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) >= 5 and fields[2] == str(port):
                owner = fields[4]
                if os.geteuid() != 0 and pwd.getpwuid(os.geteuid()).pw_name != owner:
                    raise LookupError(f"only root or {owner} may restart the cluster")
                return cls(fields[0], fields[1], port, url)
        raise LookupError(f"no local cluster listens on port {port}")

    def _ctl(self, action: str) -> None:
        done = subprocess.run(["pg_ctlcluster", "--skip-systemctl-redirect", self.version,
                               self.name, action], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctlcluster {action} failed: {done.stderr or done.stdout}")

    def accepts(self) -> bool:
        import psycopg

        try:
            with psycopg.connect(self.url, connect_timeout=2) as conn:
                conn.execute("SELECT 1")
            return True
        except psycopg.OperationalError:
            return False

    def stop(self) -> None:
        self._ctl("stop")

    def start(self, timeout: float = 60.0) -> None:
        """Start it (if it is not running) and wait until it takes connections."""
        if not self.accepts():
            self._ctl("start")
        _wait(self.accepts, timeout, "PostgreSQL did not come back", interval=0.2)
