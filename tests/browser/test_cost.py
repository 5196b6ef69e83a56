"""Cost in the page: each reply's cost in its footer, and the thread's total as replies end,
in the asking tab and in a follower."""

from __future__ import annotations

import re

import pytest

from bench.fake_upstream import Reply

from .conftest import (
    RELAY_ENV,
    new_thread,
    reply_state,
    send_prompt,
    wait_for_reply,
    wait_live,
    wait_until,
)
from .test_a11y import axe_violations

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
    wait_live(follower, "the follower's websocket")
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


def test_a_follower_sees_the_thread_total_grow_from_the_estimate_while_a_reply_streams(
        context, upstream):
    asker = context.new_page()
    thread = new_thread(asker)
    follower = context.new_page()
    follower.goto(thread)
    wait_live(follower, "the follower's websocket")
    text = " ".join(f"word{i}" for i in range(150))
    article = send_prompt(asker, upstream.script(Reply.words(text, usage=USAGE,
                                                            token_delay_s=0.03)))
    # While it streams, the total is an estimate (~) of the text so far, and it grows.
    seen = set()

    def estimated_and_growing():
        shown = follower.locator("#thread-cost").text_content() or ""
        if "~" in shown and thread_cost(follower):
            seen.add(thread_cost(follower))
        return len(seen) >= 2
    wait_until(estimated_and_growing, what="an estimated total that grows while streaming")
    assert reply_state(asker, article)["status"] in ("pending", "streaming")
    wait_for_reply(asker, article, ("complete",))
    # Once it ends, the model's own counts replace the estimate.
    wait_until(lambda: thread_cost(follower) is not None
               and abs(thread_cost(follower) - REPLY_COST) < 1e-9
               and "~" not in follower.locator("#thread-cost").text_content(),
               what="the exact total in the follower")


def test_usage_page_lists_the_days_and_models_and_passes_axe(context, upstream):
    page = context.new_page()
    new_thread(page)
    article = send_prompt(page, upstream.script(Reply.words("Priced reply.", usage=USAGE)))
    wait_for_reply(page, article, ("complete",))
    page.locator("a[data-action=usage]").first.click()
    page.wait_for_url("**/usage")
    by_model = page.locator("#usage-by-model tbody tr")
    assert by_model.count() == 1
    assert "gpt-4o-mini" in by_model.first.text_content()
    assert "$0.006" in by_model.first.text_content()
    assert page.locator("#usage-by-day tbody tr").count() == 1
    assert [v for v in axe_violations(page) if v["impact"] in ("serious", "critical")] == []
