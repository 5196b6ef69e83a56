"""Threads to manage against Relay under gunicorn, on SQLite and on PostgreSQL: rename,
delete (a running reply stops first), search, export and import, the sidebar's pages."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def relay(request, server_factory):
    if request.param == "postgres":
        return server_factory(request.getfixturevalue("postgres_url"), REDIS_URL="")
    return server_factory()


@pytest.fixture
def browser(relay) -> RelayClient:
    return RelayClient(relay.base_url).open()


def finished(client: RelayClient, message_id: int, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message = client.message(message_id)
        if message["status"] not in ("pending", "streaming"):
            return message
        time.sleep(0.1)
    raise AssertionError(f"message {message_id} did not finish")


def test_rename_over_http(browser, relay):
    thread_id = browser.new_thread()
    answer = browser.post_json(f"/threads/{thread_id}/rename", {"title": " Harbour plans "})
    assert answer.status == 200 and answer.json()["thread"]["title"] == "Harbour plans"
    assert browser.post_json(f"/threads/{thread_id}/rename", {"title": ""}).status == 400
    assert browser.post_json(f"/threads/{thread_id}/rename", {"title": "x" * 201}).status == 400
    stranger = RelayClient(relay.base_url).open()
    assert stranger.post_json(f"/threads/{thread_id}/rename", {"title": "x"}).status == 404
    assert browser.get_json(f"/threads/{thread_id}").json()["thread"]["title"] == \
        "Harbour plans"


def test_delete_stops_a_streaming_reply_then_removes_everything(browser, upstream):
    thread_id = browser.new_thread()
    prompt = upstream.script(Reply.words("slow " * 400, token_delay_s=0.05))
    turn = browser.send(thread_id, prompt)
    reply_id = turn["assistant_message"]["id"]
    with browser.stream(turn["stream_url"]) as stream:  # this tab drives the reply
        for event in stream:
            if event.event == "delta":
                break
        share = browser.post_json(f"/threads/{thread_id}/share").json()["share_url"]
        started = time.monotonic()
        answer = browser.post_json(f"/threads/{thread_id}/delete")
        assert answer.status == 200, answer.text
        assert answer.json() == {"deleted": thread_id}
        assert time.monotonic() - started < 10
    assert browser.get_json(f"/threads/{thread_id}").status == 404
    assert browser.get_json(f"/messages/{reply_id}").status == 404
    assert browser.request("GET", "/s/" + share.rsplit("/", 1)[1]).status == 404
    # The model's response was cut off: the reply stopped, not merely hidden.
    records = upstream.records_for(prompt)
    assert len(records) == 1 and records[0].outcome != "complete"
    # The server goes on serving other threads.
    other = browser.new_thread()
    message = finished(browser, browser.send(other, "still working?")["assistant_message"]["id"])
    assert message["status"] == "complete"


def test_delete_method_and_strangers(browser, relay):
    thread_id = browser.new_thread()
    stranger = RelayClient(relay.base_url).open()
    assert stranger.request("DELETE", f"/threads/{thread_id}",
                            headers={"X-CSRF-Token": stranger.csrf}).status == 404
    assert browser.request("DELETE", f"/threads/{thread_id}").status == 403
    assert browser.request("DELETE", f"/threads/{thread_id}",
                           headers={"X-CSRF-Token": browser.csrf}).status == 204
    assert browser.get_json(f"/threads/{thread_id}").status == 404


NASTY = ['"', "'", "*", "NEAR(", "a OR", "-x", "^x", "x:", "()", "\\", "%", "_", "🦭",
         "&<mark>", "x" * 200, "a & b | !c", "'':*", "1)) OR 1=1 --"]


def test_search_over_http_with_marked_snippets_and_nasty_queries(browser, relay):
    word = "q" + uuid.uuid4().hex[:8]
    thread_id = browser.new_thread()
    turn = browser.send(thread_id, f"Tell me about {word} <b>and</b> lighthouses")
    finished(browser, turn["assistant_message"]["id"])
    hits = browser.get_json(f"/search?q={word}").json()
    assert any(h["message_id"] == turn["user_message"]["id"] for h in hits)
    message_hit = next(h for h in hits if h["message_id"])
    assert f"<mark>{word}</mark>" in message_hit["snippet"]
    assert "&lt;b&gt;" in message_hit["snippet"] and "<b>" not in message_hit["snippet"]
    assert any(h["message_id"] is None for h in hits)  # the title (the first prompt)
    # A prefix of the last word finds it while it is typed.
    assert browser.get_json(f"/search?q={word[:5]}").json()
    stranger = RelayClient(relay.base_url).open()
    assert stranger.get_json(f"/search?q={word}").json() == []
    from urllib.parse import quote

    for query in NASTY:
        answer = browser.get_json(f"/search?q={quote(query)}")
        assert answer.status == 200, (query, answer.text)
        assert isinstance(answer.json(), list)
    assert browser.get_json(f"/search?q={'x' * 201}").status == 400


def test_export_import_round_trip_over_http(browser, relay, upstream):
    thread_id = browser.new_thread()
    prompt = upstream.script(Reply.words("A reply with *markdown* and ünïcode ✓"))
    turn = browser.send(thread_id, prompt)
    finished(browser, turn["assistant_message"]["id"])
    md = browser.request("GET", f"/threads/{thread_id}/export?format=md")
    assert md.status == 200 and md.headers["Content-Disposition"].startswith("attachment;")
    assert "A reply with *markdown* and ünïcode ✓" in md.text
    exported = browser.request("GET", f"/threads/{thread_id}/export?format=json")
    assert exported.headers["Content-Disposition"].startswith("attachment;")
    first = exported.json()
    other = RelayClient(relay.base_url).open()
    boundary = "relay-test-boundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; "
            f"filename=\"t.json\"\r\nContent-Type: application/json\r\n\r\n").encode() + \
        exported.body + f"\r\n--{boundary}--\r\n".encode()
    imported = other.request("POST", "/threads/import", data=body, headers={
        "Content-Type": f"multipart/form-data; boundary={boundary}",
        "Accept": "application/json", "X-CSRF-Token": other.csrf})
    assert imported.status == 201, imported.text
    new_id = imported.json()["thread"]["id"]
    second = other.request("GET", f"/threads/{new_id}/export?format=json").json()

    def same(export: dict) -> list:
        return [(m["role"], m["content"], m["status"], m["model"], m["usage"])
                for m in export["messages"]] + [export["thread"]["title"]]
    assert same(second) == same(first)
    bad = other.request("POST", "/threads/import", data=b"{nope",
                        headers={"Content-Type": "application/json",
                                 "Accept": "application/json", "X-CSRF-Token": other.csrf})
    assert bad.status == 400 and "JSON" in bad.json()["message"]


def test_the_sidebar_pages_over_http(relay):
    browser = RelayClient(relay.base_url).open()
    made = []
    for i in range(55):
        thread_id = browser.new_thread()
        browser.send(thread_id, f"page test {i}")
        made.append(thread_id)
    seen, cursor = [], None
    while True:
        page = browser.get_json("/threads/list" + (f"?before={cursor}" if cursor else ""))
        assert page.status == 200
        seen += [t["id"] for t in page.json()["threads"]]
        cursor = page.json()["next"]
        if not cursor:
            break
    assert seen == made[::-1]
    assert browser.get_json("/threads/list?before=nonsense").status == 400
    home = browser.request("GET", "/").text
    assert 'hx-trigger="intersect once"' in home and json.dumps(made[-1]) in home
