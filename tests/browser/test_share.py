"""Share links as the owner and a viewer use them: copy, revoke, what viewers see, live title."""

from __future__ import annotations

import pytest

from .conftest import (
    ACTIVE,
    new_thread,
    norm,
    reply_state,
    send_prompt,
    wait_for_reply,
    wait_live,
    wait_until,
)

pytestmark = pytest.mark.browser

LONG = " ".join(f"shared{i}" for i in range(80))


def share(page) -> str:
    """Press Share on the owner's thread page; returns the read-only link."""
    page.locator('#share button[data-action="share"]').click()
    link = page.locator("#share-link")
    link.wait_for()
    return link.input_value()


def open_viewer(new_context, url: str):
    viewer = new_context().new_page()
    answer = viewer.goto(url)
    assert answer.status == 200
    wait_live(viewer, "the viewer's websocket")
    return viewer


def test_the_copy_button_puts_the_share_link_on_the_clipboard(new_context):
    context = new_context(permissions=["clipboard-read", "clipboard-write"])
    page = context.new_page()
    new_thread(page)
    url = share(page)
    button = page.locator('[data-action="copy-link"]')
    button.wait_for(state="visible")  # shown by the page's script (it needs JavaScript)
    button.click()
    wait_until(lambda: button.text_content() == "Copied", what="the copy confirmation")
    assert page.evaluate("navigator.clipboard.readText()") == url
    assert "/s/" in url


def test_revoking_a_link_shuts_out_its_viewers_and_a_new_share_is_a_new_link(context,
                                                                             new_context,
                                                                             console, model):
    console.allow(r"status of 404")  # the revoked link's page is a 404, as it should be
    page = context.new_page()
    new_thread(page)
    wait_for_reply(page, send_prompt(page, model.script("Words for the viewer.")),
                   ("complete",))
    url = share(page)
    viewer = new_context().new_page()
    assert viewer.goto(url).status == 200
    assert viewer.locator("article.message").count() == 2
    wait_live(viewer, "the viewer's websocket")

    page.on("dialog", lambda dialog: dialog.accept())  # "Revoke this link?"
    page.locator('[data-action="revoke-share"]').click()
    page.locator('#share button[data-action="share"]').wait_for()
    assert page.locator("#share-link").count() == 0
    # The viewer following live is shut out at once: what it showed goes, and it says why.
    viewer.locator(".thread--deleted [role=alert]").wait_for()
    assert "stopped sharing" in viewer.locator(".thread--deleted").text_content()
    assert viewer.locator("article.message").count() == 0
    assert viewer.goto(url).status == 404

    again = share(page)
    assert again != url
    assert viewer.goto(again).status == 200


def test_a_viewer_sees_user_and_model_labels_and_no_owner_chrome(context, new_context, model):
    page = context.new_page()
    new_thread(page)
    reply = send_prompt(page, model.script(LONG, token_delay_s=0.05))
    viewer = open_viewer(new_context, share(page))

    wait_until(lambda: (s := reply_state(viewer, reply)) and s["status"] in ACTIVE,
               what="the active reply in the viewer")
    roles = [norm(r) for r in viewer.locator(".message-role").all_text_contents()]
    assert roles[0] == "User" and "You" not in roles
    assert roles[1] == page.locator(f"#{reply} .message-role").text_content()
    for chrome in ("#thread-list", "a.new-thread", "form#composer", "#share",
                   "button[data-action=cancel]"):
        assert viewer.locator(chrome).count() == 0, f"a viewer sees {chrome}"

    wait_for_reply(page, reply, ("complete",), timeout=40)
    wait_for_reply(viewer, reply, ("complete",), timeout=20)
    for action in ("retry", "continue", "cancel"):
        assert viewer.locator(f"button[data-action={action}]").count() == 0


def test_a_viewer_sees_the_title_arrive_in_the_heading_and_the_tab(context, new_context,
                                                                    model):
    page = context.new_page()
    new_thread(page)
    viewer = open_viewer(new_context, share(page))
    assert viewer.locator("h1#thread-title").text_content() == "New thread"

    prompt = model.script("Titled.", ask="Name this shared thread")
    send_prompt(page, prompt)
    wait_until(lambda: viewer.locator("h1#thread-title").text_content() == prompt,
               what="the title in the viewer's heading")
    wait_until(lambda: viewer.title() == f"{prompt} · Relay", what="the viewer's tab title")
