"""The database briefly away during replies: flushes retry with the text kept; nothing lost."""

from __future__ import annotations

import sqlite3
import threading
import time

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reply

from .test_server_streaming import terminal

pytestmark = pytest.mark.server


def words(n: int) -> str:
    return " ".join(f"o{i}" for i in range(n))


def stream_while(browser: RelayClient, sent: dict, outage) -> tuple[str, str | None]:
    """Read the reply's stream while `outage()` runs beside it."""
    result: dict = {}

    def read():
        result["reply"] = read_reply(browser.stream(sent["stream_url"], timeout=60))

    reader = threading.Thread(target=read)
    reader.start()
    outage()
    reader.join(90)
    return result["reply"][:2]


def test_postgres_connections_killed_mid_reply_lose_nothing(server_factory, postgres_url,
                                                            upstream):
    import psycopg

    relay = server_factory(postgres_url)
    browser = RelayClient(relay.base_url).open()
    text = words(400)
    sent = browser.send(browser.new_thread(), upstream.script(Reply.words(text,
                                                                          token_delay_s=0.01)))
    dbname = postgres_url.rsplit("/", 1)[1]
    killed = []

    def outage():
        time.sleep(0.5)
        with psycopg.connect(postgres_url, autocommit=True) as admin:
            for _ in range(6):  # as a restart would: every connection of Relay's dropped
                rows = admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = %s AND pid <> pg_backend_pid()", (dbname,)).fetchall()
                killed.append(len(rows))
                time.sleep(0.4)

    streamed = stream_while(browser, sent, outage)
    message = terminal(browser, sent["assistant_message"]["id"])
    # The stored end first: a failed run says whether the reply or only its stream broke.
    assert (message["status"], message["error"], message["content"]) == ("complete", None, text)
    assert streamed == (text, "done")
    assert sum(killed) > 0  # connections really were cut


def test_sqlite_locked_by_another_process_mid_reply_loses_nothing(server_factory, upstream):
    # Commits give up after 200 ms, so the writer's failed flushes are really retried.
    relay = server_factory(SQLITE_BUSY_TIMEOUT_MS="200")
    browser = RelayClient(relay.base_url).open()
    text = words(300)
    sent = browser.send(browser.new_thread(), upstream.script(Reply.words(text,
                                                                          token_delay_s=0.01)))
    path = relay.env["DATABASE_URL"].removeprefix("sqlite:///")

    def outage():
        time.sleep(0.5)
        blocker = sqlite3.connect(path, timeout=10)
        blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: every commit must wait
        time.sleep(1.5)
        blocker.rollback()
        blocker.close()

    streamed = stream_while(browser, sent, outage)
    message = terminal(browser, sent["assistant_message"]["id"])
    assert (message["status"], message["error"], message["content"]) == ("complete", None, text)
    assert streamed == (text, "done")
    assert "delta writer commit failed" in relay.log()  # the outage really hit the writer


def test_a_write_the_database_cannot_take_is_a_503_with_retry_after(server_factory):
    """A database that does not answer in time (here SQLite's write lock, held by another
    process longer than the busy timeout) is a 503 the client may retry, with Retry-After and
    a message, never a 500; once it answers again the same request succeeds."""
    relay = server_factory(SQLITE_BUSY_TIMEOUT_MS="200")
    browser = RelayClient(relay.base_url).open()
    path = relay.env["DATABASE_URL"].removeprefix("sqlite:///")
    blocker = sqlite3.connect(path, timeout=10)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock
    try:
        refused = browser.post_json("/threads", {})
    finally:
        blocker.rollback()
        blocker.close()
    assert refused.status == 503
    assert int(refused.headers["Retry-After"]) > 0
    assert "database" in refused.json()["message"]
    assert "Traceback" not in relay.log()
    assert browser.post_json("/threads", {}).status == 201
