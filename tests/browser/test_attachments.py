"""Attachments in Chromium: an image pasted and a PDF dropped into the composer become
chips with the context budget; sent, the prompt shows the image's thumbnail and the demo
model's reply, streamed, names both files."""

from __future__ import annotations

import base64

import pytest

from tests.files import pdf, png

from .conftest import RELAY_ENV, api_get, new_thread, norm, wait_for_reply, wait_live, wait_until

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def relay(server_factory):
    """The offline demo model (it reads images and names what it was sent), slow enough
    to be seen streaming; a second model that cannot read images."""
    return server_factory(**RELAY_ENV, CHAT_PROVIDER="demo", DEMO_TOKEN_DELAY_MS="20",
                          CHAT_MODELS="demo=Demo,demo:blind;no-vision;context=1000=Blind")


PUT_FILE_JS = """([kind, name, type, b64]) => {
  const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
  const data = new DataTransfer();
  data.items.add(new File([bytes], name, {type}));
  const box = document.querySelector('#composer textarea[name=content]');
  if (kind === 'paste') {
    box.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data, bubbles: true,
                                                   cancelable: true}));
  } else {
    const form = document.getElementById('composer');
    form.dispatchEvent(new DragEvent('dragover', {dataTransfer: data, bubbles: true,
                                                 cancelable: true}));
    form.dispatchEvent(new DragEvent('drop', {dataTransfer: data, bubbles: true,
                                             cancelable: true}));
  }
}"""

CHIPS_JS = """() => Array.from(document.querySelectorAll('#composer-attachments li')).map(li => ({
  name: li.querySelector('.chip-name').textContent,
  size: li.querySelector('.chip-size').textContent,
  state: li.getAttribute('data-state'), id: li.getAttribute('data-upload-id'),
  thumb: !!li.querySelector('img') && li.querySelector('img').naturalWidth > 0}))"""


def put(page, kind: str, name: str, kind_type: str, data: bytes) -> None:
    page.evaluate(PUT_FILE_JS, [kind, name, kind_type, base64.b64encode(data).decode()])


def ready_chips(page, count: int) -> list[dict]:
    def ready():
        chips = page.evaluate(CHIPS_JS)
        return chips if len(chips) == count and all(c["state"] == "ready" for c in chips) \
            else None
    return wait_until(ready, what=f"{count} uploaded chips")


def test_paste_an_image_drop_a_pdf_see_chips_and_budget_send_and_see_the_thumbnail(context,
                                                                                   page):
    thread = new_thread(page)
    follower = context.new_page()  # another tab on the thread, following it live
    follower.goto(thread)
    wait_live(follower, "the follower's websocket")
    put(page, "paste", "photo.png", "image/png", png(120, 90, color=(20, 160, 90)))
    put(page, "drop", "minutes.pdf", "application/pdf", pdf("The budget was approved"))
    chips = ready_chips(page, 2)
    assert [c["name"] for c in chips] == ["photo.png", "minutes.pdf"]
    # The chip's picture, from /uploads/<id> (same origin: the page's policy allows it).
    wait_until(lambda: page.evaluate(CHIPS_JS)[0]["thumb"], what="the chip's picture")
    assert all(c["size"].endswith("KB") for c in chips)
    budget = page.locator("#composer-budget")
    assert budget.is_visible()
    assert norm(budget.inner_text()).startswith("Uses ~") and "of 128,000 tokens" in \
        norm(budget.inner_text())
    assert page.locator("#composer-note").is_hidden()

    box = page.locator("#composer textarea[name=content]")
    box.fill("What do these show?")
    box.press("Enter")
    wait_until(lambda: page.locator('article.message[data-role="assistant"]').count() == 1,
               what="the reply to appear")
    reply_id = page.locator('article.message[data-role="assistant"]').get_attribute("id")
    # It streams: text arrives while the reply is still being written.
    wait_until(lambda: page.locator(f"#{reply_id}").get_attribute("data-status") == "streaming"
               and page.locator(f"#{reply_id} .message-body").inner_text().strip(),
               what="the reply to stream")
    wait_for_reply(page, reply_id, ("complete",))
    assert "You attached: photo.png (image, 120×90), minutes.pdf (PDF, 23 characters)." in \
        norm(page.locator(f"#{reply_id} .message-body").inner_text())
    # The prompt shows the image as a thumbnail that opens the full-size file.
    prompt = page.locator('article.message[data-role="user"]').last
    thumb = prompt.locator(".message-attachments img")
    wait_until(lambda: thumb.evaluate("img => img.complete && img.naturalWidth") == 120,
               what="the thumbnail to load")
    href = prompt.locator(".attachment-thumb").get_attribute("href")
    assert href == f"/uploads/{chips[0]['id']}"
    assert api_get(page, href).headers["content-type"] == "image/png"
    assert prompt.locator(".attachment-file").inner_text() == "minutes.pdf"
    # The follower's copy of the prompt (from the websocket) shows the files too.
    wait_until(lambda: follower.locator('article.message[data-role="user"] '
                                        '.message-attachments img').count() == 1,
               what="the follower to show the thumbnail")
    assert follower.locator(".attachment-file").inner_text() == "minutes.pdf"
    # The composer is empty again.
    assert page.evaluate(CHIPS_JS) == [] and page.locator("#composer-budget").is_hidden()


def test_a_model_that_cannot_read_images_is_named_before_sending(page):
    new_thread(page)
    page.select_option("#composer select[name=model]", label="Blind")
    put(page, "paste", "photo.png", "image/png", png(10, 10))
    ready_chips(page, 1)
    note = page.locator("#composer-note")
    wait_until(note.is_visible, what="the note")
    assert "cannot read images" in note.inner_text()
    box = page.locator("#composer textarea[name=content]")
    box.fill("look at this")
    box.press("Enter")
    page.wait_for_timeout(300)
    assert page.locator("article.message").count() == 0  # nothing was sent
    # Removing the image lifts the note; a text file too large for the model's context is
    # named with the budget.
    page.locator('#composer-attachments [data-action="remove-attachment"]').click()
    wait_until(note.is_hidden, what="the note to go")
    put(page, "drop", "long.txt", "text/plain", b"word " * 1200)
    ready_chips(page, 1)
    wait_until(lambda: page.locator("#composer-budget").get_attribute("data-state") == "over",
               what="the budget to be over")
    assert "1,000" in note.inner_text()


def test_a_refused_file_is_explained_in_the_composer(page, console):
    console.allow("status of 415")  # the refusal itself, which the page explains
    new_thread(page)
    put(page, "drop", "logo.png", "image/png", b"<svg><script>alert(1)</script></svg>")
    note = page.locator("#composer-note")
    wait_until(note.is_visible, what="the refusal")
    assert "SVG" in note.inner_text()
    assert page.evaluate(CHIPS_JS) == []
