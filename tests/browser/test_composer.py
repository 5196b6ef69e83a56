"""The composer while a reply is written: Send becomes Stop (Escape stops too), a prompt
written meanwhile waits its turn, the length counter, human errors and the model's health."""

from __future__ import annotations

import pytest

from .conftest import (
    ACTIVE,
    RELAY_ENV,
    new_thread,
    norm,
    reply_state,
    send_prompt,
    wait_for_reply,
    wait_live,
    wait_until,
)

pytestmark = pytest.mark.browser

LIMIT = 300
LONG = " ".join(f"long{i}" for i in range(150))
QUEUED_REPLY = "The queued prompt got its own reply after the first one ended."

COMPOSER_STATE_JS = """() => {
  const button = document.querySelector('#composer button[data-action="send"]');
  const queued = document.getElementById('composer-queued');
  return {button: button.textContent.trim(), mode: button.getAttribute('data-mode'),
          queued: queued.hidden ? null : queued.querySelector('.composer-queued-text').textContent,
          draft: document.querySelector('#composer textarea').value,
          focused: document.activeElement && document.activeElement.id};
}"""


@pytest.fixture(scope="module")
def relay(server_factory):
    """A short prompt limit, so the counter and the refusal are quick to reach."""
    return server_factory(**RELAY_ENV, MAX_PROMPT_CHARS=str(LIMIT))


def composer_state(page) -> dict:
    return page.evaluate(COMPOSER_STATE_JS)


def user_prompts(page) -> list[str]:
    return [norm(t) for t in page.locator(
        'article.message[data-role="user"] .message-body').all_text_contents()]


def start_long_reply(page, model, text: str = LONG) -> str:
    reply = send_prompt(page, model.script(text, token_delay_s=0.04))
    wait_until(lambda: composer_state(page)["button"] == "Stop", what="Send to become Stop")
    return reply


def test_send_becomes_stop_while_the_reply_streams_and_stop_stops_it(page, model):
    new_thread(page)
    assert composer_state(page)["button"] == "Send"
    reply = start_long_reply(page, model)
    assert reply_state(page, reply)["status"] in ACTIVE
    assert page.locator(f"#{reply} button[data-action=cancel]").count() == 1  # still there

    page.locator('#composer button[data-action="send"]').click()
    stopped = wait_for_reply(page, reply, ("aborted",), timeout=15)
    assert len(stopped["text"].split()) < 150
    state = wait_until(lambda: (s := composer_state(page))["button"] == "Send" and s,
                       what="Stop to become Send again")
    assert state["focused"] == "composer-content"


def test_escape_in_the_page_stops_the_reply_and_focus_returns_to_the_composer(page, model):
    new_thread(page)
    reply = start_long_reply(page, model)
    page.locator("h1#thread-title").click()  # focus away from the composer
    page.keyboard.press("Escape")
    wait_for_reply(page, reply, ("aborted",), timeout=15)
    wait_until(lambda: composer_state(page)["focused"] == "composer-content",
               what="focus back in the composer")
    assert composer_state(page)["button"] == "Send"


def test_another_tab_of_the_thread_shows_stop_and_escape_there_stops_the_reply(context,
                                                                               model):
    asker = context.new_page()
    thread = new_thread(asker)
    other = context.new_page()
    other.goto(thread)
    wait_live(other, "the other tab's websocket")
    reply = start_long_reply(asker, model)
    wait_until(lambda: composer_state(other)["button"] == "Stop",
               what="the other tab to offer Stop")
    other.keyboard.press("Escape")
    wait_for_reply(asker, reply, ("aborted",), timeout=15)
    wait_until(lambda: composer_state(other)["button"] == "Send", what="Send in the other tab")


def queue_a_prompt(page, model) -> tuple[str, str]:
    """Start a long reply, then write and send a second prompt while it runs; returns the
    first reply's article id and the second prompt."""
    new_thread(page)
    first = start_long_reply(page, model)
    second_prompt = model.script(QUEUED_REPLY)
    box = page.locator("form#composer textarea[name=content]")
    box.fill(second_prompt)
    box.press("Enter")
    return first, second_prompt


def test_a_prompt_sent_meanwhile_waits_then_goes_when_the_reply_ends(page, model):
    first, second_prompt = queue_a_prompt(page, model)

    state = composer_state(page)
    assert state["queued"] == second_prompt and state["draft"] == ""
    assert page.locator("#composer-queued").is_visible()
    assert reply_state(page, first)["status"] in ACTIVE
    assert len(user_prompts(page)) == 1  # not sent in parallel
    # Nothing reached the server either: one reply at a time.
    assert page.locator('article.message[data-role="assistant"]').count() == 1

    wait_for_reply(page, first, ("complete",), timeout=40)
    wait_until(lambda: len(user_prompts(page)) == 2, what="the queued prompt to be sent")
    assert user_prompts(page)[1] == second_prompt
    assert composer_state(page)["queued"] is None
    second = page.locator('article.message[data-role="assistant"]').last.get_attribute("id")
    assert second != first
    assert norm(wait_for_reply(page, second, ("complete",))["text"]) == norm(QUEUED_REPLY)


def test_a_queued_prompt_goes_when_the_reply_is_stopped(page, model):
    first, second_prompt = queue_a_prompt(page, model)
    assert composer_state(page)["queued"] == second_prompt
    page.keyboard.press("Escape")
    wait_for_reply(page, first, ("aborted",), timeout=15)
    wait_until(lambda: len(user_prompts(page)) == 2, what="the queued prompt to be sent")
    second = page.locator('article.message[data-role="assistant"]').last.get_attribute("id")
    assert norm(wait_for_reply(page, second, ("complete",))["text"]) == norm(QUEUED_REPLY)


def test_cancelling_a_queued_prompt_gives_its_text_back_and_sends_nothing(page, model):
    new_thread(page)
    # Long enough (24 s) that it is surely still running when the queued prompt is cancelled.
    first = start_long_reply(page, model, " ".join(f"long{i}" for i in range(600)))
    box = page.locator("form#composer textarea[name=content]")
    box.fill("Never mind this one")
    box.press("Enter")
    assert composer_state(page)["queued"] == "Never mind this one"

    page.locator('[data-action="cancel-queued"]').click()
    state = composer_state(page)
    assert state["queued"] is None and state["draft"] == "Never mind this one"
    assert state["focused"] == "composer-content"
    assert page.locator("#composer-queued").is_hidden()

    page.keyboard.press("Escape")  # the reply ends, as a queued prompt would wait for
    wait_for_reply(page, first, ("aborted",), timeout=15)
    page.wait_for_timeout(1000)  # time enough for a queued prompt to have gone
    assert len(user_prompts(page)) == 1
    assert composer_state(page)["draft"] == "Never mind this one"


def test_the_counter_shows_near_the_limit_and_an_over_long_prompt_is_refused(page):
    new_thread(page)
    box = page.locator("form#composer textarea[name=content]")
    counter = page.locator("#composer-counter")
    box.fill("a" * 100)
    assert counter.is_hidden()
    box.fill("a" * 250)
    assert counter.is_visible() and counter.text_content() == f"250 / {LIMIT} characters"
    box.fill("a" * (LIMIT + 5))
    assert counter.text_content() == f"5 characters over the limit of {LIMIT}"
    assert counter.get_attribute("data-state") == "over"

    box.press("Enter")
    flash = page.locator("#flash")
    flash.wait_for()
    assert flash.text_content() == (f"The message is {LIMIT + 5} characters long; the limit "
                                    f"is {LIMIT}. Shorten it and send again.")
    assert page.locator("article.message").count() == 0  # nothing was sent
    assert box.input_value() == "a" * (LIMIT + 5)  # nothing was lost


def test_an_error_from_the_server_reads_as_a_sentence(page, console):
    # The browser and htmx log every 4xx answer as a console error: this one is expected.
    console.allow(r"Response Status Error Code 413|status of 413")
    new_thread(page)
    # Past the page's own check (as an outdated page would be): the server's answer shows.
    page.evaluate("document.getElementById('composer').removeAttribute('data-max-chars')")
    box = page.locator("form#composer textarea[name=content]")
    box.fill("b" * (LIMIT + 1))
    box.press("Enter")
    flash = page.locator("#flash")
    flash.wait_for()
    assert flash.text_content() == (f"The message is {LIMIT + 1} characters long; "
                                    f"the limit is {LIMIT}.")
    assert page.locator("article.message").count() == 0


def test_the_model_is_shown_ready_before_anything_is_sent(page):
    page.goto("/")
    health = page.locator("#model-health")
    wait_until(lambda: health.get_attribute("data-state") == "ok", what="the model's health")
    assert health.is_visible() and health.text_content() == "Model ready"


def test_the_404_page_lists_the_persons_threads(page, model, console):
    console.allow(r"status of 404")  # the browser logs the page's own 404
    thread = new_thread(page)
    reply = send_prompt(page, model.script("Short."))
    wait_for_reply(page, reply, ("complete",))
    title = page.locator("h1#thread-title").text_content()
    answer = page.goto("/threads/999999999")
    assert answer.status == 404
    assert page.locator("main h1").text_content() == "Page not found"
    link = page.locator(f'#thread-list a[href="{thread}"]')
    assert link.is_visible() and title in link.text_content()
    assert page.locator(".thread-list-empty").is_hidden()


def test_on_a_phone_stop_and_the_queued_prompt_fit_the_screen(new_context, model,
                                                              artifacts_dir):
    page = new_context(viewport={"width": 390, "height": 844}, is_mobile=True,
                       has_touch=True).new_page()
    new_thread(page)
    first = start_long_reply(page, model)
    box = page.locator("form#composer textarea[name=content]")
    button = page.locator('#composer button[data-action="send"]')
    assert box.get_attribute("placeholder") == \
        "Ask anything. Enter adds a line; the Send button sends."
    assert button.text_content() == "Stop"
    button.tap()  # nothing typed: Stop
    wait_for_reply(page, first, ("aborted",), timeout=15)

    second = start_long_reply(page, model)
    box.fill("Queued on a phone")
    box.press("Enter")  # a touch keyboard's Enter adds a line...
    assert box.input_value() == "Queued on a phone\n"
    wait_until(lambda: button.text_content() == "Queue", what="the button to queue")
    button.tap()  # ...and the button queues what was typed while the reply runs
    queued = page.locator("#composer-queued")
    wait_until(queued.is_visible, what="the queued prompt")
    for element in (queued, button, page.locator('[data-action="cancel-queued"]')):
        area = element.bounding_box()
        assert area["x"] >= 0 and area["x"] + area["width"] <= 390, "off the screen's side"
    page.screenshot(path=str(artifacts_dir / "phone-composer-queued.png"))
    wait_until(lambda: button.text_content() == "Stop", what="Stop once the box is empty")
    button.tap()
    wait_for_reply(page, second, ("aborted",), timeout=15)
    wait_until(lambda: len(user_prompts(page)) == 3, what="the queued prompt to be sent")
