"""Cost per reply, thread totals, and the owner's usage page, in-process with the demo model."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from models import Message, db
from tests.conftest import JSON, csrf_of, made_app, new_thread, send

PRICES = '{"demo": {"input": 1.5, "output": 6}}'


@pytest.fixture
def priced(tmp_path):
    with made_app(tmp_path, MODEL_PRICES=PRICES) as app:
        yield app


def finish_reply(client, token: str, thread_id: int, prompt: str = "What is Relay?") -> dict:
    """Post a prompt and stream its reply to the end; the finished reply's JSON."""
    sent = send(client, token, thread_id, prompt)
    assert b"event: done" in client.get(sent["stream_url"]).data
    reply = client.get(f"/messages/{sent['assistant_message']['id']}", headers=JSON).json
    assert reply["status"] == "complete"
    return reply


def expected_cost(usage: dict) -> float:
    return (usage["prompt_tokens"] * 1.5 + usage["completion_tokens"] * 6) / 1_000_000


def test_a_priced_reply_has_its_cost_in_json_and_in_its_footer(priced):
    client = priced.test_client()
    token = csrf_of(client)
    thread_id = new_thread(client, token)
    reply = finish_reply(client, token, thread_id)
    assert reply["usage"]["completion_tokens"] > 0 and "estimated" not in reply["usage"]
    assert reply["cost"] == pytest.approx(expected_cost(reply["usage"]))
    assert reply["streamed"] is True

    page = client.get(f"/threads/{thread_id}").text
    article = page[page.index(f'id="message-{reply["id"]}"'):]
    footer = article[article.index('class="message-foot'):article.index("</footer>")]
    assert f"{reply['usage']['completion_tokens']} tokens" in footer
    assert re.search(r'class="message-cost">\$0\.\d+<', footer)
    assert "not streamed" not in footer


def test_thread_total_adds_every_reply_in_json_and_on_the_page(priced):
    client = priced.test_client()
    token = csrf_of(client)
    thread_id = new_thread(client, token)
    replies = [finish_reply(client, token, thread_id, p) for p in ("One?", "Two?")]
    body = client.get(f"/threads/{thread_id}", headers=JSON).json
    total = sum(r["cost"] for r in replies)
    assert body["usage"]["replies"] == 2
    assert body["usage"]["cost"] == pytest.approx(total)
    assert body["usage"]["completion_tokens"] == sum(r["usage"]["completion_tokens"]
                                                      for r in replies)
    page = client.get(f"/threads/{thread_id}").text
    match = re.search(r'id="thread-cost" data-cost="([0-9.]+)"', page)
    assert match and float(match.group(1)) == pytest.approx(total)
    # A poll-swap of a reply brings the thread's total along, swapped in by id.
    fragment = client.get(f"/messages/{replies[1]['id']}").text
    assert 'id="thread-cost"' in fragment and 'hx-swap-oob="true"' in fragment


def test_a_model_without_a_price_has_cost_null_not_zero(client, token, thread_id):
    reply = finish_reply(client, token, thread_id)
    assert reply["usage"]["completion_tokens"] > 0
    assert reply["cost"] is None
    body = client.get(f"/threads/{thread_id}", headers=JSON).json
    assert body["usage"]["cost"] is None
    assert body["usage"]["unpriced_replies"] == 1
    page = client.get(f"/threads/{thread_id}").text
    assert 'class="message-cost"' not in page
    assert 'id="thread-cost" data-cost=""' in page
    usage = client.get("/usage", headers=JSON).json
    assert usage["total"]["cost"] is None and usage["by_model"][0]["cost"] is None


def test_usage_page_totals_by_day_and_model_for_this_owner_only(priced):
    owner, other = priced.test_client(), priced.test_client()
    owner_token, other_token = csrf_of(owner), csrf_of(other)
    mine = [finish_reply(owner, owner_token, new_thread(owner, owner_token), p)
            for p in ("First?", "Second?")]
    theirs = finish_reply(other, other_token, new_thread(other, other_token), "Theirs?")
    # An older reply lands on its own day.
    with priced.app_context():
        old = db.session.get(Message, mine[0]["id"])
        old.created_at = old.created_at - dt.timedelta(days=3)
        db.session.commit()
        days = sorted({db.session.get(Message, m["id"]).created_at.date().isoformat()
                       for m in mine}, reverse=True)

    usage = owner.get("/usage", headers=JSON).json
    assert usage["total"]["replies"] == 2
    assert usage["total"]["cost"] == pytest.approx(sum(m["cost"] for m in mine))
    assert usage["total"]["completion_tokens"] == sum(m["usage"]["completion_tokens"]
                                                       for m in mine)
    assert [d["day"] for d in usage["by_day"]] == days
    assert [d["replies"] for d in usage["by_day"]] == [1, 1]
    assert [(m["model"], m["replies"]) for m in usage["by_model"]] == [("demo", 2)]

    theirs_usage = other.get("/usage", headers=JSON).json
    assert theirs_usage["total"]["replies"] == 1
    assert theirs_usage["total"]["cost"] == pytest.approx(theirs["cost"])

    page = owner.get("/usage")
    assert page.status_code == 200 and page.mimetype == "text/html"
    assert 'id="usage-by-day"' in page.text and 'id="usage-by-model"' in page.text
    assert days[0] in page.text and days[1] in page.text
    assert "demo" in page.text
    assert 'href="/usage"' in owner.get("/").text  # linked from the sidebar


def test_usage_page_without_replies_says_so(client):
    assert client.get("/usage", headers=JSON).json["total"] == {
        "replies": 0, "prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0,
        "cost": None, "estimated": False, "unpriced_replies": 0}
    assert 'id="usage-empty"' in client.get("/usage").text


def test_a_reply_that_was_not_streamed_says_so_in_json_and_its_footer(client, token,
                                                                      thread_id, app):
    reply = finish_reply(client, token, thread_id)
    with app.app_context():
        db.session.get(Message, reply["id"]).streamed = False
        db.session.commit()
    assert client.get(f"/messages/{reply['id']}", headers=JSON).json["streamed"] is False
    assert 'data-streamed="false"' in client.get(f"/threads/{thread_id}").text


def test_thread_total_counts_a_reply_being_written_by_its_estimate_so_far(priced):
    from models import StreamDelta

    client = priced.test_client()
    token = csrf_of(client)
    thread_id = new_thread(client, token)
    sent = send(client, token, thread_id)
    with priced.app_context():
        reply = db.session.get(Message, sent["assistant_message"]["id"])
        reply.status = "streaming"
        db.session.add(StreamDelta(message_id=reply.id, start=0, end=400, text="x" * 400))
        db.session.commit()
    usage = client.get(f"/threads/{thread_id}", headers=JSON).json["usage"]
    assert usage["completion_tokens"] == 100 and usage["estimated"] is True
    assert usage["cost"] == pytest.approx(100 * 6 / 1_000_000)
    assert "~" in client.get(f"/threads/{thread_id}").text.split('id="thread-cost"')[1][:400]


@pytest.mark.parametrize("usage", [
    {"prompt_tokens": "many"}, {"completion_tokens": 1.5}, {"total_tokens": -3},
    {"prompt_tokens": 2**40}, {"completion_tokens": True}, {"estimated": "maybe"},
])
def test_an_import_with_usage_totals_cannot_add_up_is_a_400(client, token, usage):
    body = {"format": "relay.thread", "version": 1, "thread": {"title": "T"},
            "messages": [{"id": 1, "role": "user", "content": "hi"},
                         {"id": 2, "parent_id": 1, "role": "assistant", "content": "yo",
                          "usage": usage}]}
    answer = client.post("/threads/import", json=body,
                         headers={"X-CSRF-Token": token, **JSON})
    assert answer.status_code == 400 and "'usage'" in answer.json["message"]
    assert client.get("/usage", headers=JSON).json["total"]["replies"] == 0
