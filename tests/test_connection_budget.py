"""Two hosts of two workers on one PostgreSQL, 200 replies at once through nginx.

Every reply ends complete with the model's exact text, nothing answers 5xx, and the
connections PostgreSQL sees never exceed the documented budget:
hosts x workers x (DB_POOL_SIZE + DB_MAX_OVERFLOW + 4).
"""

from __future__ import annotations

import threading
import time

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import Answer, RelayClient, read_reply
from bench.sse_client import SSEConnection

from .test_server_streaming import wait_for
from .test_two_hosts import words

pytestmark = pytest.mark.server

HOSTS, WORKERS, POOL_SIZE, MAX_OVERFLOW = 2, 2, 5, 5
BUDGET = HOSTS * WORKERS * (POOL_SIZE + MAX_OVERFLOW + 4)
REPLIES = 200


class ConnectionSampler(threading.Thread):
    """Counts the database's connections (its own left out) every `interval` seconds."""

    def __init__(self, database_url: str, interval: float = 0.05) -> None:
        super().__init__(daemon=True)
        self.url = database_url
        self.interval = interval
        self.samples: list[int] = []
        self.error: BaseException | None = None
        self._done = threading.Event()

    def run(self) -> None:
        import psycopg

        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                while not self._done.is_set():
                    (count,) = conn.execute(
                        "SELECT count(*) FROM pg_stat_activity "
                        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    ).fetchone()
                    self.samples.append(count)
                    self._done.wait(self.interval)
        except BaseException as err:
            self.error = err

    def stop(self) -> None:
        self._done.set()
        self.join(10)


class CountedClient(RelayClient):
    """A browser whose every answer's status is recorded in `statuses`."""

    def __init__(self, base_url: str, statuses: list) -> None:
        super().__init__(base_url, timeout=60)
        self.statuses = statuses

    def request(self, method: str, path: str, **kw) -> Answer:
        answer = super().request(method, path, **kw)
        self.statuses.append((answer.status, method, path))
        return answer

    def stream(self, path: str, **kw) -> SSEConnection:
        connection = super().stream(path, **kw)
        self.statuses.append((connection.status, "GET", path))
        return connection


def test_200_replies_at_once_on_two_hosts_stay_within_the_connection_budget(
        server_factory, nginx_factory, postgres_url, upstream):
    env = {"DB_POOL_SIZE": str(POOL_SIZE), "DB_MAX_OVERFLOW": str(MAX_OVERFLOW),
           "REDIS_URL": ""}  # the PostgreSQL hub: its connections count too
    hosts = [server_factory(postgres_url, workers=WORKERS, **env) for _ in range(HOSTS)]
    proxy = nginx_factory(*hosts)
    statuses: list[tuple[int, str, str]] = []
    results: dict[int, dict] = {}
    errors: list[BaseException] = []
    ready = threading.Barrier(REPLIES + 1)

    def one_reply(i: int) -> None:
        try:
            browser = CountedClient(proxy.base_url, statuses).open()
            thread = browser.new_thread()
            text = f"Reply {i}: " + words(10, f"r{i}w")
            prompt = upstream.script(Reply.words(text, token_delay_s=0.1))
            ready.wait(60)
            sent = browser.send(thread, prompt)
            reply_id = sent["assistant_message"]["id"]
            result = results[i] = {"text": text}
            if i % 2 == 0:  # half are read as they stream; the others run headless
                result["streamed"] = read_reply(browser.stream(sent["stream_url"]))[:2]
            result["message"] = wait_for(
                lambda: (m := browser.message(reply_id))["status"] not in
                ("pending", "streaming") and m, timeout=60, interval=1)
        except BaseException as err:
            errors.append(err)
            ready.abort()

    sampler = ConnectionSampler(postgres_url)
    sampler.start()
    threads = [threading.Thread(target=one_reply, args=(i,), daemon=True)
               for i in range(REPLIES)]
    for t in threads:
        t.start()
    ready.wait(60)  # every browser has its thread: now all 200 prompts at once
    started = time.monotonic()
    for t in threads:
        t.join(90)
    elapsed = time.monotonic() - started
    sampler.stop()

    failed = [s for s in statuses if s[0] >= 500]
    peak = max(sampler.samples, default=0)
    assert errors == [], (f"{len(errors)} replies failed, e.g. {errors[:2]}; "
                          f"{len(failed)} answers were 5xx, e.g. {failed[:5]}; "
                          f"at most {peak} connections (budget {BUDGET})")
    assert sampler.error is None
    assert len(results) == REPLIES
    for result in results.values():
        message = result["message"]
        assert (message["status"], message["content"]) == ("complete", result["text"])
        if "streamed" in result:
            assert result["streamed"] == (result["text"], "done")
    assert failed == [], f"{len(failed)} answers were 5xx, e.g. {failed[:5]}"
    for host in hosts:
        assert "Exception on" not in host.log()
    # The sampler really watched the burst, and saw Relay's connections (hub listeners at
    # least) the whole time.
    assert len(sampler.samples) > elapsed / 0.05 / 4
    assert min(sampler.samples) >= HOSTS * WORKERS
    assert peak <= BUDGET, f"{peak} connections, budget {BUDGET}"
    assert elapsed < 60
