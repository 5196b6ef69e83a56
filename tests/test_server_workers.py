"""Two gevent workers on one database: a reconnect may land on the worker that is not
generating the reply, which must then read it from the database, still exactly."""

from __future__ import annotations

import threading
import time

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reply

from .test_server_streaming import TRICKY, terminal, wait_for

pytestmark = pytest.mark.server


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def two_workers(request, server_factory):
    url = request.getfixturevalue("postgres_url") if request.param == "postgresql" else None
    return server_factory(url, workers=2)


def test_reconnects_across_workers_have_no_gap_or_duplicate(two_workers, upstream):
    browser = RelayClient(two_workers.base_url).open()
    text = (TRICKY + " ") * 3 + " ".join(f"n{i}" for i in range(200))
    prompt = upstream.script(Reply.words(text, token_delay_s=0.01))
    sent = browser.send(browser.new_thread(), prompt)
    received, last_id, reconnects = [], None, 0
    while True:
        part, end_event, last_id = read_reply(
            browser.stream(sent["stream_url"], last_event_id=last_id), stop_after=2)
        received.append(part)
        if end_event is not None:
            break
        reconnects += 1
        assert reconnects < 3000
    assert end_event == "done"
    assert "".join(received) == text
    assert terminal(browser, sent["assistant_message"]["id"])["content"] == text
    assert len(upstream.records_for(prompt)) == 1


def test_many_tabs_on_both_workers_read_the_same_text(two_workers, upstream):
    browser = RelayClient(two_workers.base_url).open()
    text = " ".join(f"word{i}" for i in range(150))
    prompt = upstream.script(Reply.words(text, token_delay_s=0.01))
    sent = browser.send(browser.new_thread(), prompt)
    results: list[tuple] = []

    def tab():
        results.append(read_reply(browser.stream(sent["stream_url"]))[:2])

    tabs = [threading.Thread(target=tab) for _ in range(6)]
    for t in tabs:
        t.start()
    for t in tabs:
        t.join(60)
    assert results == [(text, "done")] * 6
    assert len(upstream.records_for(prompt)) == 1


def test_headless_reply_completes_with_two_workers(two_workers, upstream):
    browser = RelayClient(two_workers.base_url).open()
    text = "Written with nobody watching, by whichever worker took the post."
    prompt = upstream.script(Reply.words(text, token_delay_s=0.005))
    sent = browser.send(browser.new_thread(), prompt)
    done = terminal(browser, sent["assistant_message"]["id"])
    assert (done["status"], done["content"]) == ("complete", text)


def test_stop_reaches_a_silent_model_whichever_worker_takes_it(two_workers, upstream):
    browser = RelayClient(two_workers.base_url).open()
    replies = []
    for _ in range(6):
        prompt = upstream.script(Reply.words("never shown", first_token_delay_s=20))
        sent = browser.send(browser.new_thread(), prompt)
        conn = browser.stream(sent["stream_url"])  # claims it: generating, model silent
        replies.append((sent["assistant_message"]["id"], conn, prompt))
    for reply_id, _, _ in replies:
        wait_for(lambda rid=reply_id: browser.message(rid)["status"] == "streaming", 10)
    started = time.monotonic()
    for reply_id, _, _ in replies:
        assert browser.post_json(f"/messages/{reply_id}/cancel").status == 202
    for reply_id, conn, prompt in replies:
        assert read_reply(conn)[:2] == ("", "aborted")
        assert browser.message(reply_id)["status"] == "aborted"
        record = upstream.records_for(prompt)[0]
        upstream.wait_until(lambda r=record: r.closed_early, timeout=5)
    assert time.monotonic() - started < 6  # each within about a second, not at first token
