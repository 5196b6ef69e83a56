"""The home page starts a conversation; titles reach every tab; no empty thread is left."""

from __future__ import annotations

import re

import pytest

from .conftest import new_thread, norm, send_prompt, wait_for_reply, wait_live, wait_until

pytestmark = pytest.mark.browser

REPLY = "A first reply, streamed on the thread page the home composer opened."


def sidebar_titles(page) -> list[str]:
    return [norm(t) for t in page.locator("#thread-list a.thread-link").evaluate_all(
        "links => links.map(a => a.firstChild.textContent)")]


def test_the_home_composer_makes_the_thread_with_its_first_prompt(page, model):
    page.goto("/")
    box = page.locator("form#composer textarea[name=content]")
    assert page.evaluate("document.activeElement.id") == "composer-content"
    prompt = model.script(REPLY, ask="Start from home")
    box.fill(prompt)
    box.press("Enter")
    page.wait_for_url(re.compile(r"/threads/\d+$"))
    assert norm(page.locator('article.message[data-role="user"] .message-body')
                .text_content()) == prompt
    reply = page.locator('article.message[data-role="assistant"]').get_attribute("id")
    assert norm(wait_for_reply(page, reply, ("complete",))["text"]) == norm(REPLY)
    assert page.locator("h1#thread-title").text_content() == prompt
    assert page.title() == f"{prompt} · Relay"
    assert sidebar_titles(page)[0] == prompt


def test_a_suggestion_starts_a_thread_with_it(page):
    page.goto("/")
    suggestion = page.locator("form.suggestions button.suggestion").first
    text = suggestion.text_content().strip()
    suggestion.click()
    page.wait_for_url(re.compile(r"/threads/\d+$"))
    assert norm(page.locator('article.message[data-role="user"] .message-body')
                .text_content()) == text
    assert page.locator("h1#thread-title").text_content() == text


def test_new_thread_opens_the_home_composer_and_leaves_no_empty_thread(page, model):
    new_thread(page)
    reply = send_prompt(page, model.script("Done.", ask="Only thread"))
    wait_for_reply(page, reply, ("complete",))
    before = sidebar_titles(page)
    assert len(before) == 1

    page.locator("a.new-thread").click()
    page.wait_for_url(re.compile(r"/$"))
    assert page.evaluate("document.activeElement.id") == "composer-content"
    assert sidebar_titles(page) == before
    page.locator("a.new-thread").click()
    page.wait_for_url(re.compile(r"/$"))
    assert sidebar_titles(page) == before
    assert "New thread" not in sidebar_titles(page)


def test_the_title_reaches_other_tabs_headings_sidebars_and_tab_titles(context, model):
    asker = context.new_page()
    thread = new_thread(asker)
    live = context.new_page()
    live.goto(thread)
    poller = context.new_page()
    poller.goto(thread + "?follow=poll")
    wait_live(live, "the websocket follower")
    for tab in (asker, live, poller):
        assert tab.locator("h1#thread-title").text_content() == "New thread"
        assert tab.title() == "New thread · Relay"

    prompt = model.script("Named.", ask="Title for every tab")
    send_prompt(asker, prompt)
    for tab in (asker, live, poller):
        wait_until(lambda tab=tab: tab.locator("h1#thread-title").text_content() == prompt,
                   what="the title in the heading")
        wait_until(lambda tab=tab: tab.title() == f"{prompt} · Relay", what="document.title")
        wait_until(lambda tab=tab: sidebar_titles(tab)[:1] == [prompt],
                   what="the thread at the top of the sidebar")
        assert sidebar_titles(tab).count(prompt) == 1
