"""Fixtures: an app and client in-process, services when present, Relay under gunicorn."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings

from app import create_app
from bench.fake_anthropic import FakeAnthropic
from bench.fake_upstream import FakeUpstream, Reply, default_reply
from bench.relay_server import ROOT, RelayServer
from bench.sse_client import Event, SSEParser
from config import TestConfig
from models import db
from streaming.sse import decode_delta
from tests.services import NginxProxy, PostgresCluster, RedisServer, nginx_binary

REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"

# Property tests are judged on what they find, never on how long an example took: on a busy
# machine Hypothesis's default 200 ms deadline fails correct code.
settings.register_profile("relay", deadline=None)
settings.load_profile("relay")


def need_service(name: str, reason: str) -> None:
    """Skip (on a developer's machine) or fail (in CI, REQUIRE_SERVICES=1) without it."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{name} is required in CI (REQUIRE_SERVICES=1) but {reason}")
    pytest.skip(f"{name} not available: {reason}")


@contextlib.contextmanager
def made_app(tmp_path, **settings) -> Iterator:
    """An app on a fresh SQLite file in `tmp_path`, with `settings` over TestConfig."""
    app = create_app(TestConfig, {"DATABASE_URL": f"sqlite:///{tmp_path / 'relay.sqlite3'}",
                                  **settings})
    with app.app_context():
        db.create_all()
    try:
        yield app
    finally:
        # Leave no greenlet of this app behind: headless starts, generations, the writer.
        app.extensions["relay"].shutdown(timeout=2)
        with app.app_context():
            db.engine.dispose()


@pytest.fixture
def app(tmp_path):
    with made_app(tmp_path) as app:
        yield app


@pytest.fixture
def engine(tmp_path):
    """A SQLite file with Relay's schema, outside any app; locks fail fast (0.2 s)."""
    from sqlalchemy import create_engine

    engine = create_engine(f"sqlite:///{tmp_path / 'engine.sqlite3'}",
                           connect_args={"timeout": 0.2})
    db.metadata.create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def runner(app):
    return app.test_cli_runner()


def csrf_of(client) -> str:
    """Load a page the way a browser does and return its CSRF token."""
    page = client.get("/")
    return re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)


JSON = {"Accept": "application/json"}


def new_thread(client, token: str) -> int:
    response = client.post("/threads", headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 201, response.text
    return response.json["thread"]["id"]


def send(client, token: str, thread_id: int, content: str = "Hello", *,
         parallel: bool = False) -> dict:
    """Post a prompt as JSON: both messages and the reply's `stream_url`; `parallel` asks
    for a reply beside one still running in the thread (otherwise a 409)."""
    body = {"content": content, **({"parallel": True} if parallel else {})}
    response = client.post(f"/threads/{thread_id}/messages", json=body,
                           headers={"X-CSRF-Token": token, **JSON})
    assert response.status_code == 201, response.text
    return response.json


def stored_text(database_url: str, message_id: int) -> str:
    """What the database holds of a reply, read straight from its tables (any database):
    its content, then its deltas in order."""
    from sqlalchemy import create_engine, text

    from app import database_url as sqlalchemy_url

    engine = create_engine(sqlalchemy_url(database_url, ROOT))
    try:
        with engine.connect() as conn:
            content = conn.execute(text("SELECT content FROM messages WHERE id = :id"),
                                   {"id": message_id}).scalar_one()
            deltas = conn.execute(text("SELECT text FROM stream_deltas WHERE message_id = :id "
                                       "ORDER BY start"), {"id": message_id}).scalars()
            return content + "".join(deltas)
    finally:
        engine.dispose()


def sse_events(body: bytes) -> list[Event]:
    return SSEParser().feed(body)


def decoded(events: list[Event]) -> str:
    """The reply's text as a client rebuilds it: decoded `delta` data, in order."""
    return "".join(decode_delta(e.data) for e in events if e.event == "delta")


@pytest.fixture
def token(client) -> str:
    return csrf_of(client)


@pytest.fixture
def thread_id(client, token) -> int:
    return new_thread(client, token)


@pytest.fixture
def stranger(app):
    """Another browser: its own cookies, owner identity and CSRF token."""
    return app.test_client()


# -- services --------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A fresh database on TEST_DATABASE_URL's server, dropped at the end of the session."""
    url = os.environ.get("TEST_DATABASE_URL")
    if not url:
        need_service("PostgreSQL", "TEST_DATABASE_URL is not set")
    import psycopg

    name = f"relay_test_{uuid.uuid4().hex[:10]}"
    try:
        with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as err:
        need_service("PostgreSQL", f"cannot connect to TEST_DATABASE_URL ({err})")
    base, _, _ = url.rpartition("/")
    yield f"{base}/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def redis_url() -> str:
    """TEST_REDIS_URL, once it answers a PING (tests isolate themselves by channel prefix)."""
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        need_service("Redis", "TEST_REDIS_URL is not set")
    import redis

    try:
        redis.Redis.from_url(url, socket_connect_timeout=3).ping()
    except redis.RedisError as err:
        need_service("Redis", f"cannot reach TEST_REDIS_URL ({err})")
    return url


# -- the model ---------------------------------------------------------------------------------
class ScriptedUpstream(FakeUpstream):
    """The fake model, answering each prompt with the reply a test registered for it."""

    def __init__(self) -> None:
        self.scripts: dict[str, list[Reply]] = {}
        super().__init__(default_reply=self._reply_for)

    def script(self, *replies: Reply | Callable[[dict], Reply]) -> str:
        """Register replies and return a unique prompt that makes the model answer them.

        Each request in that conversation (retries, continuations) takes the next reply;
        the last one repeats. A reply may be a function of the request's body that returns
        the Reply (a continuation that writes exactly the rest, say).
        """
        prompt = f"prompt-{uuid.uuid4().hex}"
        self.scripts[prompt] = list(replies)
        return prompt

    def _prompt_of(self, body: dict) -> str | None:
        # The scripted prompt may be followed by a continuation request: search the history.
        for message in reversed(body.get("messages") or []):
            content = message.get("content")
            if isinstance(content, list):  # a prompt with attachments: its text comes last
                texts = [p.get("text") for p in content
                         if isinstance(p, dict) and p.get("type") == "text"]
                content = texts[-1] if texts else None
            if message.get("role") == "user" and content in self.scripts:
                return content
        return None

    def _reply_for(self, body: dict) -> Reply:
        replies = self.scripts.get(self._prompt_of(body) or "")
        if not replies:
            return default_reply(body)
        reply = replies.pop(0) if len(replies) > 1 else replies[0]
        return reply(body) if callable(reply) else reply

    def records_for(self, prompt: str) -> list:
        return [r for r in list(self.requests) if r.body and self._prompt_of(r.body) == prompt]


@pytest.fixture(scope="session")
def upstream() -> Iterator[ScriptedUpstream]:
    with ScriptedUpstream().start() as fake:
        yield fake


# -- Relay under gunicorn ----------------------------------------------------------------------
SERVER_ENV = {
    "CHAT_PROVIDER": "openai",
    "OPENAI_API_KEY": "sk-test-not-a-real-key",
    "SECRET_KEY": "server-test-secret",
    "STREAM_THROTTLE_MS": "50",
    "STREAM_MAX_LAG_MS": "300",
    "DRIVER_GRACE_MS": "1500",
    "HEARTBEAT_S": "1",
    "RESUME_POLL_S": "0.5",
    "RATE_LIMIT": "10000/minute",
}


@pytest.fixture(scope="module")
def server_factory(tmp_path_factory, upstream):
    """Start Relay servers with extra settings; all are stopped after the module."""
    started: list[RelayServer] = _RUNNING_SERVERS

    def start(database_url: str | None = None, *, workers: int = 1, **env: str) -> RelayServer:
        workdir = tmp_path_factory.mktemp("relay")
        url = database_url or f"sqlite:///{workdir / 'relay.sqlite3'}"
        server = RelayServer({**SERVER_ENV, "OPENAI_BASE_URL": upstream.url,
                              "DATABASE_URL": url, **env}, workdir, workers=workers)
        started.append(server)
        return server.start()

    yield start
    for server in started:
        server.stop()
    started.clear()


# Servers of the running module: a failing test's report carries the end of their logs.
_RUNNING_SERVERS: list[RelayServer] = []
LOG_TAIL_LINES = 80


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.failed and report.when == "call":
        for server in _RUNNING_SERVERS:
            tail = "\n".join(server.log().splitlines()[-LOG_TAIL_LINES:])
            report.sections.append((f"Relay log ({server.base_url})", tail))


@pytest.fixture(scope="module")
def server(server_factory) -> RelayServer:
    return server_factory()


# -- more services: a private Redis, nginx in front, the PostgreSQL cluster --------------------
@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    """A private redis-server on a free port for the module; tests may stop and restart it."""
    binary = shutil.which("redis-server")
    if binary is None:
        need_service("Redis", "redis-server is not installed")
    redis = RedisServer(tmp_path_factory.mktemp("redis"), binary).start()
    yield redis
    redis.stop()


@pytest.fixture(scope="module")
def nginx_factory(tmp_path_factory):
    """Start nginx with deploy/nginx.conf in front of Relay servers; stopped after the module."""
    binary = nginx_binary()
    if binary is None:
        need_service("nginx", "nginx is not installed")
    started: list[NginxProxy] = []

    def start(*servers: RelayServer) -> NginxProxy:
        proxy = NginxProxy([s.base_url.removeprefix("http://") for s in servers],
                           tmp_path_factory.mktemp("nginx"), binary)
        started.append(proxy)
        return proxy.start()

    yield start
    for proxy in started:
        proxy.stop()


@pytest.fixture(scope="module")
def postgres_cluster(postgres_url) -> Iterator[PostgresCluster]:
    """The local cluster serving TEST_DATABASE_URL, for restart tests; left running."""
    try:
        cluster = PostgresCluster.serving(postgres_url)
    except LookupError as err:
        need_service("a restartable local PostgreSQL", str(err))
    yield cluster
    cluster.start()


ANTHROPIC_KEY = "sk-ant-test-server-key-0123456789"


class ScriptedAnthropic(ScriptedUpstream, FakeAnthropic):
    """The fake Anthropic API, answering each prompt with the replies a test registered."""


@pytest.fixture(scope="module")
def claude() -> Iterator[ScriptedAnthropic]:
    """The fake Anthropic API for a module's server (`ANTHROPIC_KEY` is its key)."""
    fake = ScriptedAnthropic()
    fake.api_key = ANTHROPIC_KEY
    with fake.start():
        yield fake
