"""The composer's model picker: a reply comes from the model picked, the thread keeps it."""

from __future__ import annotations

import pytest

from bench.fake_upstream import Reply
from tests.conftest import ANTHROPIC_KEY

from .conftest import RELAY_ENV, new_thread, norm, send_prompt, wait_for_reply, wait_until

pytestmark = pytest.mark.browser

CLAUDE_TEXT = "Claude answers **this** one, word by word."
OPENAI_TEXT = "The OpenAI-compatible model answers that one."




@pytest.fixture(scope="module")
def relay(server_factory, claude):
    return server_factory(**RELAY_ENV,
                          CHAT_MODELS="openai:fake-model,anthropic:claude-fake=Claude Fake",
                          ANTHROPIC_BASE_URL=claude.url, ANTHROPIC_API_KEY=ANTHROPIC_KEY)


def test_the_model_picked_in_the_composer_writes_the_reply_and_stays_picked(page, upstream,
                                                                            claude):
    thread = new_thread(page)
    picker = page.locator("form#composer select[name=model]")
    assert picker.input_value() == "fake-model"  # the default, first in CHAT_MODELS
    assert picker.locator("option").all_inner_texts() == ["fake-model", "Claude Fake"]

    picker.select_option("claude-fake")
    wait_until(lambda: page.locator("#model-health").get_attribute("data-state") == "ok",
               what="the picked model's health")
    prompt = claude.script(Reply.words(CLAUDE_TEXT, token_delay_s=0.01))
    reply = send_prompt(page, prompt)
    wait_for_reply(page, reply, ("complete",))
    article = page.locator(f"#{reply}")
    assert norm(article.locator(".message-body").inner_text()) == \
        "Claude answers this one, word by word."
    assert article.locator(".message-role").inner_text() == "claude-fake"
    assert len(claude.records_for(prompt)) == 1
    # Sending cleared the prompt but not the choice.
    assert picker.input_value() == "claude-fake"

    # The thread remembers it: a reload shows it picked.
    page.goto(thread)
    assert page.locator("form#composer select[name=model]").input_value() == "claude-fake"

    page.locator("form#composer select[name=model]").select_option("fake-model")
    prompt = upstream.script(Reply.words(OPENAI_TEXT, token_delay_s=0.01))
    reply = send_prompt(page, prompt)
    wait_for_reply(page, reply, ("complete",))
    article = page.locator(f"#{reply}")
    assert norm(article.locator(".message-body").inner_text()) == OPENAI_TEXT
    assert article.locator(".message-role").inner_text() == "fake-model"
    assert upstream.records_for(prompt)[0].body["model"] == "fake-model"
