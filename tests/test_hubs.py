"""The hub backends as two workers see them: what one publishes, the other's subscribers get.

Each backend runs here as two hub objects in one process (two "workers") on the same
database and broker, with the real redis-py and psycopg clients.
"""

from __future__ import annotations

import contextlib
import time
import uuid

import gevent
import gevent.event
import pytest
from sqlalchemy import update
from sqlalchemy.orm import sessionmaker

from models import Message, Thread, thread_channel
from streaming.hub import RESYNC, InProcessHub
from streaming.watcher import DatabaseWatcher


def wait_event(subscription, predicate, timeout: float = 5.0):
    """The first event matching `predicate` within `timeout`, else None."""
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        event = subscription.get(timeout=remaining)
        if event is not None and predicate(event):
            return event
    return None


def started(hub):
    hub.start()
    return hub


@pytest.fixture
def two_sqlite_workers(engine):
    """Two in-process hubs with database watchers on one SQLite file."""
    sessions = sessionmaker(engine, expire_on_commit=False)
    hubs = []
    for _ in range(2):
        hub = InProcessHub()
        hub.watcher = DatabaseWatcher(sessions, hub.deliver, hub.channels, interval_s=0.02)
        hubs.append(started(hub))
    yield sessions, hubs
    for hub in hubs:
        hub.stop()


def new_reply(sessions, status: str = "streaming") -> Message:
    with sessions() as session:
        thread = Thread(owner="someone")
        session.add(thread)
        session.commit()
        message = Message(thread_id=thread.id, role="assistant", content="", status=status)
        session.add(message)
        session.commit()
        return message


def test_watcher_tells_one_worker_what_another_changed_once(two_sqlite_workers):
    sessions, (_, follower_side) = two_sqlite_workers
    reply = new_reply(sessions)
    with follower_side.subscribe(thread_channel(reply.thread_id)) as subscription:
        assert wait_event(subscription, lambda e: e.get("message") == reply.id)
        with sessions() as session:  # what the generating worker's writer does at the end
            session.execute(update(Message).where(Message.id == reply.id)
                            .values(status="complete", content="done"))
            session.commit()
        ended = wait_event(subscription, lambda e: e.get("status") == "complete")
        assert ended == {"type": "persisted", "message": reply.id, "status": "complete"}
        # Seen once: the look-back window re-reads the row but does not publish it again.
        assert wait_event(subscription, lambda e: e.get("message") == reply.id, 0.3) is None


def test_watcher_announces_new_messages_and_skips_this_workers_generations(engine):
    sessions = sessionmaker(engine, expire_on_commit=False)
    local: set[int] = set()
    hub = InProcessHub()
    watcher = DatabaseWatcher(sessions, hub.deliver, hub.channels, interval_s=1,
                              is_local=local.__contains__)
    first = new_reply(sessions)
    with hub.subscribe(thread_channel(first.thread_id)) as subscription:
        with sessions() as session:
            mine = Message(thread_id=first.thread_id, role="assistant", status="streaming")
            theirs = Message(thread_id=first.thread_id, role="user", status="complete")
            session.add_all([mine, theirs])
            session.commit()
        local.add(mine.id)
        assert watcher.look() == 2  # `first` and `theirs`, not `mine`
        events = [subscription.get(timeout=0), subscription.get(timeout=0)]
        assert [e["type"] for e in events] == ["created", "created"]
        assert {e["message"] for e in events} == {first.id, theirs.id}
        assert watcher.look() == 0


def test_watcher_tells_one_worker_of_another_workers_rename_switch_and_delete(
        two_sqlite_workers):
    sessions, (_, follower_side) = two_sqlite_workers
    reply = new_reply(sessions, status="complete")
    thread_id = reply.thread_id
    with sessions() as session:
        other = Message(thread_id=thread_id, role="assistant", status="complete")
        session.add(other)
        session.flush()
        session.execute(update(Thread).where(Thread.id == thread_id)
                        .values(active_leaf_id=other.id))
        session.commit()
    with follower_side.subscribe(thread_channel(thread_id)) as subscription:
        # The look that announced it noted the thread as it was (nothing to announce).
        assert wait_event(subscription, lambda e: e.get("message") == other.id)
        with sessions() as session:  # what another worker's rename does
            session.execute(update(Thread).where(Thread.id == thread_id)
                            .values(title="Renamed elsewhere"))
            session.commit()
        assert wait_event(subscription, lambda e: e.get("type") == "renamed") == \
            {"type": "renamed", "thread": thread_id}
        with sessions() as session:  # ...and its version switch
            session.execute(update(Thread).where(Thread.id == thread_id)
                            .values(active_leaf_id=reply.id))
            session.commit()
        assert wait_event(subscription, lambda e: e.get("type") == "selected") == \
            {"type": "selected", "leaf": reply.id}
        # A new turn moves the leaf too: announced as created messages, not as a switch.
        with sessions() as session:
            turn = Message(thread_id=thread_id, parent_id=reply.id, role="user")
            session.add(turn)
            session.flush()
            session.execute(update(Thread).where(Thread.id == thread_id)
                            .values(active_leaf_id=turn.id))
            session.commit()
        events = []
        assert wait_event(subscription, lambda e: events.append(e) or e.get("type") == "created")
        assert wait_event(subscription, lambda e: events.append(e) and False, 0.3) is None
        assert not [e for e in events if e.get("type") == "selected"]
        with sessions() as session:  # ...and its delete
            session.execute(update(Message).where(Message.thread_id == thread_id)
                            .values(parent_id=None))
            session.query(Message).filter(Message.thread_id == thread_id).delete()
            session.query(Thread).filter(Thread.id == thread_id).delete()
            session.commit()
        assert wait_event(subscription, lambda e: e.get("type") == "deleted") == \
            {"type": "deleted", "thread": thread_id}
        # Announced once.
        assert wait_event(subscription, lambda e: e.get("type") == "deleted", 0.3) is None


def test_watcher_costs_nothing_without_followers(engine):
    sessions = sessionmaker(engine, expire_on_commit=False)
    hub = InProcessHub()
    watcher = DatabaseWatcher(sessions, hub.deliver, hub.channels, interval_s=1)
    new_reply(sessions)
    assert watcher.look() == 0
    assert watcher.looks == 0  # no query at all


# -- brokers -----------------------------------------------------------------------------------
def redis_pair(url: str, sessions=None):
    from streaming.hub_redis import RedisHub

    prefix = f"relay-test-{uuid.uuid4().hex[:8]}:"
    return [started(watched(RedisHub(url, watcher=None, prefix=prefix), sessions))
            for _ in range(2)]


def postgres_pair(url: str):
    from streaming.hub_postgres import PostgresHub

    prefix = f"relay-test-{uuid.uuid4().hex[:8]}:"
    return [started(PostgresHub(url, watcher=None, prefix=prefix)) for _ in range(2)]


def watched(hub, sessions):
    """`hub` with a database watcher of its own, as the app factory builds it."""
    if sessions is not None:
        hub.watcher = DatabaseWatcher(sessions, hub.deliver, hub.channels, interval_s=1)
    return hub


@pytest.fixture(params=["redis", "postgres"])
def broker_pair(request):
    if request.param == "redis":
        hubs = redis_pair(request.getfixturevalue("redis_url"))
    else:
        hubs = postgres_pair(request.getfixturevalue("postgres_url"))
    assert wait_until(lambda: not any(h.degraded for h in hubs))
    yield hubs
    for hub in hubs:
        hub.stop()


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        gevent.sleep(0.02)
    return False


def test_an_event_published_by_one_worker_reaches_the_others_subscribers(broker_pair):
    publisher, listener = broker_pair
    with listener.subscribe("thread:7") as subscription, \
            listener.subscribe("thread:8") as elsewhere:
        publisher.publish_many([("thread:7", {"type": "persisted", "message": 1, "end": 5}),
                                ("thread:7", {"type": "persisted", "message": 1, "end": 9})])
        got = [wait_event(subscription, lambda e: True), wait_event(subscription, lambda e: True)]
        assert got == [{"type": "persisted", "message": 1, "end": 5},
                       {"type": "persisted", "message": 1, "end": 9}]
        assert elsewhere.get(timeout=0.2) is None  # one channel per thread
    assert listener.health()["received"] == 2
    assert listener.health()["degraded"] is False


def test_a_channel_nobody_follows_is_no_longer_listened_to(broker_pair):
    publisher, listener = broker_pair
    with listener.subscribe("thread:9"):
        assert wait_until(lambda: "thread:9" in listener._listening)
    assert wait_until(lambda: "thread:9" not in listener._listening)
    publisher.publish("thread:9", {"type": "persisted", "message": 3})
    gevent.sleep(0.3)
    assert listener.health()["received"] == 0


def test_stop_reaches_the_worker_that_generates_through_a_callback(broker_pair):
    publisher, runner = broker_pair
    stops = []
    subscription = runner.subscribe("thread:3", on_event=stops.append)
    publisher.publish("thread:3", {"type": "cancel", "message": 12})
    assert wait_until(lambda: stops == [{"type": "cancel", "message": 12}])
    subscription.close()


def test_a_postgres_publisher_dropped_by_the_listener_mid_send_fails_cleanly(postgres_url):
    import psycopg

    publisher, listener = postgres_pair(postgres_url)
    try:
        publisher._send([("relay-test:warm", "{}")])  # opens the publishing connection
        real = publisher._publisher

        class DroppedMidSend:  # the listener's `_close` runs while this send waits
            closed = False

            def execute(self, *args):
                publisher._close()
                raise psycopg.OperationalError("server closed the connection unexpectedly")

            def close(self):
                self.closed = True

        publisher._publisher = dropped = DroppedMidSend()
        with pytest.raises(psycopg.OperationalError):  # the broker's error, not AttributeError
            publisher._send([("relay-test:x", "{}")])
        assert dropped.closed and publisher._publisher is None
        real.close()
        publisher._send([("relay-test:x", "{}")])  # and the next send reconnects
    finally:
        publisher.stop()
        listener.stop()


# Run as a worker runs: gevent-patched. The listener drops both connections (`_close`) in
# the same loop turn as the sender starts waiting on the publisher's socket.
DROPPED_WHILE_A_SEND_WAITS = """
from gevent import monkey; monkey.patch_all()
import sys, gevent
from streaming.hub_postgres import PostgresHub
hub = PostgresHub(sys.argv[1], watcher=None, prefix="relay-test-close:")
for round in range(20):
    hub._send([("relay-test-close:warm", "{}")])  # opens the publishing connection
    sender = gevent.spawn(hub._send, [("relay-test-close:x", "{}")] * 50)
    gevent.sleep(0)  # the sender now waits on its socket, not yet polled by the loop
    hub._close()
    sender.join()
    gevent.sleep(0.01)
hub._send([("relay-test-close:after", "{}")])
print("alive")
"""


def test_dropping_the_postgres_connections_while_a_send_waits_keeps_the_worker(postgres_url):
    # Closing the publisher under the waiting sender made libev abort the worker
    # ("I/O watcher with invalid fd found in epoll_ctl"): a worker lost mid-reply.
    import subprocess
    import sys

    from bench.relay_server import ROOT

    done = subprocess.run([sys.executable, "-c", DROPPED_WHILE_A_SEND_WAITS, postgres_url],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "alive"


def test_a_broker_that_is_away_degrades_to_local_delivery_and_the_watcher(engine):
    from bench.relay_server import free_port

    sessions = sessionmaker(engine, expire_on_commit=False)
    away, other = redis_pair(f"redis://127.0.0.1:{free_port()}/0", sessions)
    try:
        assert wait_until(lambda: away.health()["error"] is not None)
        with away.subscribe("thread:1") as subscription:
            away.publish("thread:1", {"type": "persisted", "message": 4, "end": 2})
            assert subscription.get(timeout=1) == {"type": "persisted", "message": 4, "end": 2}
        health = away.health()
        assert health["degraded"] is True and "ConnectionError" in health["error"]
        assert health["watcher"] is True  # other workers' changes come from the database
    finally:
        away.stop()
        other.stop()


def test_a_restarted_redis_is_rejoined_with_a_resync(redis_server, engine):
    sessions = sessionmaker(engine, expire_on_commit=False)
    publisher, listener = redis_pair(redis_server.url(), sessions)
    try:
        subscription = listener.subscribe("thread:5")
        assert wait_until(lambda: not listener.degraded)
        assert listener.health()["watcher"] is False
        redis_server.stop()
        publisher.publish("thread:6", {"type": "persisted", "message": 1})  # finds it away
        assert wait_until(lambda: listener.degraded and publisher.degraded)
        assert listener.health()["watcher"] is True
        redis_server.start()
        # Back: everything that was followed is re-read, and events flow again.
        assert wait_event(subscription, lambda e: e == RESYNC, timeout=15)
        assert wait_until(lambda: not publisher.degraded, timeout=15)
        assert listener.health()["watcher"] is False
        publisher.publish("thread:5", {"type": "persisted", "message": 2})
        assert wait_event(subscription, lambda e: e.get("message") == 2)
        subscription.close()
    finally:
        publisher.stop()
        listener.stop()


def test_engine_of_the_app_picks_the_backend_from_the_configuration(tmp_path, redis_url,
                                                                    postgres_url):
    from app import create_app
    from config import TestConfig

    sqlite = f"sqlite:///{tmp_path / 'r.sqlite3'}"
    cases = [({"DATABASE_URL": sqlite}, "in-process"),
             ({"DATABASE_URL": postgres_url}, "postgres"),
             ({"DATABASE_URL": sqlite, "REDIS_URL": redis_url}, "redis"),
             ({"DATABASE_URL": postgres_url, "REDIS_URL": redis_url,
               "HUB_BACKEND": "postgres"}, "postgres")]
    for overrides, backend in cases:
        app = create_app(TestConfig, overrides)
        assert app.extensions["relay"].hub.name == backend
    with pytest.raises(ValueError, match="HUB_BACKEND"):
        create_app(TestConfig, {"DATABASE_URL": sqlite, "HUB_BACKEND": "carrier-pigeon"})
    with pytest.raises(ValueError, match="needs REDIS_URL"):
        create_app(TestConfig, {"DATABASE_URL": sqlite, "HUB_BACKEND": "redis"})


# -- fan-out to websocket followers ------------------------------------------------------------
def test_each_change_is_rendered_once_per_worker_and_a_slow_follower_is_dropped(app):
    from views.feeds import FollowerFeeds

    hub = InProcessHub()
    renders = []

    def render(thread_id, events, readonly):
        renders.append((thread_id, len(events), readonly))
        return f"frame {len(renders)} readonly={readonly}"

    feeds = FollowerFeeds(app, hub, render, queue_frames=4)
    environ = {"wsgi.url_scheme": "http", "HTTP_HOST": "relay.test", "HTTP_COOKIE": "secret"}
    with feeds.follow(1, False, environ) as slow, contextlib.ExitStack() as stack:
        fast = [stack.enter_context(feeds.follow(1, False, environ)) for _ in range(50)]
        viewer = stack.enter_context(feeds.follow(1, True, environ))
        assert feeds.stats() == {"threads": 1, "followers": 52}
        received = {id(f): [] for f in [*fast, viewer]}
        for i in range(6):
            hub.publish("thread:1", {"type": "persisted", "message": 1, "end": i})
            gevent.sleep(0.01)  # the feed renders this change before the next one
            for follower in [*fast, viewer]:
                while (frame := follower.next_frame(0)) is not None:
                    received[id(follower)].append(frame)
        # One render per change and kind of follower, not one per follower.
        assert len(renders) == 12
        assert all(len(frames) == 6 for frames in received.values())
        assert all("readonly=True" in f for f in received[id(viewer)])
        # The follower that read nothing fell a whole queue behind: dropped, alone.
        assert slow.dropped is True
        assert not any(f.dropped for f in [*fast, viewer])
    assert feeds.stats() == {"threads": 0, "followers": 0}
    assert hub.subscriber_count() == 0



def test_the_last_follower_leaving_mid_render_lets_the_render_finish(app):
    from views.feeds import FollowerFeeds

    hub = InProcessHub()
    started, release = gevent.event.Event(), gevent.event.Event()
    outcome = []

    def render(thread_id, events, readonly):
        started.set()
        try:
            release.wait(10)  # a query under way: killing it here breaks its connection
        except BaseException as err:
            outcome.append(type(err).__name__)
            raise
        outcome.append("finished")
        return "frame"

    feeds = FollowerFeeds(app, hub, render, queue_frames=4)
    with feeds.follow(1, False, {"wsgi.url_scheme": "http", "HTTP_HOST": "relay.test"}):
        hub.publish("thread:1", {"type": "persisted", "message": 1, "end": 1})
        assert started.wait(10)
    gevent.sleep(0.05)  # a kill would land now
    release.set()
    gevent.sleep(0.05)
    assert outcome == ["finished"]
    assert feeds.stats() == {"threads": 0, "followers": 0}
    assert hub.subscriber_count() == 0


def test_changes_rendered_while_the_database_is_away_reach_followers_once_it_is_back(
        app, monkeypatch, caplog):
    from sqlalchemy.exc import OperationalError

    import views.feeds
    from views.feeds import FollowerFeeds

    monkeypatch.setattr(views.feeds, "RENDER_RETRY_S", (0.01,), raising=False)
    hub = InProcessHub()
    failures = [OperationalError("SELECT 1", {}, Exception("connection refused"))] * 3

    def render(thread_id, events, readonly):
        if failures:
            raise failures.pop()
        return "the reply's end"

    feeds = FollowerFeeds(app, hub, render, queue_frames=4)
    with feeds.follow(1, False, {"wsgi.url_scheme": "http", "HTTP_HOST": "relay.test"}) as f:
        hub.publish("thread:1", {"type": "persisted", "message": 1, "end": 9,
                                 "status": "complete"})
        assert f.next_frame(10) == "the reply's end"
    assert not failures
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


def test_a_subscriber_that_fell_a_queue_behind_is_told_to_resync_after_what_it_kept():
    hub = InProcessHub(queue_size=3)
    with hub.subscribe("thread:1") as subscription:
        for end in range(5):  # two more than the queue holds: the last two are dropped
            hub.publish("thread:1", {"type": "persisted", "message": 7, "end": end})
        got = [subscription.get(timeout=0) for _ in range(5)]
    assert [e["end"] for e in got[:3]] == [0, 1, 2]
    assert got[3] == RESYNC  # the end it may have lost is read again from the database
    assert got[4] is None and subscription.dropped == 2


def test_a_resync_renders_again_what_followers_may_show_live(app):
    """A feed's followers showed reply 5 streaming; the broker was away while it ended: the
    RESYNC it then gets names every message the followers may show, for render_changes."""
    from views.feeds import FollowerFeeds

    hub = InProcessHub()
    rendered = []

    def render(thread_id, events, readonly):
        rendered.append(events)
        return "frame"

    feeds = FollowerFeeds(app, hub, render, queue_frames=4)
    with feeds.follow(1, False, {"wsgi.url_scheme": "http", "HTTP_HOST": "relay.test"}) as f:
        feeds.shown(1, [5, 4])  # its first frame: reply 5 streaming, after prompt 4
        hub.publish("thread:1", {"type": "created", "messages": [8, 9]})
        assert f.next_frame(10) == "frame"
        hub.publish("thread:1", RESYNC)
        assert f.next_frame(10) == "frame"
    assert rendered[-1] == [{"type": "resync", "messages": [5, 4, 8, 9]}]
    assert RESYNC == {"type": "resync"}  # the shared event itself is left as it was
