"""A worker at capacity, as a person sees it: the reply says it is queued and how many are
ahead, then streams exactly once a slot frees."""

from __future__ import annotations

import pytest

from .conftest import (
    RELAY_ENV,
    new_thread,
    norm,
    reply_state,
    send_prompt,
    wait_for_reply,
    wait_until,
)

pytestmark = pytest.mark.browser

LONG = " ".join(f"first{i}" for i in range(600))  # 18 s: still going however slow the tabs
SHORT = "The second reply, once the first has finished."


@pytest.fixture(scope="module")
def relay(server_factory):
    """One generation at a time, so a second reply has to wait its turn."""
    return server_factory(**RELAY_ENV, MAX_GENERATIONS="1", MAX_LOOP_LAG_MS="0")


def test_a_queued_reply_shows_its_place_then_streams_exactly(context, model):
    first_tab, second_tab = context.new_page(), context.new_page()
    new_thread(first_tab)
    first = send_prompt(first_tab, model.script(LONG, token_delay_s=0.03))
    wait_for_reply(first_tab, first, ("streaming",))

    new_thread(second_tab)
    second = send_prompt(second_tab, model.script(SHORT))
    queued = wait_until(lambda: (s := reply_state(second_tab, second)) and
                        s["label"].startswith("queued") and s, what="the queued label")
    assert queued["label"] == "queued — next"
    assert reply_state(first_tab, first)["status"] == "streaming"  # the first keeps going

    first_tab.locator(f"#{first} button[data-action=cancel]").click()  # its slot frees
    stopped = wait_for_reply(first_tab, first, ("aborted",), timeout=20)
    assert stopped["text"] and norm(LONG).startswith(norm(stopped["text"]))
    done = wait_for_reply(second_tab, second, ("complete",), timeout=40)
    assert norm(done["text"]) == norm(SHORT)
