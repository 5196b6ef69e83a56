"""Comparing models in Chromium: one prompt, two models streaming side by side, one chosen."""

from __future__ import annotations

import pytest

from bench.fake_upstream import Reply
from tests.conftest import ANTHROPIC_KEY

from .conftest import ACTIVE, RELAY_ENV, new_thread, norm, send_prompt, wait_for_reply, wait_until
from .test_share import open_viewer, share

pytestmark = pytest.mark.browser

OPENAI_TEXT = " ".join(f"openai{i}" for i in range(60)) + " **done**."
CLAUDE_TEXT = " ".join(f"claude{i}" for i in range(60)) + " *finished*."
CELLS = ".comparison .comparison-cell"




@pytest.fixture(scope="module")
def relay(server_factory, claude):
    return server_factory(**RELAY_ENV,
                          CHAT_MODELS="openai:fake-model,anthropic:claude-fake=Claude Fake",
                          ANTHROPIC_BASE_URL=claude.url, ANTHROPIC_API_KEY=ANTHROPIC_KEY)


def cells(page) -> list[dict]:
    """Each reply of the comparison as the page shows it, left to right."""
    return page.evaluate("""(selector) => Array.from(document.querySelectorAll(selector),
      (cell) => {
        const article = cell.querySelector('article.message');
        const box = article.getBoundingClientRect();
        return {id: article.id, status: article.getAttribute('data-status'),
                model: article.querySelector('.message-role').textContent.trim(),
                text: article.querySelector('.message-body').textContent,
                chosen: cell.getAttribute('data-chosen') === 'true',
                use: (cell.querySelector('button[data-action="use-version"]') || {}).textContent,
                x: box.x, y: box.y, width: box.width};
      })""", CELLS)


def test_compare_two_models_side_by_side(page, new_context, upstream, claude):
    new_thread(page)
    viewer = open_viewer(new_context, share(page))
    prompt = upstream.script(Reply.words(OPENAI_TEXT, token_delay_s=0.03))
    claude.scripts[prompt] = [Reply.words(CLAUDE_TEXT, token_delay_s=0.03)]

    # Compare: the model picked cannot be ticked twice; tick Claude.
    page.locator('form#composer [data-action="compare"]').click()
    assert page.locator('input[name=compare][value="fake-model"]').is_disabled()
    page.locator('input[name=compare][value="claude-fake"]').check()
    assert page.locator('form#composer [data-action="compare"]').inner_text() == \
        "Compare: 2 models"
    send_prompt(page, prompt)

    # Both stream at once, side by side, each labelled with its model.
    both_streaming = wait_until(
        lambda: (shown := cells(page)) and len(shown) == 2
        and all(c["status"] in ACTIVE and c["text"].strip() for c in shown) and shown,
        what="both replies to stream at once")
    assert [c["model"] for c in both_streaming] == ["fake-model", "claude-fake"]
    left, right = both_streaming
    assert abs(left["y"] - right["y"]) < 2 and right["x"] >= left["x"] + left["width"]
    page.screenshot(path="/tmp/compare-streaming.png")
    for cell in both_streaming:
        wait_for_reply(page, cell["id"], ("complete",))
    page.screenshot(path="/tmp/compare-done.png")
    done = cells(page)
    assert [norm(c["text"]) for c in done] == [norm(OPENAI_TEXT.replace("**", "")),
                                               norm(CLAUDE_TEXT.replace("*", ""))]
    assert [c["chosen"] for c in done] == [True, False]
    assert [c["use"] for c in done] == ["In use", "Use this"]
    # The compose box is free again, and no longer comparing.
    assert page.locator('form#composer [data-action="compare"]').inner_text() == "Compare"
    assert not page.locator('input[name=compare][value="claude-fake"]').is_checked()

    # A share viewer followed the comparison live.
    wait_until(lambda: [c["status"] for c in cells(viewer)] == ["complete", "complete"],
               what="the viewer's comparison to finish")
    assert [c["model"] for c in cells(viewer)] == ["fake-model", "claude-fake"]

    # Choose Claude's reply: it is the one in use, here and for the viewer.
    claude_id = done[1]["id"]
    page.locator(f'{CELLS}:has(#{claude_id}) button[data-action="use-version"]').click()
    wait_until(lambda: [c["chosen"] for c in cells(page)] == [False, True],
               what="Claude's reply to be chosen")
    wait_until(lambda: [c["chosen"] for c in cells(viewer)] == [False, True],
               what="the viewer to see the choice")

    # On a phone the replies stack.
    page.set_viewport_size({"width": 390, "height": 800})
    stacked = cells(page)
    page.screenshot(path="/tmp/compare-phone.png")
    assert stacked[1]["y"] > stacked[0]["y"] and abs(stacked[0]["x"] - stacked[1]["x"]) < 2
    page.set_viewport_size({"width": 1280, "height": 800})

    # The thread goes on from the chosen reply.
    follow_up = upstream.script(Reply.words("Going on from Claude.", token_delay_s=0.01))
    reply = send_prompt(page, follow_up)
    wait_for_reply(page, reply, ("complete",))
    sent = [(m["role"], m["content"]) for m in upstream.records_for(follow_up)[0].body["messages"]
            if m["role"] != "system"]
    assert sent == [("user", prompt), ("assistant", CLAUDE_TEXT), ("user", follow_up)]
    # Once the thread has gone on, the turn shows as versions (‹ 2 / 2 ›).
    page.reload()
    wait_until(lambda: page.locator(f"#{claude_id} .version-label").count() == 1,
               what="the compared turn with its versions")
    assert page.locator(".comparison").count() == 0
    assert page.locator(f"#{claude_id} .version-label").inner_text() == "2 / 2"
