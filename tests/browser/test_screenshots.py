"""Screenshots of a streaming and a finished thread on a desktop and on a phone; the layout."""

from __future__ import annotations

import pytest

from .conftest import ACTIVE, new_thread, norm, reply_state, send_prompt, wait_for_reply, wait_until

pytestmark = pytest.mark.browser

TEXT = " ".join(
    f"Sentence number {i} of a reply long enough to fill the screen while it is being written."
    for i in range(1, 13))
VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}


def overflow(page) -> int:
    """How many pixels the page sticks out sideways (0 when it fits its viewport)."""
    return page.evaluate("document.documentElement.scrollWidth - window.innerWidth")


@pytest.mark.parametrize("device", VIEWPORTS)
def test_screenshots_of_a_streaming_and_a_finished_thread(new_context, model, artifacts_dir,
                                                          device):
    context = new_context(viewport=VIEWPORTS[device], has_touch=device == "phone")
    page = context.new_page()
    new_thread(page)
    reply = send_prompt(page, model.script(TEXT, token_delay_s=0.02,
                                           ask="Write a long answer, please"))

    wait_until(lambda: (s := reply_state(page, reply))["status"] in ACTIVE
               and len(s["text"].split()) >= 40, what="a reply well under way")
    streaming = artifacts_dir / f"thread-streaming-{device}.png"
    page.screenshot(path=str(streaming))
    assert reply_state(page, reply)["status"] in ACTIVE, "finished before the screenshot"
    assert page.locator(f"#{reply} button[data-action=cancel]").is_visible()

    done = wait_for_reply(page, reply, ("complete",))
    assert norm(done["text"]) == norm(TEXT)
    finished = artifacts_dir / f"thread-finished-{device}.png"
    page.screenshot(path=str(finished), full_page=True)

    for shot in (streaming, finished):
        assert shot.is_file() and shot.stat().st_size > 0, shot
    assert overflow(page) == 0, "the page is wider than the screen"
    composer = page.locator("form#composer textarea[name=content]")
    composer.scroll_into_view_if_needed()
    assert composer.is_visible()


def test_phone_layout_fits_a_prompt_with_a_long_word(new_context, model):
    context = new_context(viewport=VIEWPORTS["phone"], has_touch=True)
    page = context.new_page()
    new_thread(page)
    digest = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    reply = send_prompt(page, model.script("A short answer.", ask=f"Which file has {digest} ?"))
    wait_for_reply(page, reply, ("complete",))
    assert overflow(page) == 0, f"the page is {overflow(page)} px wider than the screen"


def test_status_label_reads_writing_while_the_reply_streams(page, model):
    new_thread(page)
    reply = send_prompt(page, model.script(TEXT[:400], token_delay_s=0.03))
    state = wait_until(lambda: (s := reply_state(page, reply))["status"] == "streaming"
                       and len(s["text"].split()) >= 10 and s, what="text streaming in")
    assert state["label"] == "writing", f"the label reads {state['label']!r} while writing"
