"""Two Relay hosts (two gevent workers each) sharing PostgreSQL and Redis behind nginx.

Every request may land on either host: a reply's followers, its stream's reconnects and its
Stop must all work whichever host generates it, and a host that dies leaves its reply to the
other host's sweeper and Continue.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time

import pytest
import websocket

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reconnecting, read_reply
from bench.sse_client import SSEConnection
from streaming.sse import decode_delta
from tests.dom import Dom

from .conftest import stored_text
from .test_server_failures import read_to_end
from .test_server_followers import open_socket
from .test_server_streaming import TRICKY, terminal, wait_for

pytestmark = pytest.mark.server

# Small enough that a dead host's reply is marked within seconds.
STALE_AFTER_S = 3
# nginx is the one trusted proxy in front: links carry the host it passes on.
HOST_ENV = {"STALE_AFTER_S": str(STALE_AFTER_S), "SWEEP_INTERVAL_S": "0.5",
            "HEARTBEAT_S": "0.5", "TRUSTED_PROXIES": "1"}
TERMINAL = ("complete", "error", "aborted", "interrupted")


def words(n: int, stem: str = "w") -> str:
    return " ".join(f"{stem}{i}" for i in range(n))


def same_browser(client: RelayClient, base_url: str) -> RelayClient:
    """The same browser (cookies, CSRF token) talking to another address of the same site."""
    other = RelayClient(base_url)
    for cookie in client.cookies:
        other.cookies.set_cookie(cookie)
    other.csrf = client.csrf
    return other


class Follower(threading.Thread):
    """A tab following a thread over its websocket, as the page does.

    It records the (status, text) of one reply in every fragment it is sent. If the socket
    closes, it falls back to polling the reply's fragment, as the page's script does.
    """

    def __init__(self, target, client: RelayClient, thread_id: int,
                 timeout: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.client = same_browser(client, target.base_url)
        self.ws = open_socket(target, client, thread_id)
        self.ws.settimeout(timeout)
        self.first = self.ws.recv()  # the state frame: subscribed from here on
        self.timeout = timeout
        self.reply_id = ""
        self.states: list[tuple[str, str]] = []
        self.fell_back = False  # the socket closed and the follower polled instead
        self.error: BaseException | None = None

    def follow(self, reply_id: int) -> Follower:
        self.reply_id = str(reply_id)
        self.start()
        return self

    def streaming_updates(self) -> int:
        return sum(status == "streaming" for status, _ in list(self.states))

    @property
    def last(self) -> tuple[str, str] | None:
        return self.states[-1] if self.states else None

    def _record(self, markup: str) -> None:
        dom = Dom(markup)
        for article in dom.articles:
            if article.get("data-message-id") == self.reply_id:
                self.states.append((article["data-status"],
                                    dom.bodies.get(self.reply_id, "").strip()))

    def _ended(self) -> bool:
        return bool(self.states) and self.states[-1][0] in TERMINAL

    def run(self) -> None:
        deadline = time.monotonic() + self.timeout
        try:
            try:
                while not self._ended() and time.monotonic() < deadline:
                    self._record(self.ws.recv())
            except (websocket.WebSocketConnectionClosedException, ConnectionError):
                self.fell_back = True
            while not self._ended() and time.monotonic() < deadline:
                answer = self.client.request("GET", f"/messages/{self.reply_id}",
                                             headers={"HX-Request": "true"})
                if answer.status == 200:
                    self._record(answer.text)
                time.sleep(0.25)  # the page polls once a second; a little brisker here
        except BaseException as err:  # reported by the test, not lost in a thread
            self.error = err
        finally:
            self.ws.close()


class Driver(threading.Thread):
    """The tab that reads a reply's stream to its end, its decoded text kept as it arrives."""

    def __init__(self, client: RelayClient, stream_url: str) -> None:
        super().__init__(daemon=True)
        self.connection = client.stream(stream_url, timeout=60)
        self.parts: list[str] = []
        self.end: str | None = None
        self.error: BaseException | None = None
        self.start()

    def run(self) -> None:
        try:
            self.end = read_to_end(self.connection, self.parts)
        except BaseException as err:
            self.error = err
        finally:
            self.connection.close()

    @property
    def text(self) -> str:
        return "".join(self.parts)


def hubs_by_worker(server, samples: int = 40) -> dict[int, dict]:
    """/healthz's hub of each worker, asked on fresh connections until every one answered."""
    client = RelayClient(server.base_url)
    seen: dict[int, dict] = {}
    for _ in range(samples):
        health = client.get_json("/healthz").json()
        seen[health["worker"]] = health["hub"]
        if len(seen) == len(server.worker_pids()):
            break
    return seen


def every_worker(server, predicate) -> bool:
    """Whether the hub of each of the server's workers satisfies `predicate`."""
    hubs = hubs_by_worker(server)
    return len(hubs) == len(server.worker_pids()) and all(map(predicate, hubs.values()))


@pytest.fixture(scope="module")
def hosts(server_factory, postgres_url, redis_server):
    return [server_factory(postgres_url, workers=2, REDIS_URL=redis_server.url(), **HOST_ENV)
            for _ in range(2)]


@pytest.fixture(scope="module")
def proxy(nginx_factory, hosts):
    return nginx_factory(*hosts)


def address(server) -> str:
    return server.base_url.removeprefix("http://")


def test_every_worker_of_both_hosts_uses_the_redis_hub(hosts):
    for host in hosts:
        # A worker that has just booted may still be connecting to Redis.
        wait_for(lambda h=host: every_worker(h, lambda hub: (hub["backend"], hub["ok"],
                                                             hub["degraded"]) ==
                                             ("redis", True, False)), timeout=20, interval=0.2)


def test_nginx_keeps_metrics_off_the_public_address_and_passes_its_request_id(hosts, proxy):
    outside = RelayClient(proxy.base_url)
    assert outside.request("GET", "/metrics").status == 404
    # Each host still answers its own scraper (this machine is in METRICS_ALLOW).
    assert RelayClient(hosts[0].base_url).request("GET", "/metrics").status == 200
    # nginx names each request (32 hex digits, where Relay's own are 16) and replaces a
    # client's; Relay (TRUSTED_PROXIES) answers with nginx's id.
    answer = outside.request("GET", "/healthz", headers={"X-Request-Id": "forged"})
    assert answer.status == 200
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers.get("X-Request-Id", ""))


def test_nginx_streams_unbuffered_uncompressed_and_keeps_the_public_host(hosts, proxy,
                                                                        upstream):
    browser = RelayClient(proxy.base_url).open()
    thread = browser.new_thread()
    share = browser.post_json(f"/threads/{thread}/share")
    assert share.status == 201
    # Relay builds absolute links from the host nginx (a trusted proxy) passes on: the
    # public one, port and all.
    assert share.json()["share_url"].startswith(proxy.base_url + "/s/")

    # The model's first word, then a long silence: the word must not wait in a buffer.
    prompt = upstream.script(Reply(tokens=["first ", "second"], token_delay_s=10))
    sent = browser.send(thread, prompt)
    started = time.monotonic()
    conn = SSEConnection(proxy.base_url + sent["stream_url"], cookies=browser.cookie_header(),
                         headers={"Accept-Encoding": "gzip"}, timeout=30)
    with conn:
        assert conn.status == 200
        assert conn.headers["Content-Type"].startswith("text/event-stream")
        assert conn.headers["Cache-Control"] == "no-cache"
        assert conn.headers.get("Content-Encoding") is None  # gzip would buffer events
        first = next(event for event in conn if event.event == "delta")
        arrived_in = time.monotonic() - started
        assert decode_delta(first.data) == "first "
        assert arrived_in < 5
        browser.post_json(f"/messages/{sent['assistant_message']['id']}/cancel")


def test_followers_on_both_hosts_see_the_reply_live_and_whole(hosts, proxy, upstream):
    owner = RelayClient(proxy.base_url).open()
    thread = owner.new_thread()
    # Through nginx (round-robin), and on each host directly so that both surely have some.
    followers = [Follower(target, owner, thread) for target in [proxy] * 4 + hosts]
    text = words(150, "live")
    prompt = upstream.script(Reply.words(text, token_delay_s=0.02))
    sent = owner.send(thread, prompt)
    reply_id = sent["assistant_message"]["id"]
    for follower in followers:
        follower.follow(reply_id)
    driver = Driver(owner, sent["stream_url"])  # through nginx: generated by either host
    driver.join(60)
    for follower in followers:
        follower.join(60)

    assert (driver.error, driver.end, driver.text) == (None, "done", text)
    for follower in followers:
        assert follower.error is None
        assert not follower.fell_back  # every update came over the websocket
        assert follower.streaming_updates() >= 3, follower.states
        assert follower.last == ("complete", text)
    assert terminal(owner, reply_id)["content"] == text
    assert len(upstream.records_for(prompt)) == 1


def test_sse_reconnects_through_nginx_land_on_both_hosts_with_no_gap_or_duplicate(
        hosts, proxy, upstream):
    browser = RelayClient(proxy.base_url).open()
    text = (TRICKY + " ") * 2 + words(200, "sse")
    prompt = upstream.script(Reply.words(text, token_delay_s=0.01))
    sent = browser.send(browser.new_thread(), prompt)
    reply_id = sent["assistant_message"]["id"]
    received, end_event, _ = read_reconnecting(browser, sent["stream_url"])
    assert end_event == "done"
    assert received == text
    assert terminal(browser, reply_id)["content"] == text
    assert len(upstream.records_for(prompt)) == 1
    # nginx logs a stream when it ends: both hosts served some of the reconnects.
    path = f"/messages/{reply_id}/stream"
    wait_for(lambda: {hit.upstreams[-1] for hit in proxy.hits() if hit.path == path}
             == {address(host) for host in hosts}, timeout=10, interval=0.1)


@pytest.mark.parametrize("where", ["through nginx", "at the other host"])
def test_stop_reaches_the_generating_host_and_keeps_the_text(hosts, proxy, upstream, where):
    generating, other = hosts
    owner = RelayClient(generating.base_url).open()
    text = words(400, "stop")
    prompt = upstream.script(Reply.words(text, token_delay_s=0.02))
    sent = owner.send(owner.new_thread(), prompt)
    reply_id = sent["assistant_message"]["id"]
    stopper = same_browser(owner, proxy.base_url if where == "through nginx" else other.base_url)
    seen: list[str] = []
    with owner.stream(sent["stream_url"]) as conn:  # claims it: generated on this host
        events = iter(conn)
        for event in events:
            seen.append(decode_delta(event.data))
            if len(seen) == 5:
                break
        asked = time.monotonic()
        assert stopper.post_json(f"/messages/{reply_id}/cancel").status == 202
        end = read_to_end(events, seen)
        stopped_in = time.monotonic() - asked
    assert end == "aborted"
    assert stopped_in < 2
    message = terminal(owner, reply_id)
    assert message["status"] == "aborted"
    assert message["content"] == "".join(seen)  # exactly what the tab was shown
    assert message["content"] and text.startswith(message["content"])
    record = upstream.records_for(prompt)[0]
    upstream.wait_until(lambda: record.closed_early, timeout=5)


def test_stop_at_the_other_host_reaches_a_silent_model(hosts, upstream):
    generating, other = hosts
    owner = RelayClient(generating.base_url).open()
    prompt = upstream.script(Reply.words("never shown", first_token_delay_s=20))
    sent = owner.send(owner.new_thread(), prompt)
    reply_id = sent["assistant_message"]["id"]
    with owner.stream(sent["stream_url"]) as conn:  # claims it; the model says nothing
        wait_for(lambda: owner.message(reply_id)["status"] == "streaming", 10)
        asked = time.monotonic()
        answer = same_browser(owner, other.base_url).post_json(f"/messages/{reply_id}/cancel")
        assert answer.status == 202
        assert read_reply(conn)[:2] == ("", "aborted")
        stopped_in = time.monotonic() - asked
    assert stopped_in < 2
    assert owner.message(reply_id)["status"] == "aborted"
    record = upstream.records_for(prompt)[0]
    upstream.wait_until(lambda: record.closed_early, timeout=5)


def test_a_killed_hosts_reply_is_interrupted_by_the_other_and_continued_there(
        server_factory, nginx_factory, postgres_url, redis_server, upstream):
    # Hosts of its own: this test kills one.
    victim, survivor = [server_factory(postgres_url, workers=2, REDIS_URL=redis_server.url(),
                                       **HOST_ENV) for _ in range(2)]
    proxy = nginx_factory(victim, survivor)
    owner = RelayClient(victim.base_url).open()
    text = words(600, "k")
    rest = "and the rest, written by the host that survived."
    prompt = upstream.script(Reply.words(text, token_delay_s=0.02),
                             Reply.words(rest, token_delay_s=0.01))
    sent = owner.send(owner.new_thread(), prompt)
    reply_id = sent["assistant_message"]["id"]

    with owner.stream(sent["stream_url"]) as conn:  # claims it: generated by the victim
        seen = []
        for event in conn:
            seen.append(decode_delta(event.data))
            if len(seen) == 30:
                break
        flushed = wait_for(lambda: len(t := stored_text(postgres_url, reply_id)) >= 40 and t)
        os.killpg(victim.process.pid, signal.SIGKILL)  # the master and both workers
        killed = time.monotonic()
    victim.process.wait(10)

    watcher = same_browser(owner, survivor.base_url)
    message = wait_for(lambda: (m := watcher.message(reply_id))["status"] == "interrupted" and m,
                       timeout=30, interval=0.1)
    assert time.monotonic() - killed < STALE_AFTER_S + 3
    prefix = message["content"]
    assert prefix.startswith(flushed)  # nothing that was flushed is lost
    assert text.startswith(prefix)
    assert message["error"]

    # nginx routes around the dead host: reads and new prompts all reach the survivor.
    via_nginx = same_browser(owner, proxy.base_url)
    for _ in range(4):
        assert via_nginx.message(reply_id)["status"] == "interrupted"
        via_nginx.new_thread()  # a refused connection is retried, even for a POST

    answer = watcher.post_json(f"/messages/{reply_id}/continue")
    assert answer.status == 202
    stream_url = answer.json()["stream_url"]
    assert f"after={len(prefix)}" in stream_url
    new, end_event, _ = read_reply(watcher.stream(stream_url))
    assert (new, end_event) == (rest, "done")
    done = terminal(watcher, reply_id)
    assert (done["status"], done["content"]) == ("complete", prefix + rest)
    whole, end_event, _ = read_reply(via_nginx.stream(f"/messages/{reply_id}/stream?after=0"))
    assert (whole, end_event) == (prefix + rest, "done")
    requests = upstream.records_for(prompt)
    assert len(requests) == 2
    assert {"role": "assistant", "content": prefix} in requests[-1].body["messages"]
