"""Threads to manage in Chromium: rename from the header and the sidebar (another tab sees
it), delete with a confirmation, search from the sidebar, a sidebar of 60+ threads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from .conftest import api_get, norm, send_prompt, wait_for_reply, wait_live, wait_until

pytestmark = pytest.mark.browser


def thread_with_reply(page, model, ask: str) -> tuple[str, int]:
    """A thread with one finished turn, open in `page`: its path and id."""
    page.goto("/")
    box = page.locator("form#composer textarea[name=content]")
    box.fill(model.script("A short reply.", ask=ask))
    box.press("Enter")
    page.wait_for_url(re.compile(r"/threads/\d+$"))
    reply = page.locator('article.message[data-role="assistant"]').get_attribute("id")
    wait_for_reply(page, reply, ("complete",))
    path = "/threads/" + page.url.rsplit("/threads/", 1)[1]
    return path, int(path.rsplit("/", 1)[1])


def heading(page) -> str:
    return page.locator("h1#thread-title").text_content()


def entry_title(page, thread_id: int) -> str | None:
    link = page.locator(f"#thread-link-{thread_id}")
    if not link.count():
        return None
    return norm(link.evaluate("a => a.firstChild.textContent"))


def test_rename_from_the_header_reaches_another_tab(context, model):
    page = context.new_page()
    path, thread_id = thread_with_reply(page, model, "Name me")
    other = context.new_page()
    other.goto(path)
    wait_live(other, "the second tab's websocket")

    page.locator('summary[data-action="rename"]').click()
    box = page.locator("#rename-title")
    wait_until(lambda: page.evaluate("document.activeElement.id") == "rename-title",
               what="the title field to take focus")
    box.fill("  Lighthouse plans  ")
    box.press("Enter")
    wait_until(lambda: heading(page) == "Lighthouse plans", what="the new heading")
    assert not page.locator("details.thread-rename").evaluate("d => d.open")
    wait_until(lambda: entry_title(page, thread_id) == "Lighthouse plans",
               what="the sidebar entry")
    assert page.locator(f"#thread-link-{thread_id}").get_attribute("class") == \
        "thread-link is-current"
    wait_until(lambda: page.title() == "Lighthouse plans · Relay", what="the document title")
    # The other tab follows: heading, sidebar entry, document title.
    wait_until(lambda: heading(other) == "Lighthouse plans", what="the other tab's heading")
    wait_until(lambda: entry_title(other, thread_id) == "Lighthouse plans",
               what="the other tab's sidebar entry")
    assert other.locator("#thread-list .thread-item").count() == 1


def test_an_empty_title_is_refused_and_shown(context, model, console):
    console.allow(r"400|htmx:responseError")
    page = context.new_page()
    _, thread_id = thread_with_reply(page, model, "Keep my name")
    before = heading(page)
    page.locator('summary[data-action="rename"]').click()
    page.locator("#rename-title").evaluate("input => { input.required = false; }")
    page.locator("#rename-title").fill("   ")
    page.locator("#rename-title").press("Enter")
    wait_until(lambda: page.locator("#flash").count() == 1, what="the error message")
    assert "cannot be empty" in page.locator("#flash").text_content()
    assert heading(page) == before


def test_rename_from_the_sidebar(context, model):
    page = context.new_page()
    _, first = thread_with_reply(page, model, "First thread")
    _, second = thread_with_reply(page, model, "Second thread")
    # On the second thread's page, rename the first from its sidebar menu.
    page.locator(f"#thread-item-{first} summary").click()
    box = page.locator(f"#rename-{first}")
    box.fill("Renamed from the sidebar")
    box.press("Enter")
    wait_until(lambda: entry_title(page, first) == "Renamed from the sidebar",
               what="the renamed entry")
    assert heading(page).startswith("Second thread")
    assert page.locator(f"#thread-link-{second}").get_attribute("class") == \
        "thread-link is-current"
    page.goto(f"/threads/{first}")
    assert heading(page) == "Renamed from the sidebar"


def test_delete_asks_first_then_the_thread_is_gone_everywhere(context, model):
    page = context.new_page()
    _, keep = thread_with_reply(page, model, "Keep this one")
    path, doomed = thread_with_reply(page, model, "Delete this one")
    follower = context.new_page()
    follower.goto(path)
    wait_live(follower, "the follower's websocket")
    answers = []

    def on_dialog(dialog):
        answers.append(dialog.message)
        (dialog.dismiss if len(answers) == 1 else dialog.accept)()
    page.on("dialog", on_dialog)

    page.locator('button[data-action="delete"]').click()  # dismissed: nothing happens
    wait_until(lambda: answers, what="the confirmation", page=page)
    assert "cannot be undone" in answers[0]
    page.wait_for_timeout(300)
    assert page.url.endswith(path)
    page.locator('button[data-action="delete"]').click()  # accepted
    page.wait_for_url(re.compile(r"/$"))
    assert page.locator(f"#thread-item-{doomed}").count() == 0
    assert page.locator(f"#thread-item-{keep}").count() == 1
    assert api_get(page, path).status == 404
    # The tab that followed it is told.
    wait_until(lambda: follower.locator("section.thread--deleted").count() == 1,
               what="the follower to learn of the deletion")
    assert "deleted" in follower.locator(".thread-gone").text_content()
    assert follower.locator(f"#thread-item-{doomed}").count() == 0
    assert follower.locator("form#composer").count() == 0


def test_delete_from_the_sidebar_of_another_thread(context, model):
    page = context.new_page()
    _, doomed = thread_with_reply(page, model, "Sidebar delete")
    path, here = thread_with_reply(page, model, "Stay here")
    page.on("dialog", lambda dialog: dialog.accept())
    page.locator(f"#thread-item-{doomed} summary").click()
    page.locator(f'#thread-item-{doomed} button[data-action="delete-thread"]').click()
    wait_until(lambda: page.locator(f"#thread-item-{doomed}").count() == 0,
               what="the entry to go")
    assert page.url.endswith(path)
    assert api_get(page, f"/threads/{doomed}").status == 404


def test_search_from_the_sidebar_marks_matches_and_opens_the_thread(context, model):
    page = context.new_page()
    _, wanted = thread_with_reply(page, model, "Tell me about puffins and <b>terns</b>")
    thread_with_reply(page, model, "Something else entirely")
    box = page.locator("#search-q")
    box.click()
    box.press_sequentially("puff", delay=30)
    wait_until(lambda: page.locator("#search-results .search-hit").count() >= 2,
               what="search results")
    marks = page.locator("#search-results mark").all_text_contents()
    assert marks and all(m.lower() == "puffins" for m in marks)
    assert page.locator("#search-results b").count() == 0  # text, never markup
    hit = page.locator(f'#search-results a.search-hit[data-thread-id="{wanted}"]'
                       '[data-message-id]').first
    assert "<b>terns</b>" in hit.text_content()
    hit.click()
    page.wait_for_url(re.compile(rf"/threads/{wanted}(#message-\d+)?$"))
    assert heading(page).startswith("Tell me about puffins")
    # Clearing the box hides the results.
    page.locator("#search-q").fill("")
    page.locator("#search-q").press("Backspace")
    wait_until(lambda: page.locator("#search-results").is_hidden(), what="results hidden")


def test_the_sidebar_pages_through_sixty_five_threads_by_scrolling(context, model):
    page = context.new_page()
    page.goto("/")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    made = []
    for i in range(65):  # imported: finished turns, nothing left generating
        export = {"format": "relay.thread", "version": 1,
                  "thread": {"title": f"Paged thread {i:02d}"},
                  "messages": [{"id": 1, "role": "user", "content": f"Question {i}",
                                "created_at": "2024-05-01T10:00:00Z"},
                               {"id": 2, "role": "assistant", "content": f"Answer {i}",
                                "created_at": "2024-05-01T10:00:01Z"}]}
        answer = page.request.post("/threads/import", data=export,
                                   headers={"X-CSRF-Token": token, "Accept": "application/json"})
        assert answer.status == 201, answer.text()
        made.append(answer.json()["thread"]["id"])
    oldest = made[0]
    page.goto(f"/threads/{oldest}")  # on the last page of the sidebar
    items = page.locator("#thread-list .thread-item")
    assert items.count() == 50
    assert page.locator(f"#thread-item-{oldest}").count() == 0

    def scrolled_all():
        page.locator("#thread-list .thread-item").last.scroll_into_view_if_needed()
        return items.count() == 65
    wait_until(scrolled_all, what="every thread to be listed")
    ids = [int(i) for i in items.evaluate_all(
        "els => els.map(e => e.getAttribute('data-thread-id'))")]
    assert ids == made[::-1]
    assert page.locator(f"#thread-link-{oldest}").get_attribute("class") == \
        "thread-link is-current"
    assert page.locator(".thread-list-more").count() == 0
    assert page.locator(".thread-list-empty").is_hidden()


def test_export_links_download_the_thread(context, model):
    page = context.new_page()
    path, _ = thread_with_reply(page, model, "Export me")
    with page.expect_download() as download:
        page.locator('a[data-action="export-md"]').click()
    assert download.value.suggested_filename.endswith(".md")
    text = Path(download.value.path()).read_text(encoding="utf-8")
    assert text.startswith("# Export me") and "A short reply." in text


def test_import_from_the_sidebar_opens_the_imported_thread(context, model, tmp_path):
    page = context.new_page()
    path, _ = thread_with_reply(page, model, "Carry me over")
    exported = api_get(page, path + "/export?format=json").body()
    file = tmp_path / "thread.json"
    file.write_bytes(exported)
    other = context.browser.new_context(base_url=page.url.split("/threads/")[0])
    try:
        fresh = other.new_page()
        fresh.goto("/")
        fresh.locator("#import-file").set_input_files(str(file))
        fresh.wait_for_url(re.compile(r"/threads/\d+$"))
        assert heading(fresh).startswith("Carry me over")
        assert norm(fresh.locator('article.message[data-role="assistant"] .message-body')
                    .text_content()) == "A short reply."
    finally:
        other.close()


def test_send_still_works_after_rename(context, model):
    page = context.new_page()
    _, thread_id = thread_with_reply(page, model, "Before rename")
    page.locator('summary[data-action="rename"]').click()
    page.locator("#rename-title").fill("Chosen name")
    page.locator("#rename-title").press("Enter")
    wait_until(lambda: heading(page) == "Chosen name", what="the new heading")
    reply = send_prompt(page, model.script("Second reply.", ask="After rename"))
    wait_for_reply(page, reply, ("complete",))
    assert heading(page) == "Chosen name"
    assert entry_title(page, thread_id) == "Chosen name"
