"""Without JavaScript: plain forms post, and the page refreshes itself until the reply is done."""

from __future__ import annotations

import re

import pytest

from bench.fake_upstream import Reply

from .conftest import norm, wait_until

pytestmark = pytest.mark.browser

TEXT = "Written for a browser without JavaScript and read once the page refreshes itself."


def test_without_javascript_a_prompt_gets_a_finished_reply(new_context, upstream):
    context = new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto("/")
    # Every load from here on, counted before it can happen: the page refreshes itself
    # 2 s after loading, whatever the test is doing then.
    loads = []
    page.on("load", lambda: loads.append(page.url))
    # The home composer is a plain form: the thread is made with its first prompt. The
    # reply takes about 4 s, so the first refreshes come while it is still written.
    page.locator("form#composer textarea[name=content]").fill(
        upstream.script(Reply.words(TEXT, token_delay_s=0.3)))
    page.locator("form#composer button[type=submit]").click()
    page.wait_for_url(re.compile(r"/threads/\d+$"))
    reply = page.locator('article.message[data-role="assistant"]').last
    first_status = reply.get_attribute("data-status")

    # No reloading by hand: the page's own <noscript> refresh brings the finished reply.
    complete = page.locator('article.message[data-role="assistant"][data-status="complete"]')
    complete.wait_for(timeout=30_000)
    assert norm(complete.locator(".message-body").text_content()) == norm(TEXT)
    assert first_status in ("pending", "streaming")  # so the refresh is what brought it
    thread_loads = [url for url in loads if re.search(r"/threads/\d+$", url)]
    assert len(thread_loads) >= 2, "the page never refreshed itself while the reply was written"
    # A finished thread stops refreshing.
    assert page.locator('meta[http-equiv="refresh"]').count() == 0

    # A second prompt in the thread: the plain form posts and is sent back to the thread.
    thread_url = page.url
    page.locator("form#composer textarea[name=content]").fill("And a second question")
    page.locator("form#composer button[type=submit]").click()
    page.wait_for_url(thread_url)
    assert page.locator('article.message[data-role="user"]').count() == 2


def test_without_javascript_the_page_promises_nothing_it_cannot_do(new_context, upstream):
    context = new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto("/")
    box = page.locator("form#composer textarea[name=content]")
    assert "Enter" not in box.get_attribute("placeholder")
    assert page.locator("#model-health").is_hidden()  # nothing claimed without a check
    assert page.locator('[data-action="copy-link"]:visible').count() == 0

    box.fill(upstream.script(Reply.words("A short reply.")))
    page.locator("form#composer button[type=submit]").click()
    page.wait_for_url(re.compile(r"/threads/\d+$"))
    status = page.locator("#live-status")
    assert status.get_attribute("data-state") == "static"
    assert "Connecting" not in status.text_content()
    assert "Enter" not in page.locator("form#composer textarea").get_attribute("placeholder")
    page.locator('article.message[data-role="assistant"][data-status="complete"]').wait_for(
        timeout=30_000)
    assert norm(page.locator("#live-status").text_content()) == "Not live: reload to see changes"


def test_with_javascript_the_same_page_switches_to_its_live_wording(context, upstream):
    page = context.new_page()
    page.goto("/")
    box = page.locator("form#composer textarea[name=content]")
    assert "Enter sends" in box.get_attribute("placeholder")
    box.fill(upstream.script(Reply.words("A short reply.")))
    box.press("Enter")
    page.wait_for_url(re.compile(r"/threads/\d+$"))
    status = page.locator("#live-status")
    wait_until(lambda: status.get_attribute("data-state") == "live", what="the websocket")
    assert page.locator("#live-status").text_content() == "Live"
    assert "Enter sends" in page.locator(
        "form#composer textarea").get_attribute("placeholder")
