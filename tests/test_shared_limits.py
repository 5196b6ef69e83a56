"""Rate limits hold per owner across hosts when they share Redis, and survive Redis leaving."""

from __future__ import annotations

import uuid

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient

pytestmark = pytest.mark.server


def post(client: RelayClient, thread: int, prompt: str) -> int:
    # Rate limits are what is measured: prompts go in parallel, not one reply at a time.
    return client.post_json(f"/threads/{thread}/messages",
                            {"content": prompt, "parallel": True}).status


def test_a_rate_limit_is_shared_by_two_hosts_on_one_redis(server_factory, redis_url, upstream):
    shared = {"REDIS_URL": redis_url, "RATE_LIMIT": "3/minute",
              "HUB_PREFIX": f"relay-test-{uuid.uuid4().hex[:8]}:"}
    first, second = server_factory(**shared), server_factory(**shared)
    prompt = upstream.script(Reply.words("ok"))
    browser = RelayClient(first.base_url).open()
    thread = browser.new_thread()

    def on(host, thread_id: int) -> int:
        # The same browser at either host: its cookie (signed with the shared SECRET_KEY)
        # holds for 127.0.0.1 whatever the port.
        browser.base_url = host.base_url
        return post(browser, thread_id, prompt)

    browser.base_url = second.base_url
    other_thread = browser.new_thread()  # each host has its own SQLite file here
    statuses = [on(first, thread), on(second, other_thread), on(first, thread),
                on(second, other_thread)]
    assert statuses == [201, 201, 201, 429]


def test_posting_goes_on_when_the_limits_redis_is_away(server_factory, upstream):
    from bench.relay_server import free_port

    relay = server_factory(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",
                           RATE_LIMIT="100/minute")
    client = RelayClient(relay.base_url).open()
    thread = client.new_thread()
    assert post(client, thread, upstream.script(Reply.words("still here"))) == 201
    health = client.get_json("/healthz").json()
    assert health["hub"]["degraded"] is True  # and it says so
