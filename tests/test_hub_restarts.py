"""The hub's server restarted in the middle of a reply: Redis, then PostgreSQL.

Followers on both workers must end with the whole reply, exactly; while Redis is away the
hub says it is degraded (the database watcher carries the changes) and it recovers after.
"""

from __future__ import annotations

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient

from .test_server_streaming import terminal, wait_for
from .test_two_hosts import Driver, Follower, every_worker, words

pytestmark = pytest.mark.server


def followers_on_both_workers(server, owner: RelayClient, thread: int,
                              per_worker: int = 2) -> list[Follower]:
    """Websocket followers until each worker holds `per_worker` (the kernel picks)."""
    followers: list[Follower] = []
    count = {pid: 0 for pid in server.worker_pids()}
    for _ in range(80):
        if all(n >= per_worker for n in count.values()):
            return followers
        follower = Follower(server, owner, thread)
        pid = server.worker_of(follower.ws.sock.getsockname()[1])
        if count.get(pid, per_worker) >= per_worker:
            follower.ws.close()
            continue
        count[pid] += 1
        followers.append(follower)
    raise AssertionError(f"followers landed on one worker only: {count}")


def start_reply(server, upstream, text: str):
    """A thread with followers on both workers, then a reply streamed by a driver tab."""
    owner = RelayClient(server.base_url).open()
    thread = owner.new_thread()
    followers = followers_on_both_workers(server, owner, thread)
    sent = owner.send(thread, upstream.script(Reply.words(text, token_delay_s=0.02)))
    reply_id = sent["assistant_message"]["id"]
    for follower in followers:
        follower.follow(reply_id)
    return owner, reply_id, followers, Driver(owner, sent["stream_url"])


def test_redis_restarted_mid_reply_followers_get_it_all_and_the_hub_recovers(
        server_factory, redis_server, upstream):
    relay = server_factory(workers=2, REDIS_URL=redis_server.url())
    # A worker that has just booted may still be connecting its hub.
    wait_for(lambda: every_worker(relay, lambda hub: hub["backend"] == "redis"
                                  and not hub["degraded"]), timeout=20, interval=0.2)
    text = words(600, "redis")  # about 12 s of model output
    owner, reply_id, followers, driver = start_reply(relay, upstream, text)
    wait_for(lambda: all(f.streaming_updates() >= 2 for f in followers), timeout=15)

    redis_server.stop()
    assert owner.message(reply_id)["status"] == "streaming"  # the outage is mid-reply
    wait_for(lambda: every_worker(relay, lambda hub: hub["degraded"]), timeout=20,
             interval=0.2)
    # Redis is away, yet every follower is still sent the reply's progress.
    seen = [len(f.states) for f in followers]
    wait_for(lambda: all(len(f.states) > n for f, n in zip(followers, seen, strict=True)),
             timeout=10)

    redis_server.start()
    wait_for(lambda: every_worker(relay, lambda hub: hub["ok"] and not hub["degraded"]),
             timeout=30, interval=0.2)
    driver.join(60)
    for follower in followers:
        follower.join(60)

    assert (driver.error, driver.end, driver.text) == (None, "done", text)
    message = terminal(owner, reply_id)
    assert (message["status"], message["content"]) == ("complete", text)
    for follower in followers:
        assert follower.error is None
        assert not follower.fell_back  # the websocket stayed open through the outage
        assert follower.streaming_updates() >= 3
        assert follower.last == ("complete", text)


def test_postgres_restarted_mid_reply_loses_nothing_and_followers_recover(
        server_factory, postgres_url, postgres_cluster, upstream):
    relay = server_factory(postgres_url, workers=2, REDIS_URL="")  # LISTEN/NOTIFY hub
    wait_for(lambda: every_worker(relay, lambda hub: hub["backend"] == "postgres"
                                  and not hub["degraded"]), timeout=20, interval=0.2)
    text = words(600, "pg")
    owner, reply_id, followers, driver = start_reply(relay, upstream, text)
    wait_for(lambda: all(f.streaming_updates() >= 2 for f in followers), timeout=15)

    postgres_cluster.stop()
    try:
        # Down while the model writes on: the generation holds its text in memory meanwhile.
        shown = len(driver.parts)
        wait_for(lambda: len(driver.parts) >= shown + 40, timeout=15)
    finally:
        postgres_cluster.start()
    driver.join(60)
    for follower in followers:
        follower.join(60)
    assert "delta writer commit failed" in relay.log()  # the outage really hit the writer

    message = terminal(owner, reply_id, timeout=60)
    stored = message["content"]
    if message["status"] == "complete":
        assert stored == text
        assert (driver.error, driver.end, driver.text) == (None, "done", text)
    else:  # the outage outlasted the writer's retries: a clear end, and nothing lost
        assert message["status"] in ("error", "interrupted"), message
        assert stored and text.startswith(stored)
    for follower in followers:
        assert follower.error is None
        assert follower.last == (message["status"], stored.strip()), follower.fell_back
    wait_for(lambda: every_worker(relay, lambda hub: hub["backend"] == "postgres"
                                  and hub["ok"] and not hub["degraded"]),
             timeout=30, interval=0.2)
