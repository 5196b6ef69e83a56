"""A reply streams into the page, into other tabs, and survives reloads and a lost network."""

from __future__ import annotations

import re
import time

import pytest

from bench.fake_upstream import Reply

from .conftest import (
    ACTIVE,
    new_thread,
    norm,
    open_followers,
    reply_state,
    send_prompt,
    wait_for_reply,
    wait_live,
    wait_until,
)
from .proxy import CuttableProxy

pytestmark = pytest.mark.browser

TEXT = ("Relay streams this reply word by word so that the reader sees it grow while the "
        "model is still writing and every tab ends with the very same words in the very same "
        "order once the model has finished its answer " * 3).strip()


def numbered(n: int) -> str:
    return " ".join(f"w{i}" for i in range(1, n + 1))


def follow(pages: dict, timeout: float = 30.0, check=None) -> dict:
    """Sample each page's newest reply until all are terminal.

    Returns {name: (final state, [distinct lengths seen while the reply was active])}.
    `check(name, state)` runs on every sample.
    """
    lengths: dict[str, list[int]] = {name: [] for name in pages}
    final: dict[str, dict] = {}
    deadline = time.monotonic() + timeout
    while len(final) < len(pages):
        assert time.monotonic() < deadline, f"replies not finished in {timeout} s: {lengths}"
        for name, page in pages.items():
            if name in final:
                continue
            state = reply_state(page)
            if state is None:
                continue
            if check:
                check(name, state)
            if state["status"] in ACTIVE:
                size = len(state["text"])
                if size and (not lengths[name] or lengths[name][-1] != size):
                    lengths[name].append(size)
            else:
                final[name] = state
        time.sleep(0.03)
    return {name: (final[name], lengths[name]) for name in pages}


def test_reply_streams_progressively_and_ends_with_the_models_text(page, upstream):
    prompt = upstream.script(Reply.words(TEXT, token_delay_s=0.02))
    new_thread(page)
    send_prompt(page, prompt)

    (state, lengths), = follow({"asker": page}).values()
    assert len(lengths) >= 3, f"the reply did not appear progressively: {lengths}"
    assert state["status"] == "complete"
    assert norm(state["text"]) == norm(TEXT)
    # The prompt is shown as the user's message, and the composer is ready again.
    assert page.locator('article.message[data-role="user"] .message-body').last \
        .text_content() == prompt
    assert page.locator("form#composer textarea[name=content]").input_value() == ""


def test_second_tab_follows_live_and_a_polling_tab_follows_too(context, upstream):
    prompt = upstream.script(Reply.words(TEXT, token_delay_s=0.02))
    asker = context.new_page()
    thread = new_thread(asker)
    live, poller = open_followers(context, thread)
    assert poller.locator("#live-status").get_attribute("data-state") == "polling"

    send_prompt(asker, prompt)
    seen = follow({"asker": asker, "live": live, "poller": poller})

    for name, (state, _lengths) in seen.items():
        assert state["status"] == "complete", name
        assert norm(state["text"]) == norm(TEXT), name
        assert state["count"] == 1, f"{name} shows the reply {state['count']} times"
    assert len(seen["asker"][1]) >= 3, seen["asker"][1]
    assert len(seen["live"][1]) >= 3, f"the websocket tab did not follow live: {seen['live'][1]}"
    assert len(seen["poller"][1]) >= 2, f"the polling tab did not follow: {seen['poller'][1]}"
    # Every tab shows the prompt once, too.
    for name, tab in (("live", live), ("poller", poller)):
        users = tab.locator('article.message[data-role="user"] .message-body')
        assert users.all_text_contents() == [prompt], name


def _prefix_check(expected: str):
    def check(_name: str, state: dict) -> None:
        if state["status"] in ACTIVE and state["plain"]:
            assert expected.startswith(state["text"]), \
                f"shown text is not a prefix of the reply: ...{state['text'][-80:]!r}"
        elif state["status"] in ACTIVE:
            shown = norm(state["text"])
            assert norm(expected).startswith(shown), f"not a prefix: ...{shown[-80:]!r}"
    return check


def test_reload_mid_reply_continues_without_gap_or_repeat(page, upstream):
    expected = numbered(300)
    prompt = upstream.script(Reply.words(expected, token_delay_s=0.015))
    new_thread(page)
    send_prompt(page, prompt)
    check = _prefix_check(expected)

    def shown_words(at_least: int):
        state = reply_state(page)
        if state:
            check("asker", state)
        return state and len(state["text"].split()) >= at_least and state

    before = wait_until(lambda: shown_words(40), what="40 words before the reload")
    assert before["status"] in ACTIVE, "the reply ended before the reload: make it longer"
    page.reload()
    after = wait_until(lambda: reply_state(page), what="the reloaded page")
    assert after["status"] in ACTIVE, "the reply ended before the page came back"
    check("asker", after)

    (state, lengths), = follow({"asker": page}, check=check).values()
    assert state["status"] == "complete"
    assert state["text"].split() == expected.split()
    assert len(lengths) >= 3, f"the reloaded tab did not keep streaming: {lengths}"


@pytest.fixture
def proxy(relay):
    proxy = CuttableProxy("127.0.0.1", relay.port).start()
    yield proxy
    proxy.close()


def test_network_cut_mid_reply_resumes_without_gap_or_repeat(new_context, proxy, upstream,
                                                            console):
    # Chromium's offline mode fails new requests but keeps open streams flowing; the proxy
    # drops those, as a real outage does. The browser's own reports of failed requests, and
    # htmx's log line for a failed EventSource ("[object Event]"), are expected here.
    console.allow(r"net::ERR_INTERNET_DISCONNECTED|net::ERR_INCOMPLETE_CHUNKED_ENCODING"
                  r"|WebSocket connection to .* failed|: \[object Event\]$")
    context = new_context(base_url=proxy.url)
    page = context.new_page()
    expected = numbered(300)
    prompt = upstream.script(Reply.words(expected, token_delay_s=0.015))
    new_thread(page)
    send_prompt(page, prompt)
    check = _prefix_check(expected)
    wait_until(lambda: (s := reply_state(page)) and len(s["text"].split()) >= 30,
               what="30 words before going offline")

    context.set_offline(True)
    proxy.cut()
    shown = []
    offline_until = time.monotonic() + 2.5
    while time.monotonic() < offline_until:
        state = reply_state(page)
        assert state is not None, "the reply vanished while offline"
        check("asker", state)
        shown.append(len(state["text"]))
        last_text = state["text"]
        time.sleep(0.05)
    assert proxy.cuts > 0
    assert len(set(shown[-20:])) == 1, "the text kept growing: the network was not cut"
    assert reply_state(page)["status"] in ACTIVE, "the reply ended before the network came back"
    proxy.restore()  # the network first, then the browser notices it is back
    context.set_offline(False)

    (state, lengths), = follow({"asker": page}, check=check).values()
    assert state["status"] == "complete"
    assert state["text"].split() == expected.split()
    # From where it was: the same text, but for trailing whitespace the fresh rendering holds
    # back until the next word comes (invisible, and never a lost character).
    assert lengths and len(last_text.rstrip()) <= lengths[0] <= shown[-1], \
        "the text did not continue from where it was"


def test_a_follower_that_missed_a_new_turn_gets_it_when_its_websocket_comes_back(
        new_context, proxy, upstream, console):
    # The follower's connections go through the proxy, which drops them for a while.
    # A poll the page falls back to while cut off fails as a request: htmx reports it.
    console.allow(r"WebSocket connection to .* failed|net::ERR_|: \[object Event\]$"
                  r"|: htmx:(afterRequest|sendError), ")
    context = new_context()
    asker = context.new_page()
    thread = new_thread(asker)
    follower = context.new_page()  # the same person (cookies ignore the port), via the proxy
    follower.goto(proxy.url + thread)
    wait_live(follower, "the follower's websocket")
    proxy.cut()
    wait_until(lambda: follower.locator("#live-status").get_attribute("data-state") != "live",
               what="the follower to notice it is cut off")
    prompt = upstream.script(Reply.words(numbered(150), token_delay_s=0.02))
    reply = send_prompt(asker, prompt)  # sent while the follower is not listening
    proxy.restore()
    done = wait_for_reply(follower, reply, ("complete",), timeout=40)
    assert norm(done["text"]) == norm(numbered(150))
    users = follower.locator('article.message[data-role="user"] .message-body')
    assert users.all_text_contents() == [prompt]
    assert done["count"] == 1


def test_a_turn_asked_and_answered_before_the_websocket_opened_is_shown(context, upstream):
    """Between a page's load and its websocket's opening, another tab asks and gets a whole
    (short) reply: the socket says what the page has, and its first frame brings the turn."""
    asker = context.new_page()
    thread = new_thread(asker)
    held = []
    follower = context.new_page()
    # The follower's socket reaches the server only once the turn has ended.
    follower.route_web_socket(re.compile(r"/threads/\d+/ws"), lambda ws: held.append(ws))
    follower.goto(thread)
    wait_until(lambda: held, what="the follower's websocket to be opened", page=follower)
    prompt = upstream.script(Reply.words("A short answer, over before the socket opened."))
    reply = send_prompt(asker, prompt)
    wait_for_reply(asker, reply, ("complete",))
    held[0].connect_to_server()
    done = wait_for_reply(follower, reply, ("complete",), timeout=20)
    assert norm(done["text"]) == "A short answer, over before the socket opened."
    users = follower.locator('article.message[data-role="user"] .message-body')
    assert users.all_text_contents() == [prompt]
    assert "after=0" in held[0].url  # the page had no message yet
