"""Usage, cost and the non-streaming fallback in Relay under gunicorn, with the real openai
client against the fake model server."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest

from bench.fake_upstream import FakeUpstream, Reply
from bench.relay_client import RelayClient, read_reply
from streaming.sse import decode_delta
from tests.test_server_streaming import terminal

pytestmark = pytest.mark.server

PRICES = '{"gpt-4o-mini": {"input": 0.15, "output": 0.6}}'
USAGE = {"prompt_tokens": 1234, "completion_tokens": 56, "total_tokens": 1290}


def cost_of(usage: dict) -> float:
    return (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.6) / 1_000_000


@pytest.fixture(scope="module")
def priced(server_factory):
    return server_factory(MODEL_PRICES=PRICES)


@pytest.fixture
def browser(priced) -> RelayClient:
    return RelayClient(priced.base_url).open()


def test_a_complete_reply_has_the_usage_the_model_reported_and_its_cost(browser, upstream):
    prompt = upstream.script(Reply.words("Counted by the model itself.", usage=USAGE))
    sent = browser.send(browser.new_thread(), prompt)
    text, end_event, _ = read_reply(browser.stream(sent["stream_url"]))
    assert (text, end_event) == ("Counted by the model itself.", "done")
    reply = browser.message(sent["assistant_message"]["id"])
    assert reply["usage"] == USAGE  # exactly the usage chunk, not marked estimated
    assert reply["cost"] == pytest.approx(cost_of(USAGE))
    assert reply["streamed"] is True


def test_a_stopped_reply_keeps_an_estimated_usage_and_its_cost(browser, upstream):
    text = " ".join(f"word{i}" for i in range(400))
    prompt = upstream.script(Reply.words(text, token_delay_s=0.02, usage=USAGE))
    thread = browser.new_thread()
    sent = browser.send(thread, prompt)
    reply_id = sent["assistant_message"]["id"]
    with browser.stream(sent["stream_url"]) as conn:
        deltas = (event for event in conn if event.event == "delta")
        for _ in range(5):
            next(deltas)
        assert browser.post_json(f"/messages/{reply_id}/cancel").status == 202
    reply = terminal(browser, reply_id)
    assert reply["status"] == "aborted"
    usage = reply["usage"]
    assert usage["estimated"] is True  # the usage chunk never came
    assert usage["completion_tokens"] == math.ceil(len(reply["content"]) / 4)
    assert usage["prompt_tokens"] >= math.ceil(len(prompt) / 4)
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert reply["cost"] == pytest.approx(cost_of(usage))
    # The thread's total counts it, marked as holding an estimate.
    totals = browser.get_json(f"/threads/{thread}").json()["usage"]
    assert totals["estimated"] is True and totals["cost"] == pytest.approx(reply["cost"])


def test_a_reply_cut_off_by_the_model_is_estimated_too(browser, upstream):
    prompt = upstream.script(Reply.words("Half a reply and then", finish_reason=None))
    sent = browser.send(browser.new_thread(), prompt)
    read_reply(browser.stream(sent["stream_url"]))
    reply = terminal(browser, sent["assistant_message"]["id"])
    assert reply["status"] == "error"
    assert reply["usage"]["estimated"] is True
    assert reply["usage"]["completion_tokens"] == math.ceil(len("Half a reply and then") / 4)


def test_thread_total_and_usage_page_add_up_the_replies(browser, upstream):
    thread = browser.new_thread()
    costs = []
    for words in ("First reply.", "Second reply."):
        sent = browser.send(thread, upstream.script(Reply.words(words, usage=USAGE)))
        read_reply(browser.stream(sent["stream_url"]))
        costs.append(terminal(browser, sent["assistant_message"]["id"])["cost"])
    totals = browser.get_json(f"/threads/{thread}").json()["usage"]
    assert totals["replies"] == 2
    assert totals["prompt_tokens"] == 2 * USAGE["prompt_tokens"]
    assert totals["cost"] == pytest.approx(sum(costs))
    usage = browser.get_json("/usage").json()
    assert usage["total"]["replies"] >= 2
    assert [m["model"] for m in usage["by_model"]] == ["gpt-4o-mini"]
    # Another browser sees none of it.
    stranger = RelayClient(browser.base_url).open()
    assert stranger.get_json("/usage").json()["total"]["replies"] == 0


# -- a model server that will not stream -------------------------------------------------------
@pytest.fixture(scope="module")
def refusing() -> Iterator[FakeUpstream]:
    with FakeUpstream(refuse_stream=400) as fake:
        yield fake


@pytest.fixture(scope="module")
def unstreamed(server_factory, refusing):
    return server_factory(OPENAI_BASE_URL=refusing.url, MODEL_PRICES=PRICES)


def test_a_server_that_refuses_to_stream_still_delivers_the_reply_as_one_delta(unstreamed,
                                                                              refusing):
    text = "A reply that came in one piece, <b>escaped</b> & exact.\nSecond line."
    refusing.enqueue(Reply.words(text, usage=USAGE))
    browser = RelayClient(unstreamed.base_url).open()
    thread = browser.new_thread()
    sent = browser.send(thread, "Say it whole")
    with browser.stream(sent["stream_url"]) as conn:
        events = list(conn)
    deltas = [e for e in events if e.event == "delta"]
    assert len(deltas) == 1 and decode_delta(deltas[0].data) == text
    assert events[-1].event == "done"
    assert 'data-streamed="false"' in events[-1].data  # the label in the final fragment

    reply = browser.message(sent["assistant_message"]["id"])
    assert (reply["status"], reply["content"], reply["streamed"]) == ("complete", text, False)
    assert reply["usage"] == USAGE and reply["cost"] == pytest.approx(cost_of(USAGE))
    asked = [r for r in refusing.requests if r.body and r.body["messages"][-1]["content"]
             == "Say it whole"]
    assert [(r.stream, r.status) for r in asked] == [(True, 400), (False, 200)]

    # A follower (a reload) gets the same text and label from the database.
    again, end_event, _ = read_reply(browser.stream(sent["stream_url"]))
    assert (again, end_event) == (text, "done")
    page = browser.request("GET", f"/threads/{thread}").text
    assert "not streamed" in page


def test_usage_totals_add_up_on_postgresql_too(server_factory, postgres_url, upstream):
    relay = server_factory(postgres_url, MODEL_PRICES=PRICES)
    browser = RelayClient(relay.base_url).open()
    thread = browser.new_thread()
    for reply in (Reply.words("Counted.", usage=USAGE),
                  Reply(tokens=[], status=400, error_message="Bad.")):  # no text: no usage
        sent = browser.send(thread, upstream.script(reply))
        read_reply(browser.stream(sent["stream_url"]))
        terminal(browser, sent["assistant_message"]["id"])
    totals = browser.get_json(f"/threads/{thread}").json()["usage"]
    assert (totals["replies"], totals["prompt_tokens"]) == (1, USAGE["prompt_tokens"])
    usage = browser.get_json("/usage").json()
    assert usage["total"]["cost"] == pytest.approx(cost_of(USAGE))
    assert len(usage["by_day"]) == 1 and len(usage["by_day"][0]["day"]) == 10
    assert usage["by_model"][0]["model"] == "gpt-4o-mini"
    assert browser.request("GET", "/usage").status == 200
