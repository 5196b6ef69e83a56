"""Stopping a reply, a failing model, and the retry / continue actions."""

from __future__ import annotations

import time

import pytest

from bench.fake_upstream import Reply

from .conftest import (
    ACTIVE,
    api_get,
    new_thread,
    norm,
    reply_state,
    send_prompt,
    wait_for_reply,
    wait_until,
)

pytestmark = pytest.mark.browser

EXPECTED = " ".join(f"w{i}" for i in range(1, 301))
GOOD = "The model is back and answers in full this time"

# Relay bug (see the report): the terminal `event: error` of a failed reply is also what
# EventSource calls its own connection errors, so htmx's sse extension handles it as one and
# logs it with console.error ("[object MessageEvent]") in the tab that streams the reply.


def is_prefix(shown: str, full: str = EXPECTED) -> bool:
    """`shown` is the start of `full` (maybe ending mid-word: text is revealed gradually)."""
    return norm(full).startswith(norm(shown))


def whole_words_of(shown: str, full: str = EXPECTED) -> bool:
    """`shown` is the first whole words of `full`."""
    got = shown.split()
    return got == full.split()[:len(got)]


def stop_mid_reply(page, model, words_before_stop: int = 30) -> tuple[str, dict, list[str]]:
    """Ask for a long reply, press Stop once it shows some words; returns the article id, its
    stopped state, and the words shown when Stop was pressed."""
    # 12 s in all: still running when Stop arrives, even when the tab lags the stream.
    reply = send_prompt(page, model.script(EXPECTED, token_delay_s=0.04))
    shown = wait_until(lambda: (s := reply_state(page, reply)) and s["status"] in ACTIVE
                       and len(s["text"].split()) >= words_before_stop and s["text"].split(),
                       what=f"{words_before_stop} words before pressing Stop")
    page.locator(f"#{reply} button[data-action=cancel]").click()
    return reply, wait_for_reply(page, reply, ("aborted",), timeout=10), shown


def test_stop_button_stops_the_reply_and_keeps_its_text(page, model):
    new_thread(page)
    reply, stopped, shown = stop_mid_reply(page, model)

    assert stopped["label"] == "stopped"
    assert not stopped["cancel"], "a stopped reply still offers Stop"
    assert stopped["text"].strip(), "the stopped reply lost its text"
    assert whole_words_of(stopped["text"]), f"not a prefix of the reply: {stopped['text'][-80:]!r}"
    assert len(stopped["text"].split()) >= len(shown) - 1, "stopping took words away"
    assert len(stopped["text"].split()) < 300, "the reply was not stopped"
    # It stays stopped: the text does not move any more, in this page or a fresh one.
    settle_until = time.monotonic() + 1.0
    while time.monotonic() < settle_until:
        later = reply_state(page, reply)
        assert (later["status"], later["text"]) == ("aborted", stopped["text"])
        time.sleep(0.1)
    page.reload()
    reloaded = wait_for_reply(page, reply, ("aborted",))
    assert norm(reloaded["text"]) == norm(stopped["text"])


def test_continue_after_stop_finishes_the_reply_without_repeating(page, model):
    new_thread(page)
    reply, stopped, _ = stop_mid_reply(page, model)
    assert stopped["continue"], "a stopped reply offers no Continue button"
    page.locator(f"#{reply} button[data-action=continue]").click()

    def check(state):
        if state["status"] in ACTIVE:
            assert is_prefix(state["text"]), f"not a prefix: {state['text'][-80:]!r}"
            assert not state["plain"], "the continued reply fell back to raw text"

    done = wait_for_reply(page, reply, ("complete",), check=check)
    assert done["text"].split() == EXPECTED.split()
    assert done["count"] == 1
    # The seam: the stored reply is the old text and the model's continuation, exactly.
    stored = api_get(page, f"/messages/{reply.removeprefix('message-')}",
                     headers={"Accept": "application/json"}).json()
    assert stored["content"] == EXPECTED


FAILURES = {
    "http-500": (Reply(tokens=[], status=500), ""),
    "error-after-5-tokens": (Reply.words(EXPECTED, token_delay_s=0.01, error_after=5),
                             "w1 w2 w3 w4 w5"),
}


@pytest.mark.parametrize("kind", FAILURES)
def test_model_failure_shows_a_clear_message_and_keeps_partial_text(page, model, kind):
    failing, kept = FAILURES[kind]
    new_thread(page)
    reply = send_prompt(page, model.script(EXPECTED, failure=failing))
    failed = wait_for_reply(page, reply, ("error",))

    assert failed["label"] == "failed"
    assert failed["error"], "the failed reply shows no reason"
    assert "[object" not in failed["error"] and "Traceback" not in failed["error"]
    assert "sk-test" not in failed["error"]  # no secret ever reaches the page
    assert norm(failed["text"]) == kept
    assert page.locator(f"#{reply} .message-error").is_visible()
    assert failed["retry"], "a failed reply offers no Retry button"


@pytest.mark.parametrize("kind", FAILURES)
def test_retry_after_a_model_failure_completes_the_reply(page, model, kind):
    failing, kept = FAILURES[kind]
    new_thread(page)
    prompt = model.script(EXPECTED, token_delay_s=0.005, failure=failing)
    reply = send_prompt(page, prompt)
    wait_for_reply(page, reply, ("error",))
    model.recover(prompt)
    page.locator(f"#{reply} button[data-action=retry]").click()

    def check(state):  # what the failed reply had stays; the rest follows it
        if state["status"] in ACTIVE:
            assert is_prefix(state["text"]) and state["text"].startswith(kept), state["text"]

    done = wait_for_reply(page, reply, ("complete",), check=check)
    assert done["text"].split() == EXPECTED.split()
    assert done["error"] is None, "the old error is still shown"
    assert not done["retry"]
    assert done["count"] == 1
