"""Organised threads against Relay under gunicorn: a temporary chat outliving its
TEMPORARY_TTL_S is swept by the worker, its running reply stopped first; folders, pin,
archive and bulk actions over HTTP."""

from __future__ import annotations

import time

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reply


@pytest.fixture(scope="module")
def relay(server_factory):
    return server_factory(TEMPORARY_TTL_S="1", TEMPORARY_SWEEP_S="0.3")


@pytest.fixture
def browser(relay) -> RelayClient:
    return RelayClient(relay.base_url).open()


def wait_for(predicate, timeout: float = 30.0, what: str = "the condition"):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_a_temporary_chat_past_its_ttl_is_swept_and_its_reply_stopped(browser, upstream):
    kept = browser.new_thread()
    created = browser.post_json("/threads", {"temporary": True})
    assert created.status == 201 and created.json()["thread"]["temporary"] is True
    temporary = created.json()["thread"]["id"]
    prompt = upstream.script(Reply.words("slow " * 600, token_delay_s=0.05))
    turn = browser.send(temporary, prompt)
    reply_id = turn["assistant_message"]["id"]
    # This client drives the reply; the sweep stops it long before the model is done.
    text, end, _ = read_reply(browser.stream(turn["stream_url"], timeout=60))
    # It ends as stopped, or (deleted as it stopped) without a terminal event; either way
    # short of the model's whole text.
    assert end in ("aborted", None)
    assert len(text.split()) < 600
    wait_for(lambda: browser.get_json(f"/threads/{temporary}").status == 404,
             what="the temporary chat to be deleted")
    assert browser.get_json(f"/messages/{reply_id}").status == 404
    records = upstream.records_for(prompt)
    assert len(records) == 1 and records[0].outcome != "complete"
    # A kept thread, idle for as long, stays.
    assert browser.get_json(f"/threads/{kept}").status == 200


def test_organising_over_http(browser, relay):
    first, second = browser.new_thread(), browser.new_thread()
    for thread_id in (first, second):
        browser.send(thread_id, "Hello")
    assert browser.post_json("/folders", {"name": "Ops"}).status == 201
    answer = browser.post_json(f"/threads/{first}/organise",
                               {"folder": "Ops", "pinned": True})
    assert answer.status == 200
    assert (answer.json()["thread"]["folder"], answer.json()["thread"]["pinned"]) == \
        ("Ops", True)
    assert browser.post_json(f"/threads/{first}/organise", {"pinned": "maybe"}).status == 400
    stranger = RelayClient(relay.base_url).open()
    assert stranger.post_json(f"/threads/{first}/organise", {"pinned": False}).status == 404
    assert stranger.post_json("/threads/bulk", {"ids": [first], "action": "delete"}).status \
        == 404
    listed = [t["id"] for t in browser.get_json("/threads/list").json()["threads"]]
    assert listed[0] == first
    answer = browser.post_json("/threads/bulk", {"ids": [first, second], "action": "archive"})
    assert answer.status == 200
    assert browser.get_json("/threads/list").json()["threads"] == []
    archived = browser.get_json("/threads/archived").json()["threads"]
    assert {t["id"] for t in archived} == {first, second}
