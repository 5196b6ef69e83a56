"""Without JavaScript: plain forms post, and the page refreshes itself until the reply is done."""

from __future__ import annotations

import re

import pytest

from bench.fake_upstream import Reply

from .conftest import norm

pytestmark = pytest.mark.browser

TEXT = "Written for a browser without JavaScript and read once the page refreshes itself."


def test_without_javascript_a_prompt_gets_a_finished_reply(new_context, upstream):
    context = new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto("/")
    page.locator("form.new-thread button[type=submit]").click()
    page.wait_for_url(re.compile(r"/threads/\d+$"))
    thread_url = page.url

    page.locator("form#composer textarea[name=content]").fill(
        upstream.script(Reply.words(TEXT, token_delay_s=0.03)))
    page.locator("form#composer button[type=submit]").click()
    page.wait_for_url(thread_url)  # the plain form posts and is sent back to the thread
    reply = page.locator('article.message[data-role="assistant"]').last
    first_status = reply.get_attribute("data-status")
    loads = []
    page.on("load", lambda: loads.append(page.url))

    # No reloading by hand: the page's own <noscript> refresh brings the finished reply.
    complete = page.locator('article.message[data-role="assistant"][data-status="complete"]')
    complete.wait_for(timeout=30_000)
    assert norm(complete.locator(".message-body").text_content()) == norm(TEXT)
    assert first_status in ("pending", "streaming")  # so the refresh is what brought it
    assert loads, "the page never refreshed itself while the reply was being written"
    # A finished thread stops refreshing.
    assert page.locator('meta[http-equiv="refresh"]').count() == 0
