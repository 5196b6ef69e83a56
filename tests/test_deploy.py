"""deploy/: the systemd unit's command lines run as written, its reload under a running reply,
and its settings file naming exactly the settings Relay reads.

The unit is written for these install paths, which the tests map onto this checkout:

    /opt/relay/app          -> the repository (ROOT)
    /opt/relay/venv         -> the virtualenv running the tests (its bin/ has gunicorn, flask)
    /etc/relay/relay.env    -> a settings file the test writes

Nothing else of the unit is changed: its ExecStartPre, ExecStart and ExecReload run with
systemd's meaning of Environment=, EnvironmentFile=, WorkingDirectory= and $MAINPID, in an
environment as bare as systemd's. User= and the sandboxing options need systemd itself;
`systemd-analyze verify` checks them.
"""

from __future__ import annotations

import http.client
import json
import re
import shlex
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from app import create_app
from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reply
from bench.relay_server import ROOT, RelayServer, free_port
from config import TestConfig
from streaming.sse import decode_delta

from .conftest import SERVER_ENV, need_service
from .services import NginxProxy, nginx_binary, site_config
from .test_server_failures import read_to_end, words
from .test_server_streaming import terminal, wait_for

DEPLOY = ROOT / "deploy"
UNIT = DEPLOY / "relay.service"
ENV_EXAMPLE = DEPLOY / "relay.env.example"
APP_DIR, VENV_DIR, ENV_FILE = "/opt/relay/app", "/opt/relay/venv", "/etc/relay/relay.env"
VENV = Path(sys.executable).parent.parent
SYSTEMD_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin"


# -- reading the unit the way systemd does ---------------------------------------------------
def unit_settings(text: str) -> dict[str, dict[str, list[str]]]:
    """Sections of a unit file, each key with all its values in order (a key may repeat);
    comments and blank lines skipped, a trailing backslash continues the line."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] | None = None
    for line in re.sub(r"\\\n", " ", text).splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], {})
            continue
        key, _, value = line.partition("=")
        assert current is not None, f"{line!r} is outside any section"
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


def environment_file(text: str) -> dict[str, str]:
    """KEY=VALUE lines as systemd's EnvironmentFile= reads them: no shell, `#` and `;`
    lines are comments, surrounding quotes are removed."""
    env = {}
    for line in re.sub(r"\\\n", "", text).splitlines():
        line = line.strip()
        if not line or line[0] in "#;":
            continue
        key, sep, value = line.partition("=")
        assert sep and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key.strip()), line
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        env[key.strip()] = value
    return env


def command_line(value: str, env: dict[str, str]) -> list[str]:
    """An Exec*= line as argv: its prefix characters dropped, split like a shell line,
    `${NAME}` replaced by one word and `$NAME` by the value's words (systemd.service)."""
    argv = []
    for word in shlex.split(value.lstrip("-@:+!")):
        whole = re.fullmatch(r"\$([A-Za-z_][A-Za-z0-9_]*)", word)
        if whole:
            argv += env.get(whole[1], "").split()
        else:
            argv.append(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}",
                               lambda m: env.get(m[1], ""), word))
    return argv


def installed(word: str, env_file: Path) -> str:
    """One word of the unit with the install paths mapped onto this checkout."""
    for prefix, here in ((ENV_FILE, env_file), (VENV_DIR, VENV), (APP_DIR, ROOT)):
        if word == prefix or word.startswith(prefix + "/"):
            return str(here) + word[len(prefix):]
    return word


class Service:
    """The unit's [Service] as systemd would start it, with the install paths mapped."""

    def __init__(self, env_file: Path) -> None:
        self.settings = unit_settings(UNIT.read_text())
        self.service = self.settings["Service"]
        self.env_file = env_file

    def one(self, key: str) -> str:
        (value,) = self.service[key]
        return value

    def environment(self, extra: dict[str, str]) -> dict[str, str]:
        env = {"PATH": SYSTEMD_PATH, **extra}
        for assignments in self.service.get("Environment", []):
            for assignment in shlex.split(assignments):
                key, _, value = assignment.partition("=")
                env[key] = value
        for path in self.service.get("EnvironmentFile", []):
            optional = path.startswith("-")
            target = Path(installed(path.lstrip("-"), self.env_file))
            if optional and not target.exists():
                continue
            env.update(environment_file(target.read_text()))
        return env

    def argv(self, key: str, env: dict[str, str]) -> list[list[str]]:
        return [[installed(w, self.env_file) for w in command_line(value, env)]
                for value in self.service.get(key, [])]

    @property
    def workdir(self) -> Path:
        return Path(installed(self.one("WorkingDirectory"), self.env_file))


def seconds(value: str) -> float:
    """A systemd time span: `30`, `30s`, `1min 30s`, `1m`."""
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600}
    total = 0.0
    for number, unit in re.findall(r"([0-9.]+)\s*([a-z]*)", value):
        total += float(number) * units[unit]
    return total


def default_graceful_timeout() -> int:
    """gunicorn.conf.py's graceful_timeout when GRACEFUL_TIMEOUT is not set."""
    code = (ROOT / "gunicorn.conf.py").read_text()
    return int(re.search(r"GRACEFUL_TIMEOUT[\"'],\s*[\"'](\d+)", code)[1])


# -- the unit as a file ----------------------------------------------------------------------
def test_the_unit_runs_unprivileged_sandboxed_and_outlasts_the_graceful_timeout(tmp_path):
    service = Service(tmp_path / "relay.env")
    assert service.one("User") not in ("", "root", "0")
    assert service.one("Type") == "notify"  # gunicorn's master says READY=1 (tested below)
    assert service.one("NoNewPrivileges") == "yes"
    assert service.one("ProtectSystem") == "strict"
    assert service.one("PrivateTmp") == "yes"
    assert service.one("Restart") == "on-failure"
    assert service.one("KillMode") == "mixed"  # SIGTERM to the master, which stops workers
    # The one writable folder is the app's instance folder (SQLite, a generated key).
    app = create_app(TestConfig, {"DATABASE_URL": f"sqlite:///{tmp_path / 'x.sqlite3'}"})
    try:
        assert [installed(p, service.env_file) for p in
                service.one("ReadWritePaths").split()] == [app.instance_path]
    finally:
        app.extensions["relay"].shutdown(timeout=2)
    # systemd kills what is left after TimeoutStopSec: gunicorn must have finished first,
    # with the default graceful timeout and with the one the settings sample suggests.
    example = {k: v for k, v in re.findall(r"^#?([A-Z_]+)=(.*)$", ENV_EXAMPLE.read_text(),
                                           re.M)}
    for graceful in (default_graceful_timeout(),
                     int(example["GRACEFUL_TIMEOUT"])):
        assert seconds(service.one("TimeoutStopSec")) >= graceful + 5
    assert command_line(service.one("ExecReload"), {"MAINPID": "42"}) == \
        ["/bin/kill", "-HUP", "42"]


def test_systemd_analyze_verifies_the_unit(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (the systemd package): the unit's "
                    "syntax is checked by systemd itself only where it is")
    env_file = tmp_path / "relay.env"
    env_file.write_text(ENV_EXAMPLE.read_text())
    mapped = UNIT.read_text()
    for prefix, here in ((ENV_FILE, env_file), (VENV_DIR, VENV), (APP_DIR, ROOT)):
        mapped = mapped.replace(prefix, str(here))
    copy = tmp_path / "relay.service"
    copy.write_text(mapped)
    done = subprocess.run([analyze, "verify", str(copy)], capture_output=True, text=True,
                          timeout=180)
    # Unknown keys and bad values are only warnings to systemd: any output is a failure.
    assert done.returncode == 0 and not done.stderr.strip() and not done.stdout.strip(), \
        done.stdout + done.stderr


def test_the_settings_sample_names_every_setting_relay_reads_and_no_other():
    read = set()
    for source in ("config.py", "gunicorn.conf.py"):
        read |= set(re.findall(r"(?:_env|_int|_float|environ\.get)\(\s*[\"']([A-Z][A-Z0-9_]*)",
                               (ROOT / source).read_text()))
    text = ENV_EXAMPLE.read_text()
    documented = set(re.findall(r"^#?([A-Z][A-Z0-9_]*)=", text, re.M))
    assert read - documented == set(), "settings missing from deploy/relay.env.example"
    assert documented - read == set(), "deploy/relay.env.example names unknown settings"
    # As shipped it starts Relay on one host: what it sets parses and is sane.
    assert environment_file(text) == {"HOST": "127.0.0.1", "PORT": "8000"}


# -- the unit running ------------------------------------------------------------------------
def rest_of(text: str):
    """A continuation that writes exactly what the reply still lacks of `text`."""
    def reply(body: dict) -> Reply:
        written = [m["content"] for m in body.get("messages", [])
                   if m.get("role") == "assistant" and isinstance(m.get("content"), str)
                   and text.startswith(m["content"])]
        if not written:
            return Reply.words("the continuation did not carry the partial reply")
        return Reply.words(text[len(max(written, key=len)):], token_delay_s=0.002)
    return reply


class HealthPoller(threading.Thread):
    """GET /healthz over and over on fresh connections; every answer (or failure) kept.

    gunicorn stops the old workers as soon as it has forked the new ones, so a request
    made meanwhile waits in the listening socket's queue for a new worker to boot (a
    second or two; much longer on a loaded machine): slow, never refused.
    """

    def __init__(self, base_url: str) -> None:
        super().__init__(daemon=True)
        self.url = base_url + "/healthz"
        self.answers: list[int | str] = []
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                with urllib.request.urlopen(self.url, timeout=180) as response:
                    self.answers.append(response.status)
            except Exception as err:  # noqa: BLE001 - every failure is a finding
                self.answers.append(repr(err))
            time.sleep(0.05)


@pytest.fixture
def notify_socket(tmp_path):
    """A datagram socket standing in for systemd's notification socket."""
    path = tmp_path / "notify"
    if len(str(path)) > 100:
        path = Path(f"/tmp/relay-notify-{free_port()}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(60)
    yield path, sock
    sock.close()
    path.unlink(missing_ok=True)


def test_the_units_command_line_serves_and_reloads_under_a_running_reply(
        tmp_path, upstream, notify_socket):
    port = free_port()
    env_file = tmp_path / "relay.env"
    env_file.write_text("\n".join([
        "# written by the test, as an operator would from relay.env.example",
        "HOST=127.0.0.1", f"PORT={port}", "WEB_CONCURRENCY=2", "ACCESS_LOG=",
        f"DATABASE_URL=sqlite:///{tmp_path / 'relay.sqlite3'}",
        f'OPENAI_BASE_URL="{upstream.url}"',
        *(f"{k}={v}" for k, v in SERVER_ENV.items()),
    ]) + "\n")
    service = Service(env_file)
    notify_path, notify = notify_socket
    env = service.environment({"HOME": str(tmp_path), "NOTIFY_SOCKET": str(notify_path)})
    assert "VIRTUAL_ENV" not in env and env["PATH"] == SYSTEMD_PATH
    (start,) = service.argv("ExecStart", env)
    server = RelayServer(env, tmp_path, command=start, setup=service.argv("ExecStartPre", env),
                         cwd=service.workdir)
    server.start(timeout=180)
    try:
        assert b"READY=1" in notify.recv(4096)  # Type=notify: the master says it serves
        old = set(wait_for(lambda: len(p := server.worker_pids()) == 2 and p, timeout=180))
        browser = RelayClient(server.base_url, timeout=180).open()
        text = words(1500)
        prompt = upstream.script(Reply.words(text, token_delay_s=0.01), rest_of(text))
        sent = browser.send(browser.new_thread(), prompt)
        reply_id = sent["assistant_message"]["id"]
        stream = browser.stream(sent["stream_url"], timeout=180)
        events = iter(stream)
        received: list[str] = []
        for event in events:
            received.append(decode_delta(event.data))
            if len(received) == 30:
                break
        assert server.worker_of(stream._sock.getsockname()[1]) in old

        poller = HealthPoller(server.base_url)
        poller.start()
        env["MAINPID"] = str(server.process.pid)
        for reload in service.argv("ExecReload", env):
            subprocess.run(reload, cwd=service.workdir, env=env, check=True, timeout=30)
        end = read_to_end(events, received)
        stream.close()
        new = set(wait_for(lambda: len(p := set(server.worker_pids())) == 2
                           and not p & old and p, timeout=180, interval=0.2))
        time.sleep(0.5)  # a few answers from the new workers alone
        poller.stopping.set()
        poller.join(200)
        # Through the whole reload every request was answered, and answered well.
        assert poller.answers and set(poller.answers) == {200}, poller.answers

        streamed = "".join(received)
        message = terminal(browser, reply_id, timeout=180)
        if end == "done":
            assert (message["status"], message["content"], streamed) == ("complete", text,
                                                                         text)
        else:
            # The old worker saved the reply as interrupted with every character it sent.
            assert end == "error", end
            assert message["status"] == "interrupted"
            assert message["content"] == streamed and text.startswith(streamed)
            answer = browser.post_json(f"/messages/{reply_id}/continue")
            assert answer.status == 202, answer.text
            rest, finished, _ = read_reply(browser.stream(answer.json()["stream_url"],
                                                          timeout=180))
            assert finished == "done"
            assert streamed + rest == text
            message = terminal(browser, reply_id, timeout=180)
            assert (message["status"], message["content"]) == ("complete", text)

        # New requests go to the new workers.
        again = upstream.script(Reply.words("served after the reload", token_delay_s=0.01))
        sent = browser.send(browser.new_thread(), again)
        stream = browser.stream(sent["stream_url"], timeout=180)
        with stream:
            assert server.worker_of(stream._sock.getsockname()[1]) in new
            assert read_reply(stream)[:2] == ("served after the reload", "done")

        # systemctl stop: KillSignal to the master (KillMode=mixed); it must be gone, having
        # stopped its workers cleanly, well within TimeoutStopSec.
        kill = getattr(signal, service.service.get("KillSignal", ["SIGTERM"])[0])
        server.process.send_signal(kill)
        assert server.process.wait(seconds(service.one("TimeoutStopSec"))) == 0
        assert not any(Path(f"/proc/{pid}").exists() for pid in new)
    finally:
        server.stop()


# -- nginx with TLS --------------------------------------------------------------------------
def https_site(cert: Path, key: Path, http_port: int):
    """deploy/nginx.conf with its TLS lines switched on as its comments say (the HTTPS
    listener on the test's port, the certificate the test made), the port 80 redirect on
    `http_port`."""
    def configure(text: str, upstreams: list[str], listen: str) -> str:
        text = site_config(text, upstreams, listen)
        text = re.sub(r"^(\s*)listen (\S+);", r"\1listen \2 ssl http2;", text, count=1,
                      flags=re.M)
        text, settings = re.subn(r"^    #   ((?:ssl_|add_header )[^\n]*)$", r"    \1", text,
                                 flags=re.M)
        assert settings >= 5, "the TLS settings are no longer in deploy/nginx.conf"
        text = re.sub(r"^(\s*ssl_certificate) .*;", rf"\1 {cert};", text, flags=re.M)
        text = re.sub(r"^(\s*ssl_certificate_key) .*;", rf"\1 {key};", text, flags=re.M)
        redirect = text.index("\n# server {")
        block = re.sub(r"^# ?", "", text[redirect:], flags=re.M)
        block = re.sub(r"^\s*listen \[::\]:80;\n", "", block, flags=re.M)  # no IPv6 needed
        block = block.replace("listen 80;", f"listen 127.0.0.1:{http_port};")
        return text[:redirect] + block
    return configure


def test_the_https_example_serves_relay_over_http2_and_redirects_http(server, tmp_path):
    binary = nginx_binary()
    if binary is None:
        need_service("nginx", "nginx is not installed")
    openssl = shutil.which("openssl")
    if openssl is None:
        need_service("openssl", "the openssl command makes the test's certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=relay.example.com", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=120)
    http_port = free_port()
    proxy = NginxProxy([server.base_url.removeprefix("http://")], tmp_path, binary,
                       configure=https_site(cert, key, http_port)).start(timeout=60)
    try:
        context = ssl.create_default_context(cafile=str(cert))
        context.check_hostname = False  # the certificate names relay.example.com
        request = urllib.request.Request(f"https://127.0.0.1:{proxy.port}/healthz")
        with urllib.request.urlopen(request, context=context, timeout=120) as answer:
            assert answer.status == 200
            assert json.load(answer)["status"] == "ok"
            assert answer.headers["Strict-Transport-Security"] == "max-age=31536000"
        # HTTP/2 is offered (ALPN), so a browser's tabs share one connection.
        context.set_alpn_protocols(["h2", "http/1.1"])
        with socket.create_connection(("127.0.0.1", proxy.port), timeout=60) as raw, \
                context.wrap_socket(raw, server_hostname="relay.example.com") as tls:
            assert tls.selected_alpn_protocol() == "h2"
        # Plain HTTP only redirects to HTTPS, path and query kept.
        plain = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
        plain.request("GET", "/threads/7?x=1", headers={"Host": "relay.example.com"})
        moved = plain.getresponse()
        assert moved.status == 301
        assert moved.getheader("Location") == "https://relay.example.com/threads/7?x=1"
        plain.close()
    finally:
        proxy.stop()
