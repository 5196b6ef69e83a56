"""Two gevent workers on one database: a reconnect may land on the worker that is not
generating the reply, which must then read it from the database, still exactly."""

from __future__ import annotations

import itertools
import json
import re
import threading
import time
import urllib.request
import uuid

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reconnecting, read_reply

from .test_server_followers import STATUS, open_socket
from .test_server_streaming import TRICKY, terminal, wait_for

pytestmark = pytest.mark.server


# Each hub backend with two workers: in-process plus the database watcher (SQLite),
# PostgreSQL LISTEN/NOTIFY, and Redis pub/sub (on PostgreSQL).
BACKENDS = {"sqlite": "in-process", "postgresql": "postgres", "redis": "redis"}


@pytest.fixture(scope="module", params=list(BACKENDS))
def two_workers(request, server_factory):
    url = None if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    env = {}
    if request.param == "redis":
        env = {"REDIS_URL": request.getfixturevalue("redis_url"),
               "HUB_PREFIX": f"relay-test-{uuid.uuid4().hex[:8]}:"}
    server = server_factory(url, workers=2, **env)
    server.backend = BACKENDS[request.param]
    return server


def health_by_worker(server, samples: int = 40) -> dict[int, dict]:
    """/healthz of each worker, asked on fresh connections until both have answered."""
    seen: dict[int, dict] = {}
    for _ in range(samples):
        with urllib.request.urlopen(server.base_url + "/healthz", timeout=10) as resp:
            health = json.loads(resp.read())
        seen[health["worker"]] = health
        if len(seen) == 2:
            break
    return seen


def test_the_workers_run_the_configured_hub_backend(two_workers):
    healths = health_by_worker(two_workers)
    for health in healths.values():
        assert health["hub"]["backend"] == two_workers.backend
        assert health["hub"]["degraded"] is False


def test_twelve_websocket_followers_on_both_workers_see_the_reply_live(two_workers, upstream):
    owner = RelayClient(two_workers.base_url).open()
    thread = owner.new_thread()
    sockets, workers = [], []
    # The kernel spreads connections over the workers as it likes: open followers until
    # both workers have some (at least 12 in all).
    while len(sockets) < 12 or len(set(workers)) < 2:
        assert len(sockets) < 80, f"every follower landed on one worker: {workers}"
        ws = open_socket(two_workers, owner, thread)
        assert 'id="live-status"' in ws.recv()
        sockets.append(ws)
        workers.append(two_workers.worker_of(ws.sock.getsockname()[1]))
    assert None not in workers

    text = " ".join(f"live{i}" for i in range(80))
    sent = owner.send(thread, upstream.script(Reply.words(text, token_delay_s=0.02)))
    reply_id = str(sent["assistant_message"]["id"])
    results: list[list[str]] = [[] for _ in sockets]
    last_frames: list[str] = ["" for _ in sockets]

    def follow(i: int, ws) -> None:
        deadline = time.monotonic() + 40
        while time.monotonic() < deadline:
            frame = ws.recv()
            statuses = [s for mid, s in STATUS.findall(frame) if mid == reply_id]
            results[i] += statuses
            if statuses:
                last_frames[i] = frame
            if "complete" in statuses:
                return

    followers = [threading.Thread(target=follow, args=(i, ws)) for i, ws in enumerate(sockets)]
    for t in followers:
        t.start()
    for t in followers:
        t.join(60)
    for ws in sockets:
        ws.close()
    assert [r.count("streaming") >= 3 for r in results] == [True] * len(sockets), results
    assert [r[-1] if r else None for r in results] == ["complete"] * len(sockets)
    body = re.compile(r'class="message-body[^"]*"[^>]*>(.*?)</div>', re.S)
    for frame in last_frames:
        article = frame[frame.index(f'id="message-{reply_id}"'):]
        shown = re.sub(r"<[^>]+>", "", body.search(article).group(1)).split()
        assert shown == text.split()
    assert terminal(owner, int(reply_id))["content"] == text


def test_reconnects_across_workers_have_no_gap_or_duplicate(two_workers, upstream):
    browser = RelayClient(two_workers.base_url).open()
    text = (TRICKY + " ") * 3 + " ".join(f"n{i}" for i in range(200))
    prompt = upstream.script(Reply.words(text, token_delay_s=0.01))
    sent = browser.send(browser.new_thread(), prompt)
    received, end_event, _ = read_reconnecting(browser, sent["stream_url"])
    assert end_event == "done"
    assert received == text
    assert terminal(browser, sent["assistant_message"]["id"])["content"] == text
    assert len(upstream.records_for(prompt)) == 1


def test_many_tabs_on_both_workers_read_the_same_text(two_workers, upstream):
    browser = RelayClient(two_workers.base_url).open()
    text = " ".join(f"word{i}" for i in range(150))
    prompt = upstream.script(Reply.words(text, token_delay_s=0.01))
    sent = browser.send(browser.new_thread(), prompt)
    results: list[tuple] = []

    def tab():
        results.append(read_reply(browser.stream(sent["stream_url"]))[:2])

    tabs = [threading.Thread(target=tab) for _ in range(6)]
    for t in tabs:
        t.start()
    for t in tabs:
        t.join(60)
    assert results == [(text, "done")] * 6
    assert len(upstream.records_for(prompt)) == 1


def test_headless_reply_completes_with_two_workers(two_workers, upstream):
    browser = RelayClient(two_workers.base_url).open()
    text = "Written with nobody watching, by whichever worker took the post."
    prompt = upstream.script(Reply.words(text, token_delay_s=0.005))
    sent = browser.send(browser.new_thread(), prompt)
    done = terminal(browser, sent["assistant_message"]["id"])
    assert (done["status"], done["content"]) == ("complete", text)


def test_stop_reaches_a_silent_model_whichever_worker_takes_it(two_workers, upstream):
    browser = RelayClient(two_workers.base_url).open()
    replies = []
    for _ in range(6):
        prompt = upstream.script(Reply.words("never shown", first_token_delay_s=20))
        sent = browser.send(browser.new_thread(), prompt)
        conn = browser.stream(sent["stream_url"])  # claims it: generating, model silent
        replies.append((sent["assistant_message"]["id"], conn, prompt))
    for reply_id, _, _ in replies:
        wait_for(lambda rid=reply_id: browser.message(rid)["status"] == "streaming", 10)
    started = time.monotonic()
    for reply_id, _, _ in replies:
        asked = time.monotonic()
        answer = browser.post_json(f"/messages/{reply_id}/cancel")
        assert answer.status == 202
        # Whichever worker took the request, the answer is the stopped state.
        assert answer.json()["status"] == "aborted"
        assert time.monotonic() - asked < 2
    for reply_id, conn, prompt in replies:
        assert read_reply(conn)[:2] == ("", "aborted")
        assert browser.message(reply_id)["status"] == "aborted"
        record = upstream.records_for(prompt)[0]
        upstream.wait_until(lambda r=record: r.closed_early, timeout=5)
    assert time.monotonic() - started < 6  # each within about a second, not at first token


def followers_on_both_workers(server, client: RelayClient, thread: int) -> list:
    """Websocket followers of `thread` until each worker has at least two."""
    sockets, workers = [], []
    while len(sockets) < 4 or min(workers.count(w) for w in set(workers)) < 2 \
            or len(set(workers)) < 2:
        assert len(sockets) < 80, f"every follower landed on one worker: {workers}"
        ws = open_socket(server, client, thread)
        assert 'id="live-status"' in ws.recv()
        sockets.append(ws)
        workers.append(server.worker_of(ws.sock.getsockname()[1]))
    return sockets


def wait_frame(ws, predicate, timeout: float = 20.0) -> str:
    """The first frame for which `predicate` holds; fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        frame = ws.recv()
        if predicate(frame):
            return frame
    raise AssertionError("no such frame in time")


def test_a_switch_rename_and_delete_reach_followers_on_every_worker(two_workers, upstream):
    owner = RelayClient(two_workers.base_url).open()
    thread = owner.new_thread()
    sent = owner.send(thread, upstream.script(Reply.words("Version one."),
                                              Reply.words("Version two.")))
    first = sent["assistant_message"]["id"]
    terminal(owner, first)
    second = owner.post_json(f"/messages/{first}/regenerate").json()["message"]["id"]
    terminal(owner, second)
    sockets = followers_on_both_workers(two_workers, owner, thread)
    try:
        # Each change is made by whichever worker takes the request; every follower sees it.
        assert owner.post_json(f"/messages/{first}/select").status == 200
        for ws in sockets:
            frame = wait_frame(ws, lambda f: "data-active-path" in f
                               and f'id="message-{first}"' in f)
            assert f'id="message-{second}"' not in frame
        assert owner.post_json(f"/threads/{thread}/rename",
                               {"title": "Renamed on one worker"}).status == 200
        for ws in sockets:
            wait_frame(ws, lambda f: "Renamed on one worker" in f)
        assert owner.post_json(f"/threads/{thread}/delete").status == 200
        for ws in sockets:
            wait_frame(ws, lambda f: "This thread was deleted" in f)
    finally:
        for ws in sockets:
            ws.close()


@pytest.fixture(scope="module")
def slow_flushing_workers(server_factory, postgres_url):
    """Two workers whose writer flushes once a second: the generating worker's live text
    runs well ahead of what the other worker can read."""
    return server_factory(postgres_url, workers=2, STREAM_THROTTLE_MS="1000",
                          STREAM_THROTTLE_MAX_MS="1000")


def test_a_poll_never_shows_less_than_the_poll_before_whichever_worker_answers(
        slow_flushing_workers, upstream):
    server = slow_flushing_workers
    owner = RelayClient(server.base_url).open()
    thread = owner.new_thread()
    text = " ".join(f"poll{i}" for i in range(150))
    sent = owner.send(thread, upstream.script(Reply.words(text, token_delay_s=0.02)))
    reply_id = sent["assistant_message"]["id"]
    lengths: list[int] = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # each poll on a fresh connection: either worker
        message = owner.message(reply_id)
        lengths.append(len(message["content"]))
        if message["status"] not in ("pending", "streaming"):
            break
    assert message["status"] == "complete" and message["content"] == text
    assert len(set(lengths)) > 3, lengths  # it was seen growing, not only at its end
    went_back = [(a, b) for a, b in itertools.pairwise(lengths) if b < a]
    assert not went_back, f"the text went back: {went_back[:5]} in {len(lengths)} polls"
