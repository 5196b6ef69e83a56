"""Cost in the page: each reply's cost in its footer, and the thread's total as replies end,
in the asking tab and in a follower."""

from __future__ import annotations

import re

import pytest

from bench.fake_upstream import Reply

from .conftest import RELAY_ENV, new_thread, send_prompt, wait_for_reply, wait_until

pytestmark = pytest.mark.browser

USAGE = {"prompt_tokens": 2000, "completion_tokens": 500, "total_tokens": 2500}
# 2000 x 1.5 + 500 x 6 per million: $0.006 a reply.
PRICES = '{"gpt-4o-mini": {"input": 1.5, "output": 6}}'
REPLY_COST = 0.006


@pytest.fixture(scope="module")
def relay(server_factory):
    return server_factory(**RELAY_ENV, MODEL_PRICES=PRICES)


def thread_cost(page) -> float | None:
    raw = page.locator("#thread-cost").get_attribute("data-cost")
    return float(raw) if raw else None


def test_a_reply_shows_its_cost_and_the_thread_total_follows_each_reply(context, upstream):
    asker = context.new_page()
    thread = new_thread(asker)
    follower = context.new_page()
    follower.goto(thread)
    wait_until(lambda: follower.locator("#live-status").get_attribute("data-state") == "live",
               what="the follower's websocket")
    assert thread_cost(asker) is None and thread_cost(follower) is None

    for n in (1, 2):
        prompt = upstream.script(Reply.words(f"Reply number {n}, priced.", usage=USAGE,
                                             token_delay_s=0.01))
        article = send_prompt(asker, prompt)
        wait_for_reply(asker, article, ("complete",))
        cost = asker.locator(f"#{article} .message-foot .message-cost")
        wait_until(lambda cost=cost: cost.count() == 1, what="the reply's cost in its footer")
        assert cost.text_content() == "$0.006"
        assert "500 tokens" in asker.locator(f"#{article} .message-usage").text_content()
        for page in (asker, follower):
            wait_until(lambda page=page, n=n: thread_cost(page) is not None
                       and abs(thread_cost(page) - n * REPLY_COST) < 1e-9,
                       what=f"the thread total after reply {n}")
        shown = asker.locator("#thread-cost").text_content()
        assert re.search(rf"\${n * REPLY_COST:.3f}", shown), shown
        assert f"{n * 2500:,} tokens" in shown
