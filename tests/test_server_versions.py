"""Versions of a turn under gunicorn + gevent: regenerated and edited replies stream as
exactly as any reply, and the model is sent the active path only."""

from __future__ import annotations

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reconnecting, read_reply

from .test_server_streaming import TRICKY, terminal

pytestmark = pytest.mark.server


@pytest.fixture
def browser(server) -> RelayClient:
    return RelayClient(server.base_url).open()


def conversation(record) -> list[tuple[str, str]]:
    """What the model was sent, without the system prompt."""
    return [(m["role"], m["content"]) for m in record.body["messages"] if m["role"] != "system"]


def test_a_regenerated_reply_streams_exactly_and_the_old_version_stays(server, browser,
                                                                       upstream):
    first = "The first answer."
    prompt = upstream.script(Reply.words(first), Reply.words(TRICKY, token_delay_s=0.005))
    thread = browser.new_thread()
    sent = browser.send(thread, prompt)
    assert read_reply(browser.stream(sent["stream_url"]))[:2] == (first, "done")
    old = sent["assistant_message"]["id"]

    answer = browser.post_json(f"/messages/{old}/regenerate")
    assert answer.status == 201
    reply = answer.json()["message"]
    assert reply["parent_id"] == sent["user_message"]["id"]
    text, end_event, last_id = read_reply(browser.stream(answer.json()["stream_url"]))
    assert (text, end_event, last_id) == (TRICKY, "done", str(len(TRICKY)))
    assert browser.message(reply["id"])["content"] == TRICKY
    assert browser.message(old)["content"] == first
    assert browser.message(old)["siblings"] == [old, reply["id"]]
    # The model was asked the same question again, without the first answer.
    records = upstream.records_for(prompt)
    assert len(records) == 2
    assert conversation(records[1]) == [("user", prompt)]


def test_a_regenerated_reply_resumes_exactly_over_many_reconnects(server, browser, upstream):
    long_text = " ".join(f"v{i}{'é' if i % 3 else '😀'}" for i in range(200)) + "\nend"
    prompt = upstream.script(Reply.words("short"), Reply.words(long_text, token_delay_s=0.01))
    sent = browser.send(browser.new_thread(), prompt)
    read_reply(browser.stream(sent["stream_url"]))
    answer = browser.post_json(f"/messages/{sent['assistant_message']['id']}/regenerate")
    received, end_event, reconnects = read_reconnecting(browser, answer.json()["stream_url"],
                                                        every=3)
    assert (received, end_event) == (long_text, "done")
    assert reconnects >= 10


def test_an_edited_prompt_is_answered_from_its_own_path_and_the_old_branch_stays(
        server, browser, upstream):
    thread = browser.new_thread()
    first = upstream.script(Reply.words("Answer one."))
    one = browser.send(thread, first)
    read_reply(browser.stream(one["stream_url"]))
    later = upstream.script(Reply.words("Answer two."))
    two = browser.send(thread, later)
    read_reply(browser.stream(two["stream_url"]))

    edited = upstream.script(Reply.words("An answer to the edited prompt."))
    answer = browser.post_json(f"/messages/{two['user_message']['id']}/edit",
                               {"content": edited})
    assert answer.status == 201
    body = answer.json()
    text, end_event, _ = read_reply(browser.stream(body["stream_url"]))
    assert (text, end_event) == ("An answer to the edited prompt.", "done")
    assert conversation(upstream.records_for(edited)[0]) == [
        ("user", first), ("assistant", "Answer one."), ("user", edited)]

    # Back to the old version: its answer is shown again, and a new prompt follows it.
    selected = browser.post_json(f"/messages/{two['user_message']['id']}/select")
    assert selected.status == 200
    assert selected.json()["path"] == [one["user_message"]["id"], one["assistant_message"]["id"],
                                       two["user_message"]["id"], two["assistant_message"]["id"]]
    follow_up = upstream.script(Reply.words("Following the old branch."))
    three = browser.send(thread, follow_up)
    assert three["user_message"]["parent_id"] == two["assistant_message"]["id"]
    assert terminal(browser, three["assistant_message"]["id"])["status"] == "complete"
    assert conversation(upstream.records_for(follow_up)[0]) == [
        ("user", first), ("assistant", "Answer one."), ("user", later),
        ("assistant", "Answer two."), ("user", follow_up)]


def test_a_regenerated_reply_nobody_streams_completes_headless(server, browser, upstream):
    prompt = upstream.script(Reply.words("one"), Reply.words("Written with no tab open."))
    sent = browser.send(browser.new_thread(), prompt)
    read_reply(browser.stream(sent["stream_url"]))
    answer = browser.post_json(f"/messages/{sent['assistant_message']['id']}/regenerate")
    done = terminal(browser, answer.json()["message"]["id"])
    assert (done["status"], done["content"]) == ("complete", "Written with no tab open.")


def test_version_actions_answer_4xx_for_bad_requests(server, browser, upstream):
    prompt = upstream.script(Reply.words("fine"))
    sent = browser.send(browser.new_thread(), prompt)
    read_reply(browser.stream(sent["stream_url"]))
    reply, user = sent["assistant_message"]["id"], sent["user_message"]["id"]
    assert browser.post_json(f"/messages/{reply}/edit", {"content": "x"}).status == 409
    assert browser.post_json(f"/messages/{user}/edit", {"content": ""}).status == 400
    assert browser.post_json(f"/messages/{user}/edit", {"content": 7}).status == 400
    no_token = browser.request("POST", f"/messages/{reply}/regenerate", data=b"",
                               headers={"Accept": "application/json"})
    assert no_token.status == 403
    stranger = RelayClient(server.base_url).open()
    for action in ("regenerate", "select"):
        assert stranger.post_json(f"/messages/{reply}/{action}").status == 404
    assert browser.post_json("/messages/99999999/select").status == 404
