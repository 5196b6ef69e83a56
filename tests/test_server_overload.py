"""A worker at capacity: new replies wait in a visible queue, then start; past the queue's
length new prompts get a 503 with Retry-After; the replies already streaming are untouched."""

from __future__ import annotations

import threading
import time

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reply
from streaming.sse import decode_delta

from .test_server_streaming import terminal

pytestmark = pytest.mark.server


def test_past_capacity_a_reply_queues_visibly_then_streams_exactly(server_factory, upstream):
    relay = server_factory(MAX_GENERATIONS="1", MAX_QUEUED="1", MAX_LOOP_LAG_MS="0")
    browser = RelayClient(relay.base_url).open()
    first_text = " ".join(f"first{i}" for i in range(40))
    first = browser.send(browser.new_thread(),
                         upstream.script(Reply.words(first_text, token_delay_s=0.05)))
    first_stream = browser.stream(first["stream_url"])  # claims the only slot
    events = iter(first_stream)
    first_part = decode_delta(next(e for e in events if e.event == "delta").data)

    second_text = "Second, once the slot is free."
    second = browser.send(browser.new_thread(), upstream.script(Reply.words(second_text)))
    seen: list = []
    reader = threading.Thread(target=lambda: seen.extend(browser.stream(second["stream_url"])))
    reader.start()
    deadline = time.monotonic() + 20
    while not any(e.event == "queued" for e in list(seen)):  # it waits in the queue now
        assert time.monotonic() < deadline, "the second reply never showed it was queued"
        time.sleep(0.02)

    # Every slot busy and one reply already waiting: a new prompt is refused, not queued.
    thread = browser.new_thread()
    refused = browser.post_json(f"/threads/{thread}/messages", {"content": "one more"})
    assert refused.status == 503
    assert int(refused.headers["Retry-After"]) > 0
    assert "capacity" in refused.json()["message"]
    assert browser.get_json(f"/threads/{thread}").json()["messages"] == []

    rest = "".join(decode_delta(e.data) for e in events if e.event == "delta")
    assert first_part + rest == first_text  # the running reply kept going, exactly
    reader.join(30)
    names = [e.event for e in seen]
    assert names[0] == "queued" and seen[0].data == "queued — next"
    assert seen[0].id is None  # the cursor counts text only
    assert names[-1] == "done"
    assert "".join(decode_delta(e.data) for e in seen if e.event == "delta") == second_text
    assert terminal(browser, second["assistant_message"]["id"])["content"] == second_text
    done = terminal(browser, first["assistant_message"]["id"])
    assert (done["status"], done["content"]) == ("complete", first_text)


def test_a_queued_headless_reply_starts_when_a_slot_frees(server_factory, upstream):
    relay = server_factory(MAX_GENERATIONS="1", MAX_LOOP_LAG_MS="0", DRIVER_GRACE_MS="100")
    browser = RelayClient(relay.base_url).open()
    texts = [" ".join(f"h{n}w{i}" for i in range(15)) for n in range(3)]
    sent = [browser.send(browser.new_thread(), upstream.script(
        Reply.words(text, token_delay_s=0.02))) for text in texts]
    for reply, text in zip(sent, texts, strict=True):
        done = terminal(browser, reply["assistant_message"]["id"], timeout=30)
        assert (done["status"], done["content"]) == ("complete", text)
    assert read_reply(browser.stream(sent[0]["stream_url"]))[:2] == (texts[0], "done")
