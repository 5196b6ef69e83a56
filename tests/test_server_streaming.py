"""Relay under gunicorn + gevent against the fake model: the core streaming guarantees."""

from __future__ import annotations

import time

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reconnecting, read_reply

pytestmark = pytest.mark.server

# Everything SSE and HTML make hard: CR, CRLF, markup, entities, emoji, combining marks.
TRICKY = ("Line one\r\nline two\rthree\n\n<b>bold</b> & \"quotes\" 'single' &amp; &#13; "
          "data: not a field\nid: 7\n: not a comment\n😀 e\u0301 \u200d👩‍💻 tail")


def wait_for(predicate, timeout: float = 20.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout} s")


def terminal(client: RelayClient, message_id: int, timeout: float = 20.0) -> dict:
    return wait_for(lambda: (m := client.message(message_id))["status"] not in
                    ("pending", "streaming") and m, timeout)


@pytest.fixture
def browser(server) -> RelayClient:
    return RelayClient(server.base_url).open()


def test_streamed_and_persisted_text_equal_the_models_text_exactly(server, browser, upstream):
    prompt = upstream.script(Reply.words(TRICKY, token_delay_s=0.005))
    thread = browser.new_thread()
    sent = browser.send(thread, prompt)
    reply = sent["assistant_message"]
    assert reply["status"] == "pending"

    with browser.stream(sent["stream_url"]) as conn:
        assert conn.status == 200
        assert conn.headers["Content-Type"].startswith("text/event-stream")
        assert conn.headers["Cache-Control"] == "no-cache"
        assert conn.headers["X-Accel-Buffering"] == "no"
        text, end_event, last_id = read_reply(conn)

    assert text == TRICKY
    assert end_event == "done"
    assert last_id == str(len(TRICKY))
    stored = browser.message(reply["id"])
    assert stored["status"] == "complete"
    assert stored["content"] == TRICKY
    assert stored["usage"]["completion_tokens"] > 0
    assert stored["timings"]["ttft_ms"] is not None
    # The model saw the conversation: our prompt last, asked with usage reporting on.
    record = upstream.records_for(prompt)[0]
    assert record.body["stream_options"] == {"include_usage": True}
    assert record.body["messages"][-1] == {"role": "user", "content": prompt}


def test_stream_sends_retry_and_a_terminal_fragment_with_the_final_status(server, browser,
                                                                          upstream):
    prompt = upstream.script(Reply.words("Short and sweet."))
    sent = browser.send(browser.new_thread(), prompt)
    with browser.stream(sent["stream_url"]) as conn:
        events = list(conn)
        assert conn.retry is not None and conn.retry > 0
    assert [e.event for e in events][-1] == "done"
    fragment = events[-1].data
    message_id = sent["assistant_message"]["id"]
    assert f'id="message-{message_id}"' in fragment
    assert 'data-status="complete"' in fragment
    assert "sse-connect" not in fragment  # a finished message opens no stream


def test_reconnect_with_last_event_id_many_times_has_no_gap_or_duplicate(server, browser,
                                                                         upstream):
    text = " ".join(f"w{i}{'é' if i % 3 else '😀'}" for i in range(300)) + "\nend"
    prompt = upstream.script(Reply.words(text, token_delay_s=0.01))
    sent = browser.send(browser.new_thread(), prompt)

    received, end_event, reconnects = read_reconnecting(browser, sent["stream_url"], every=3)
    assert end_event == "done"
    assert reconnects >= 20  # it really was cut many times mid-reply
    assert received == text
    assert browser.message(sent["assistant_message"]["id"])["content"] == text


def test_after_query_resumes_and_a_finished_reply_answers_the_rest_at_once(server, browser,
                                                                           upstream):
    text = "alpha beta gamma delta epsilon"
    prompt = upstream.script(Reply.words(text))
    sent = browser.send(browser.new_thread(), prompt)
    full, end_event, _ = read_reply(browser.stream(sent["stream_url"]))
    assert (full, end_event) == (text, "done")

    started = time.monotonic()
    rest, end_event, last_id = read_reply(browser.stream(sent["stream_url"] + "?after=11"))
    assert (rest, end_event, last_id) == (text[11:], "done", str(len(text)))
    # Last-Event-ID wins over ?after= (it is what a reconnecting EventSource sends).
    rest, _, _ = read_reply(browser.stream(sent["stream_url"] + "?after=3", last_event_id="17"))
    assert rest == text[17:]
    assert time.monotonic() - started < 10


def test_reply_with_no_tab_listening_completes_headless(server, browser, upstream):
    text = "Nobody is watching, but this reply is still written in full."
    prompt = upstream.script(Reply.words(text, token_delay_s=0.01))
    sent = browser.send(browser.new_thread(), prompt)
    done = terminal(browser, sent["assistant_message"]["id"])
    assert done["status"] == "complete"
    assert done["content"] == text
    assert len(upstream.records_for(prompt)) == 1  # exactly one generation


def test_driver_that_disconnects_after_a_few_tokens_does_not_stop_the_reply(server, browser,
                                                                              upstream):
    text = " ".join(f"token{i}" for i in range(120))
    prompt = upstream.script(Reply.words(text, token_delay_s=0.01))
    sent = browser.send(browser.new_thread(), prompt)
    part, end_event, _ = read_reply(browser.stream(sent["stream_url"]), stop_after=3)
    assert end_event is None and part and text.startswith(part)

    done = terminal(browser, sent["assistant_message"]["id"])
    assert done["status"] == "complete"
    assert done["content"] == text
    record = upstream.records_for(prompt)[0]
    assert not record.closed_early  # the model was read to the end


def test_two_tabs_streaming_one_reply_start_exactly_one_generation(server, browser, upstream):
    text = "One generation, two readers, the same words."
    prompt = upstream.script(Reply.words(text, token_delay_s=0.01))
    sent = browser.send(browser.new_thread(), prompt)
    first = browser.stream(sent["stream_url"])
    second = browser.stream(sent["stream_url"])
    assert read_reply(first)[:2] == (text, "done")
    assert read_reply(second)[:2] == (text, "done")
    assert len(upstream.records_for(prompt)) == 1


def test_stream_of_another_browsers_reply_is_not_found(server, browser, upstream):
    sent = browser.send(browser.new_thread(), upstream.script(Reply.words("private")))
    stranger = RelayClient(server.base_url).open()
    conn = stranger.stream(sent["stream_url"])
    assert conn.status == 404
    assert stranger.get_json(f"/messages/{sent['assistant_message']['id']}").status == 404


@pytest.mark.parametrize("cursor", ["-1", "abc", "1e3", "99999"])
def test_junk_or_impossible_cursor_is_a_400_not_a_500(server, browser, upstream, cursor):
    sent = browser.send(browser.new_thread(), upstream.script(Reply.words("tiny reply")))
    terminal(browser, sent["assistant_message"]["id"])
    conn = browser.stream(sent["stream_url"] + f"?after={cursor}")
    assert conn.status == 400
    assert b"cursor" in conn.body


def test_reload_mid_stream_renders_persisted_text_and_resumes_exactly_from_it(server, browser,
                                                                              upstream):
    import html
    import re

    text = " ".join(f"r{i}<&>" for i in range(250))
    prompt = upstream.script(Reply.words(text, token_delay_s=0.01))
    thread = browser.new_thread()
    sent = browser.send(thread, prompt)
    reply_id = sent["assistant_message"]["id"]
    # The first tab drives it for a moment, then goes away (a reload).
    read_reply(browser.stream(sent["stream_url"]), stop_after=5)
    resumed_from = set()
    while True:
        page = browser.request("GET", f"/threads/{thread}").text
        found = re.search(
            rf'<article[^>]*id="message-{reply_id}"[^>]*sse-connect="([^"]+)"[^>]*>.*?'
            r'<div class="message-body is-markdown" data-end="(\d+)"[^>]*>(.*?)</div>',
            page, re.S)
        if found is None:
            break  # finished: the page shows the final message, with no stream to resume
        stream_url, rendered = html.unescape(found.group(1)), int(found.group(2))
        shown = html.unescape(re.sub(r"<[^>]+>", "", found.group(3)))
        after = int(re.search(r"after=(\d+)", stream_url).group(1))
        assert after == rendered  # the cursor is exactly what the page shows...
        assert shown.split() == text[:after].split()  # ...rendered from that very text
        resumed_from.add(after)
        rest, end_event, _ = read_reply(browser.stream(stream_url), stop_after=3)
        assert text[after:].startswith(rest)
        if end_event is not None:
            assert text[:after] + rest == text
            break
    assert len(resumed_from) >= 3  # reloaded at several points mid-reply
    assert terminal(browser, reply_id)["content"] == text
