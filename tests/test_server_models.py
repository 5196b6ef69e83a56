"""Relay under gunicorn + gevent with two models at once: the fake OpenAI-compatible server
and the fake Anthropic API, each reply streamed exactly from its own provider."""

from __future__ import annotations

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reconnecting, read_reply
from tests.conftest import ANTHROPIC_KEY
from tests.test_server_streaming import TRICKY, terminal, wait_for

pytestmark = pytest.mark.server

@pytest.fixture(scope="module")
def server(server_factory, claude):
    return server_factory(CHAT_MODELS="openai:fake-model,anthropic:claude-fake=Claude Fake",
                          ANTHROPIC_BASE_URL=claude.url, ANTHROPIC_API_KEY=ANTHROPIC_KEY)


@pytest.fixture
def browser(server) -> RelayClient:
    return RelayClient(server.base_url).open()


def send(browser: RelayClient, thread: int, prompt: str, model: str | None = None) -> dict:
    body = {"content": prompt, **({"model": model} if model else {})}
    answer = browser.post_json(f"/threads/{thread}/messages", body)
    assert answer.status == 201, answer.text
    return answer.json()


def test_models_are_listed_and_an_unknown_one_is_refused(browser):
    models = browser.get_json("/models")
    assert models.status == 200
    assert [(m["id"], m["provider"], m["label"]) for m in models.json()] == [
        ("fake-model", "openai", "fake-model"), ("claude-fake", "anthropic", "Claude Fake")]
    answer = browser.post_json(f"/threads/{browser.new_thread()}/messages",
                               {"content": "Hi", "model": "gpt-unknown"})
    assert answer.status == 400
    assert "fake-model" in answer.json()["message"] and "claude-fake" in answer.json()["message"]


def test_each_reply_streams_exactly_from_its_own_provider_and_records_its_model(
        browser, upstream, claude):
    thread = browser.new_thread()
    claude_prompt = claude.script(Reply.words(TRICKY, token_delay_s=0.005))
    sent = send(browser, thread, claude_prompt, "claude-fake")
    assert sent["assistant_message"]["model"] == "claude-fake"
    with browser.stream(sent["stream_url"]) as conn:
        text, end_event, _ = read_reply(conn)
    assert (text, end_event) == (TRICKY, "done")
    stored = browser.message(sent["assistant_message"]["id"])
    assert (stored["status"], stored["content"], stored["model"]) == \
        ("complete", TRICKY, "claude-fake")
    assert stored["usage"]["completion_tokens"] > 0
    assert claude.records_for(claude_prompt)[0].body["system"]  # the system prompt

    openai_text = "The other model's answer, word by word: ünïcödé 🌍."
    openai_prompt = upstream.script(Reply.words(openai_text, token_delay_s=0.005))
    sent = send(browser, thread, openai_prompt, "fake-model")
    text, end_event, _ = read_reconnecting(browser, sent["stream_url"], every=3)
    assert (text, end_event) == (openai_text, "done")
    stored = browser.message(sent["assistant_message"]["id"])
    assert (stored["content"], stored["model"]) == (openai_text, "fake-model")
    # Each model was asked once, and the OpenAI one saw Claude's reply as history.
    assert len(claude.records_for(claude_prompt)) == 1
    record = upstream.records_for(openai_prompt)[0]
    assert record.body["model"] == "fake-model"
    assert {"role": "assistant", "content": TRICKY} in record.body["messages"]
    # The thread keeps the last model chosen.
    assert browser.get_json(f"/threads/{thread}").json()["thread"]["model"] == "fake-model"


def test_an_anthropic_reply_resumed_over_reconnects_has_no_gap_or_duplicate(browser, claude):
    words = "".join(f"w{i} " for i in range(120))
    prompt = claude.script(Reply.words(words, token_delay_s=0.004))
    sent = send(browser, browser.new_thread(), prompt, "claude-fake")
    text, end_event, reconnects = read_reconnecting(browser, sent["stream_url"], every=5)
    assert (text, end_event) == (words, "done") and reconnects > 3


def test_stop_closes_the_anthropic_stream_mid_reply(browser, claude):
    prompt = claude.script(Reply(tokens=[f"t{i} " for i in range(400)], token_delay_s=0.03))
    sent = send(browser, browser.new_thread(), prompt, "claude-fake")
    reply_id = sent["assistant_message"]["id"]
    with browser.stream(sent["stream_url"]) as conn:
        read_reply(conn, stop_after=3)
    answer = browser.post_json(f"/messages/{reply_id}/cancel")
    assert answer.status == 202
    stored = terminal(browser, reply_id)
    assert stored["status"] == "aborted"
    record = claude.records_for(prompt)[0]
    # The fake sees the client hang up: the model stops writing (and costing) at once.
    assert claude.wait_for_outcome(record, timeout=10) == "client_closed"
    assert record.tokens_sent < 400


def test_an_anthropic_error_event_keeps_the_text_before_it(browser, claude):
    prompt = claude.script(Reply(tokens=["Kept ", "words ", "lost"], error_after=2,
                                 error_message="Overloaded"))
    sent = send(browser, browser.new_thread(), prompt, "claude-fake")
    stored = terminal(browser, sent["assistant_message"]["id"])
    assert stored["status"] == "error"
    assert stored["content"] == "Kept words "
    assert "Overloaded" in stored["error"] and ANTHROPIC_KEY not in stored["error"]


def test_a_rate_limited_anthropic_call_is_retried_after_its_retry_after(browser, claude):
    prompt = claude.script(Reply(tokens=[], status=429, retry_after="1"),
                           Reply.words("Second time lucky."))
    sent = send(browser, browser.new_thread(), prompt, "claude-fake")
    stored = wait_for(lambda: (m := browser.message(sent["assistant_message"]["id"]))
                      ["status"] == "complete" and m, timeout=30)
    assert stored["content"] == "Second time lucky."
    first, second = claude.records_for(prompt)[:2]
    assert second.arrived - first.arrived >= 0.9
