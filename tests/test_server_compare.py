"""Comparisons under gunicorn + gevent: one prompt answered by several models side by side
(each reply exact over reconnects), and one prompt sent to several threads at once."""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlencode

import pytest

from bench.fake_upstream import Reply
from bench.relay_client import RelayClient, read_reconnecting, read_reply
from tests.conftest import ANTHROPIC_KEY
from tests.test_server_streaming import TRICKY, terminal, wait_for

pytestmark = pytest.mark.server

MODELS = ("openai:fake-model,anthropic:claude-fake=Claude Fake,openai:fake-two,"
          "openai:fake-three,openai:fake-four")


@pytest.fixture(scope="module")
def server(server_factory, claude):
    return server_factory(CHAT_MODELS=MODELS, ANTHROPIC_BASE_URL=claude.url,
                          ANTHROPIC_API_KEY=ANTHROPIC_KEY)


@pytest.fixture
def browser(server) -> RelayClient:
    return RelayClient(server.base_url).open()


def both_answer(upstream, claude, openai_reply: Reply, claude_reply: Reply) -> str:
    """A prompt that the OpenAI-compatible model and Claude answer each in their own way."""
    prompt = upstream.script(openai_reply)
    claude.scripts[prompt] = [claude_reply]
    return prompt


def compare(browser: RelayClient, thread: int, prompt: str, **fields) -> dict:
    answer = browser.post_json(f"/threads/{thread}/messages", {"content": prompt, **fields})
    assert answer.status == 201, answer.text
    return answer.json()


def thread_messages(browser: RelayClient, thread: int) -> list[dict]:
    return browser.get_json(f"/threads/{thread}").json()["messages"]


def test_compared_replies_stream_at_once_each_exact_over_reconnects(browser, upstream, claude):
    other = " ".join(f"c{i}{'é' if i % 3 else '😀'}" for i in range(150)) + "\r\nend &amp;"
    # Paced (4 to 6 s) and cut after every event, so each stream is resumed many times
    # however slowly the machine serves the reconnects.
    prompt = both_answer(upstream, claude, Reply.words(TRICKY * 4, token_delay_s=0.04),
                         Reply.words(other, token_delay_s=0.04))
    thread = browser.new_thread()
    body = compare(browser, thread, prompt, model="fake-model", compare=["claude-fake"])
    replies = body["assistant_messages"]
    user = body["user_message"]
    assert [r["model"] for r in replies] == ["fake-model", "claude-fake"]
    assert body["assistant_message"]["id"] == replies[0]["id"]
    assert body["stream_url"] == replies[0]["stream_url"]
    assert all(r["parent_id"] == user["id"] for r in replies)
    assert replies[0]["siblings"] == [r["id"] for r in replies]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda r: read_reconnecting(browser, r["stream_url"], every=1),
                                replies))
    assert results[0][:2] == (TRICKY * 4, "done") and results[1][:2] == (other, "done")
    assert results[0][2] >= 5 and results[1][2] >= 5
    stored = [browser.message(r["id"]) for r in replies]
    assert [(m["content"], m["status"], m["model"]) for m in stored] == [
        (TRICKY * 4, "complete", "fake-model"), (other, "complete", "claude-fake")]
    # Both models were asked at once: their requests overlapped in time.
    first, second = upstream.records_for(prompt)[0], claude.records_for(prompt)[0]
    assert first.arrived < second.finished and second.arrived < first.finished
    # One prompt was stored, and the thread shows (and goes on from) the first reply.
    assert [m["id"] for m in thread_messages(browser, thread)] == [user["id"], replies[0]["id"]]


def test_a_compared_reply_chosen_is_what_the_thread_continues_from(browser, upstream, claude):
    prompt = both_answer(upstream, claude, Reply.words("Answer from the first model."),
                         Reply.words("Answer from Claude."))
    thread = browser.new_thread()
    body = compare(browser, thread, prompt, models=["fake-model", "claude-fake"])
    first, second = (r["id"] for r in body["assistant_messages"])
    assert terminal(browser, first)["status"] == terminal(browser, second)["status"] == "complete"
    page = browser.request("GET", f"/threads/{thread}").text
    assert 'class="comparison"' in page
    assert page.count('data-action="use-version"') == 2
    assert f'id="message-{first}"' in page and f'id="message-{second}"' in page

    chosen = browser.post_json(f"/messages/{second}/select")
    assert chosen.status == 200
    assert chosen.json()["path"] == [body["user_message"]["id"], second]
    follow_up = upstream.script(Reply.words("Going on from Claude's answer."))
    three = browser.send(thread, follow_up)
    assert three["user_message"]["parent_id"] == second
    assert terminal(browser, three["assistant_message"]["id"])["status"] == "complete"
    sent = [(m["role"], m["content"]) for m in upstream.records_for(follow_up)[0].body["messages"]
            if m["role"] != "system"]
    assert sent == [("user", prompt), ("assistant", "Answer from Claude."), ("user", follow_up)]
    # The thread went on: the comparison is one turn with versions now, not a grid.
    page = browser.request("GET", f"/threads/{thread}").text
    assert 'class="comparison"' not in page and '<span class="version-label">2 / 2</span>' in page


def test_a_comparison_round_trips_through_export_and_import(browser, upstream, claude):
    prompt = both_answer(upstream, claude, Reply.words("one"), Reply.words("two"))
    thread = browser.new_thread()
    body = compare(browser, thread, prompt, compare="claude-fake")
    first, second = (r["id"] for r in body["assistant_messages"])
    terminal(browser, first), terminal(browser, second)
    assert browser.post_json(f"/messages/{second}/select").status == 200
    exported = browser.request("GET", f"/threads/{thread}/export?format=json").json()
    assert exported["thread"]["active_leaf_id"] == second
    imported = browser.request("POST", "/threads/import", data=browser_json(exported),
                               headers={"Content-Type": "application/json",
                                        "Accept": "application/json",
                                        "X-CSRF-Token": browser.csrf})
    assert imported.status == 201, imported.text
    new_id = imported.json()["thread"]["id"]
    shown = thread_messages(browser, new_id)
    assert [(m["role"], m["content"], m["model"]) for m in shown] == [
        ("user", prompt, None), ("assistant", "two", "claude-fake")]
    # Still a comparison: both replies side by side, the chosen one in use.
    page = browser.request("GET", f"/threads/{new_id}").text
    assert 'class="comparison"' in page and page.count('data-chosen="true"') == 1


def browser_json(data: dict) -> bytes:
    return json.dumps(data).encode()


def test_a_comparison_posted_as_a_form_answers_the_grid_that_streams(browser, upstream, claude):
    prompt = both_answer(upstream, claude, Reply.words("form one"), Reply.words("form two"))
    thread = browser.new_thread()
    form = urlencode([("content", prompt), ("model", "claude-fake"),
                      ("compare", "fake-model"), ("compare", "fake-two"),
                      ("csrf_token", browser.csrf)]).encode()
    answer = browser.request("POST", f"/threads/{thread}/messages", data=form, headers={
        "Content-Type": "application/x-www-form-urlencoded", "HX-Request": "true"})
    assert answer.status == 200, answer.text
    assert 'class="comparison"' in answer.text
    assert answer.text.count("sse-connect=") == 3
    shown = thread_messages(browser, thread)
    assert shown[-1]["model"] == "claude-fake" and len(shown[-1]["siblings"]) == 3
    for reply_id in shown[-1]["siblings"]:
        assert terminal(browser, reply_id)["status"] == "complete"


@pytest.mark.parametrize("fields,status,why", [
    ({"compare": ["gpt-unknown"]}, 400, "claude-fake"),
    ({"models": ["fake-model", "nope"]}, 400, "fake-model"),
    ({"compare": ["fake-model"]}, 400, "twice"),
    ({"models": ["claude-fake", "claude-fake"]}, 400, "twice"),
    ({"models": ["fake-model"]}, 400, "2 to 4"),
    ({"models": ["fake-model", "claude-fake", "fake-two", "fake-three", "fake-four"]}, 400,
     "2 to 4"),
    ({"compare": [7]}, 400, "id"),
    ({"models": {"a": 1}}, 400, "lists"),
    ({"models": ["fake-model", "claude-fake"], "compare": ["fake-two"]}, 400, "not both"),
])
def test_a_bad_comparison_is_a_4xx_that_says_why_and_stores_nothing(browser, fields, status,
                                                                     why):
    thread = browser.new_thread()
    answer = browser.post_json(f"/threads/{thread}/messages",
                               {"content": "compare me", "model": "fake-model", **fields})
    assert answer.status == status, answer.text
    assert why in answer.json()["message"]
    assert thread_messages(browser, thread) == []


def test_followers_see_the_comparison_over_the_websocket(server, browser, upstream, claude):
    from tests.test_server_followers import STATUS, open_socket

    prompt = both_answer(upstream, claude, Reply.words("ws one " * 30, token_delay_s=0.01),
                         Reply.words("ws two " * 30, token_delay_s=0.01))
    thread = browser.new_thread()
    ws = open_socket(server, browser, thread)
    try:
        ws.recv()  # the state it starts from
        body = compare(browser, thread, prompt, compare=["claude-fake"])
        ids = [str(r["id"]) for r in body["assistant_messages"]]
        frames, ended = [], set()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and ended != set(ids):
            frames.append(ws.recv())
            ended |= {mid for mid, status in STATUS.findall(frames[-1])
                      if mid in ids and status == "complete"}
    finally:
        ws.close()
    seen = "\n".join(frames)
    # The comparison arrives as the thread's path, both replies side by side...
    assert 'class="comparison"' in seen and 'data-action="use-version"' in seen
    assert all(f'id="message-{i}"' in frames[0] for i in ids)
    # ...and each of them is followed to its end, the one beside the path too.
    assert ended == set(ids)


# -- one prompt, several threads ---------------------------------------------------------------
def broadcast(browser: RelayClient, payload: dict):
    return browser.post_json("/threads/broadcast", payload)


def test_one_prompt_to_several_threads_starts_each_and_says_which_failed(server, browser,
                                                                         upstream):
    busy = browser.new_thread()
    slow = upstream.script(Reply(tokens=[f"s{i} " for i in range(300)], token_delay_s=0.02))
    running = browser.send(busy, slow)
    wait_for(lambda: browser.message(running["assistant_message"]["id"])["status"]
             == "streaming", timeout=10)
    free = [browser.new_thread(), browser.new_thread()]
    stranger_thread = RelayClient(server.base_url).open().new_thread()
    text = " ".join(f"b{i}" for i in range(80)) + " ünïcode ✓"
    prompt = upstream.script(Reply.words(text, token_delay_s=0.005))
    answer = broadcast(browser, {"content": prompt, "model": "fake-two",
                                 "thread_ids": [free[0], busy, stranger_thread, free[1],
                                                999999999]})
    assert answer.status == 200, answer.text
    body = answer.json()
    assert [s["thread_id"] for s in body["started"]] == free
    failed = {f["thread_id"]: f["error"] for f in body["failed"]}
    assert set(failed) == {busy, stranger_thread, 999999999}
    assert "still being written" in failed[busy]
    assert failed[stranger_thread] == failed[999999999] == "No such thread."
    for started in body["started"]:
        assert started["assistant_message"]["model"] == "fake-two"
        received, end_event, _ = read_reconnecting(browser, started["stream_url"], every=4)
        assert (received, end_event) == (text, "done")
        shown = thread_messages(browser, started["thread_id"])
        assert [m["content"] for m in shown] == [prompt, text]
    # Nothing was added to the threads that failed.
    assert len(thread_messages(browser, busy)) == 2

    again = broadcast(browser, {"content": prompt, "thread_ids": [busy], "parallel": True})
    assert [s["thread_id"] for s in again.json()["started"]] == [busy]
    browser.post_json(f"/messages/{running['assistant_message']['id']}/cancel")
    terminal(browser, again.json()["started"][0]["assistant_message"]["id"])


def test_broadcast_takes_a_form_with_repeated_thread_ids(browser, upstream):
    threads = [browser.new_thread(), browser.new_thread()]
    prompt = upstream.script(Reply.words("to both"))
    form = urlencode([("content", prompt), *[("thread_ids", str(t)) for t in threads],
                      ("csrf_token", browser.csrf)]).encode()
    answer = browser.request("POST", "/threads/broadcast", data=form, headers={
        "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"})
    assert answer.status == 200, answer.text
    assert [s["thread_id"] for s in answer.json()["started"]] == threads
    for started in answer.json()["started"]:
        with browser.stream(started["stream_url"]) as conn:
            assert read_reply(conn)[:2] == ("to both", "done")


@pytest.mark.parametrize("payload,why", [
    ({"content": "x", "thread_ids": []}, "at least one"),
    ({"content": "x"}, "'thread_ids'"),
    ({"content": "x", "thread_ids": "1,2"}, "'thread_ids'"),
    ({"content": "x", "thread_ids": [1, 1]}, "twice"),
    ({"content": "x", "thread_ids": [0]}, "positive"),
    ({"content": "x", "thread_ids": [True]}, "positive"),
    ({"content": "x", "thread_ids": ["a"]}, "positive"),
    ({"content": "x", "thread_ids": list(range(1, 22))}, "at most 20"),
    ({"content": "", "thread_ids": [1]}, "'content'"),
    ({"content": "x", "thread_ids": [1], "model": "gpt-unknown"}, "fake-model"),
])
def test_a_bad_broadcast_is_a_400_that_says_why(browser, payload, why):
    thread = browser.new_thread()
    answer = broadcast(browser, payload)
    assert answer.status == 400, answer.text
    assert why in answer.json()["message"]
    assert thread_messages(browser, thread) == []


def test_broadcast_needs_the_csrf_token(browser):
    thread = browser.new_thread()
    answer = browser.request("POST", "/threads/broadcast",
                             data=b'{"content": "x", "thread_ids": [%d]}' % thread,
                             headers={"Content-Type": "application/json",
                                      "Accept": "application/json"})
    assert answer.status == 403
    assert thread_messages(browser, thread) == []
