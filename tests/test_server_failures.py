"""Every way a reply can go wrong, under gunicorn + gevent: a clear end state, text kept."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import time

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reply
from streaming.sse import decode_delta

from .conftest import stored_text
from .test_server_streaming import terminal, wait_for

pytestmark = pytest.mark.server

FAILURE_ENV = {"OPENAI_READ_TIMEOUT_S": "1", "MODEL_RETRIES": "0"}


@pytest.fixture(scope="module")
def fragile(server_factory):
    """Relay with short model timeouts and no retries: every failure shows at once."""
    return server_factory(**FAILURE_ENV)


def read_to_end(events, text: list[str]) -> str | None:
    """Append each delta's text to `text` until the terminal event; return its name."""
    for event in events:
        if event.event != "delta":
            return event.event
        text.append(decode_delta(event.data))
    return None


def words(n: int, stem: str = "w") -> str:
    return " ".join(f"{stem}{i}" for i in range(n))


FAILURES = {
    "http 500": (Reply(tokens=[], status=500), "", "500"),
    "http 429": (Reply(tokens=[], status=429, retry_after="7"), "", "429"),
    "http 401": (Reply(tokens=[], status=401, error_message="Incorrect API key provided"),
                 "", "401"),
    "first-token timeout": (Reply.words("too late", first_token_delay_s=3), "", None),
    "idle timeout": (Reply.words("a b c d", token_delay_s=2.5), "a ", None),
    "error event": (Reply.words("one two three four five", error_after=3), "one two three ",
                    None),
    "no finish reason": (Reply.words("cut off here", finish_reason=None), "cut off here", None),
    "dropped connection": (Reply.words("alpha beta gamma delta", drop_after=2), "alpha beta ",
                           None),
}


@pytest.mark.parametrize("case", list(FAILURES))
def test_model_failure_ends_as_error_with_reason_partial_text_and_retry(fragile, upstream,
                                                                        case):
    reply, partial, code = FAILURES[case]
    browser = RelayClient(fragile.base_url).open()
    sent = browser.send(browser.new_thread(), upstream.script(reply))
    text, end_event, _ = read_reply(browser.stream(sent["stream_url"], timeout=20))
    assert end_event == "error"
    assert text == partial
    message = terminal(browser, sent["assistant_message"]["id"])
    assert message["status"] == "error"
    assert message["content"] == partial
    reason = message["error"]
    assert reason and len(reason) < 300
    assert "sk-test" not in reason and "Traceback" not in reason and "object" not in reason
    if code:
        assert code in reason
    fragment = browser.request("GET", f"/messages/{message['id']}",
                               headers={"HX-Request": "true"}).text
    assert 'data-action="retry"' in fragment and 'class="message-error"' in fragment


def test_unreachable_model_server_is_an_error_not_a_hang(server_factory, upstream):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    relay = server_factory(OPENAI_BASE_URL=f"http://127.0.0.1:{port}/v1", **FAILURE_ENV)
    browser = RelayClient(relay.base_url).open()
    sent = browser.send(browser.new_thread(), "anyone there?")
    text, end_event, _ = read_reply(browser.stream(sent["stream_url"], timeout=20))
    assert (text, end_event) == ("", "error")
    assert terminal(browser, sent["assistant_message"]["id"])["error"]


def test_failures_before_the_first_token_are_retried_and_after_it_are_not(server_factory,
                                                                          upstream):
    relay = server_factory(MODEL_RETRIES="2", OPENAI_READ_TIMEOUT_S="2")
    browser = RelayClient(relay.base_url).open()
    prompt = upstream.script(Reply(tokens=[], status=503), Reply.words("recovered just fine"))
    sent = browser.send(browser.new_thread(), prompt)
    assert read_reply(browser.stream(sent["stream_url"], timeout=30))[:2] == \
        ("recovered just fine", "done")
    assert len(upstream.records_for(prompt)) == 2

    late = upstream.script(Reply.words("shown then failed", error_after=2),
                           Reply.words("must never be asked for"))
    sent = browser.send(browser.new_thread(), late)
    text, end_event, _ = read_reply(browser.stream(sent["stream_url"], timeout=30))
    assert (text, end_event) == ("shown then ", "error")
    assert len(upstream.records_for(late)) == 1


def test_cancel_aborts_within_a_second_keeps_text_and_closes_the_upstream(server, upstream):
    browser = RelayClient(server.base_url).open()
    text = words(400)
    prompt = upstream.script(Reply.words(text, token_delay_s=0.02))
    sent = browser.send(browser.new_thread(), prompt)
    reply_id = sent["assistant_message"]["id"]
    seen: list[str] = []
    with browser.stream(sent["stream_url"]) as conn:
        events = iter(conn)
        for event in events:
            seen.append(decode_delta(event.data))
            if len(seen) == 5:
                break
        asked = time.monotonic()
        answer = browser.post_json(f"/messages/{reply_id}/cancel")
        assert answer.status == 202
        end = read_to_end(events, seen)
        stopped_in = time.monotonic() - asked
    assert end == "aborted"
    assert stopped_in < 1.0
    message = browser.message(reply_id)
    assert message["status"] == "aborted"
    assert message["content"] == "".join(seen)  # exactly what the tab was shown
    assert text.startswith(message["content"]) and message["content"]
    record = upstream.records_for(prompt)[0]
    upstream.wait_until(lambda: record.closed_early, timeout=5)


def test_continue_generates_the_rest_into_the_same_message_with_exact_offsets(server,
                                                                              upstream):
    browser = RelayClient(server.base_url).open()
    first_part = "The first part, cut short "
    rest = "and then the rest, written later."
    prompt = upstream.script(Reply.words(first_part + "NEVER SHOWN", drop_after=5),
                             Reply.words(rest, token_delay_s=0.01))
    sent = browser.send(browser.new_thread(), prompt)
    reply_id = sent["assistant_message"]["id"]
    partial, end_event, last_id = read_reply(browser.stream(sent["stream_url"]))
    assert end_event == "error" and partial == first_part

    answer = browser.post_json(f"/messages/{reply_id}/continue")
    assert answer.status == 202
    stream_url = answer.json()["stream_url"]
    assert f"after={len(first_part)}" in stream_url
    # Resume with the last id the tab had: only the new text arrives, then `done`.
    new, end_event, _ = read_reply(browser.stream(stream_url.split("?")[0],
                                                  last_event_id=last_id))
    assert (new, end_event) == (rest, "done")
    message = terminal(browser, reply_id)
    assert (message["status"], message["content"]) == ("complete", first_part + rest)
    whole, _, _ = read_reply(browser.stream(f"/messages/{reply_id}/stream?after=0"))
    assert whole == first_part + rest
    # The model saw its own partial reply and was asked to go on.
    last_request = upstream.records_for(prompt)[-1].body["messages"]
    assert {"role": "assistant", "content": first_part} in last_request


CRASH_ENV = {"STALE_AFTER_S": "2", "HEARTBEAT_S": "0.5", "SWEEP_INTERVAL_S": "0.5"}


def sqlite_message(relay, message_id: int) -> tuple[str, str]:
    path = relay.env["DATABASE_URL"].removeprefix("sqlite:///")
    with sqlite3.connect(path) as db:
        return db.execute("SELECT status, content FROM messages WHERE id = ?",
                          (message_id,)).fetchone()


def test_sigkill_mid_reply_is_marked_interrupted_with_the_flushed_text(server_factory,
                                                                       upstream):
    relay = server_factory(**CRASH_ENV)
    browser = RelayClient(relay.base_url).open()
    text = words(600)
    sent = browser.send(browser.new_thread(), upstream.script(Reply.words(text,
                                                                          token_delay_s=0.02)))
    reply_id = sent["assistant_message"]["id"]
    seen, _, _ = read_reply(browser.stream(sent["stream_url"]), stop_after=40)
    database = relay.env["DATABASE_URL"]
    flushed = wait_for(lambda: len(text := stored_text(database, reply_id)) >= 40 and text)
    (worker,) = relay.worker_pids()
    os.kill(worker, signal.SIGKILL)
    killed = time.monotonic()

    message = wait_for(lambda: (m := browser.message(reply_id))["status"] == "interrupted" and m,
                       timeout=30, interval=0.2)
    marked_after = time.monotonic() - killed
    assert marked_after < 2 + 10  # STALE_AFTER_S plus generous slack for the restart
    assert message["content"] and text.startswith(message["content"])
    assert message["content"].startswith(flushed)  # nothing that was flushed is lost
    assert message["error"]
    # Continue picks up from there.
    fragment = browser.request("GET", f"/messages/{reply_id}", headers={"HX-Request": "true"})
    assert 'data-action="continue"' in fragment.text


def test_sigterm_mid_reply_flushes_all_text_and_ends_interrupted(server_factory, upstream):
    relay = server_factory(**CRASH_ENV)
    browser = RelayClient(relay.base_url).open()
    text = words(800)
    sent = browser.send(browser.new_thread(), upstream.script(Reply.words(text,
                                                                          token_delay_s=0.02)))
    reply_id = sent["assistant_message"]["id"]
    conn = browser.stream(sent["stream_url"])
    events = iter(conn)
    received: list[str] = []
    for event in events:
        received.append(decode_delta(event.data))
        if len(received) == 30:
            break
    relay.process.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    end = read_to_end(events, received)
    conn.close()
    relay.process.wait(30)
    exited_in = time.monotonic() - signalled
    assert end == "error"  # the stream ends with its terminal event, as interrupted
    status, content = sqlite_message(relay, reply_id)
    assert status == "interrupted"
    assert content == "".join(received)  # every character generated before the signal
    assert text.startswith(content) and len(content) > 30
    assert exited_in < 15  # it did not wait out a 20 s graceful timeout
