"""Organised threads and keyboard shortcuts in Chromium: folders by drag and drop (and the
menu), pin, archive and unarchive, several threads at once, a temporary chat that goes
when it is left, every shortcut, the `?` dialog, and axe on each new state."""

from __future__ import annotations

import json
import re

import pytest

from .conftest import ACTIVE, api_get, reply_state, send_prompt, wait_for_reply, wait_until
from .test_a11y import axe_violations, blocking
from .test_manage import thread_with_reply

pytestmark = pytest.mark.browser

JSON = {"Accept": "application/json"}


def thread_of(page, thread_id: int) -> dict | None:
    answer = api_get(page, f"/threads/{thread_id}", headers=JSON)
    return answer.json()["thread"] if answer.ok else None


def make_folder(page, name: str) -> None:
    page.locator('summary[data-action="new-folder"]').click()
    page.locator("#new-folder-name").fill(name)
    page.locator("#new-folder-name").press("Enter")
    wait_until(lambda: page.locator(f'details.folder[data-folder="{name}"]').count() == 1,
               what=f"the folder {name}")


def in_folder(page, thread_id: int, name: str) -> bool:
    entry = f'details.folder[data-folder="{name}"] #thread-item-{thread_id}'
    return page.locator(entry).count() == 1


def unfiled(page, thread_id: int) -> bool:
    return page.locator(f".thread-group--unfiled #thread-item-{thread_id}").count() == 1


def open_menu(page, thread_id: int) -> None:
    page.locator(f"#thread-item-{thread_id} summary.thread-menu-toggle").click()


# -- folders ----------------------------------------------------------------------------------
def test_drag_a_thread_into_a_folder_and_out_again(page, model):
    _, first = thread_with_reply(page, model, "Drag me")
    _, second = thread_with_reply(page, model, "Stay here")
    make_folder(page, "Harbour")
    assert page.locator('details.folder[data-folder="Harbour"]').evaluate("d => d.open")

    page.locator(f"#thread-item-{first}").drag_to(
        page.locator('details.folder[data-folder="Harbour"] [data-drop-folder]'))
    wait_until(lambda: in_folder(page, first, "Harbour"), what="the thread in the folder")
    assert thread_of(page, first)["folder"] == "Harbour"
    assert unfiled(page, second)
    # The open thread stays marked wherever its entry moved.
    assert page.locator(f"#thread-link-{second}").get_attribute("aria-current") == "page"

    page.locator(f"#thread-item-{first}").drag_to(page.locator("#recent-list"))
    wait_until(lambda: unfiled(page, first), what="the thread out of the folder")
    assert thread_of(page, first)["folder"] is None

    # Collapsed, the folder stays collapsed after a reload.
    page.locator('details.folder[data-folder="Harbour"] > summary').click()
    page.reload()
    assert not page.locator('details.folder[data-folder="Harbour"]').evaluate("d => d.open")


def test_move_to_folder_from_the_menu_with_the_keyboard(page, model):
    _, thread_id = thread_with_reply(page, model, "File me by keys")
    make_folder(page, "Letters")
    open_menu(page, thread_id)
    page.locator(f"#move-{thread_id}").select_option("Letters")
    page.locator(f"#move-{thread_id}").focus()
    page.keyboard.press("Tab")  # to the Move button
    page.keyboard.press("Enter")
    wait_until(lambda: in_folder(page, thread_id, "Letters"), what="the thread in the folder")
    # Renaming the folder takes its threads along.
    page.locator('details.folder[data-folder="Letters"] .folder-menu > summary').click()
    box = page.locator('details.folder[data-folder="Letters"] input[name=name]')
    box.fill("Post")
    box.press("Enter")
    wait_until(lambda: in_folder(page, thread_id, "Post"), what="the renamed folder")
    assert thread_of(page, thread_id)["folder"] == "Post"


# -- pin and archive ----------------------------------------------------------------------------
def test_pin_puts_a_thread_first_and_unpin_puts_it_back(page, model):
    _, older = thread_with_reply(page, model, "Pin me")
    _, newer = thread_with_reply(page, model, "Newer")

    def order():
        return page.locator("#thread-list .thread-item").evaluate_all(
            "items => items.map(i => Number(i.dataset.threadId))")
    assert order() == [newer, older]
    open_menu(page, older)
    page.locator(f'#thread-item-{older} button[data-action="pin-thread"]').click()
    wait_until(lambda: page.locator(f"#pinned-list #thread-item-{older}").count() == 1,
               what="the pinned entry")
    assert order() == [older, newer]
    assert thread_of(page, older)["pinned"] is True
    open_menu(page, older)
    page.locator(f'#thread-item-{older} button[data-action="unpin-thread"]').click()
    wait_until(lambda: page.locator(f"#recent-list #thread-item-{older}").count() == 1,
               what="the unpinned entry")
    assert order() == [newer, older]


def test_archive_and_unarchive_from_the_thread_page(page, model):
    path, thread_id = thread_with_reply(page, model, "Archive me")
    page.locator('button[data-action="archive"]').click()
    page.locator("#archived-banner").wait_for()
    assert page.locator(f"#thread-item-{thread_id}").count() == 0
    assert thread_of(page, thread_id)["archived"] is True
    # Still found by search, marked archived.
    page.locator("#search-q").click()
    page.locator("#search-q").press_sequentially("Archive", delay=30)
    wait_until(lambda: page.locator(f'#search-results a[data-thread-id="{thread_id}"]').count(),
               what="the search hit")
    assert "Archived" in page.locator("#search-results").text_content()
    # The Archived view lists it; one click brings it back.
    page.locator('a[data-action="archived"]').click()
    page.wait_for_url(re.compile(r"/threads/archived$"))
    page.locator(f"#archived-{thread_id} button[data-action=unarchive]").click()
    wait_until(lambda: page.locator(f"#archived-{thread_id}").count() == 0,
               what="the row to go")
    assert thread_of(page, thread_id)["archived"] is False
    page.goto(path)
    assert page.locator("#archived-banner").count() == 0
    assert page.locator(f"#thread-item-{thread_id}").count() == 1
    # And from the banner on the thread's own page.
    page.locator('button[data-action="archive"]').click()
    page.locator("#archived-banner").wait_for()
    page.locator('#archived-banner button[data-action="unarchive"]').click()
    wait_until(lambda: page.locator(f"#thread-item-{thread_id}").count() == 1,
               what="the entry back in the sidebar")
    assert page.locator("#archived-banner").count() == 0


def test_select_several_threads_then_archive_them(page, model):
    _, a = thread_with_reply(page, model, "First of many")
    _, b = thread_with_reply(page, model, "Second of many")
    _, c = thread_with_reply(page, model, "Not chosen")
    assert not page.locator(f"#thread-item-{a} input.thread-select").is_visible()
    page.locator('button[data-action="select-mode"]').click()
    assert page.locator('button[data-action="select-mode"]').get_attribute("aria-pressed") == \
        "true"
    assert page.locator('button[data-action="bulk-archive"]').is_disabled()
    page.locator(f"#thread-item-{a} input.thread-select").check()
    page.locator(f"#thread-item-{b} input.thread-select").check()
    assert page.locator("#bulk-count").text_content() == "2 selected"
    page.locator('button[data-action="bulk-archive"]').click()
    wait_until(lambda: page.locator(f"#thread-item-{a}, #thread-item-{b}").count() == 0,
               what="the archived entries to go")
    assert page.locator(f"#thread-item-{c}").count() == 1
    assert page.locator("#bulk-form").is_hidden()
    assert thread_of(page, a)["archived"] and thread_of(page, b)["archived"]
    assert not thread_of(page, c)["archived"]


def test_select_several_then_delete_asks_first(page, model):
    _, a = thread_with_reply(page, model, "Delete me")
    _, b = thread_with_reply(page, model, "Keep me")
    answers = []

    def on_dialog(dialog):
        answers.append(dialog.message)
        (dialog.dismiss if len(answers) == 1 else dialog.accept)()
    page.on("dialog", on_dialog)
    page.locator('button[data-action="select-mode"]').click()
    page.locator(f"#thread-item-{a} input.thread-select").check()
    page.locator('button[data-action="bulk-delete"]').click()
    wait_until(lambda: answers, what="the confirmation", page=page)
    assert "Delete 1 thread" in answers[0]
    assert thread_of(page, a) is not None
    page.locator('button[data-action="bulk-delete"]').click()
    wait_until(lambda: thread_of(page, a) is None, what="the thread to be deleted")
    assert thread_of(page, b) is not None


# -- temporary chats ----------------------------------------------------------------------------
def test_a_temporary_chat_is_marked_unlisted_and_gone_once_left(page, model):
    _, kept = thread_with_reply(page, model, "A kept thread")
    page.locator('a[data-action="new-temporary"]').click()
    page.wait_for_url(re.compile(r"/\?temporary=1$"))
    assert page.locator('input[data-action="temporary"]').is_checked()
    box = page.locator("form#composer textarea[name=content]")
    box.fill(model.script("Nothing to keep.", ask="Off the record"))
    box.press("Enter")
    page.wait_for_url(re.compile(r"/threads/\d+$"))
    temporary = int(page.url.rsplit("/", 1)[1])
    reply = page.locator('article.message[data-role="assistant"]').get_attribute("id")
    wait_for_reply(page, reply, ("complete",))
    assert "Temporary chat" in page.locator("#temporary-banner").text_content()
    assert page.locator(f"#thread-item-{temporary}").count() == 0
    assert page.locator(f"#thread-item-{kept}").count() == 1
    page.reload()  # a reload is not leaving
    assert thread_of(page, temporary)["temporary"] is True
    page.locator('a[data-action="new-thread"]').click()
    page.wait_for_url(re.compile(r"/$"))
    assert thread_of(page, temporary) is None
    assert not page.locator('input[data-action="temporary"]').is_checked()


# -- shortcuts ----------------------------------------------------------------------------------
def focused(page) -> str:
    return page.evaluate("document.activeElement ? (document.activeElement.id || "
                         "document.activeElement.getAttribute('data-action') || "
                         "document.activeElement.tagName) : ''")


def test_every_shortcut_with_ctrl(new_context, model):
    context = new_context()
    context.grant_permissions(["clipboard-read", "clipboard-write"])
    page = context.new_page()
    path, _ = thread_with_reply(page, model, "Copy this reply")
    page.locator("h1#thread-title").click()

    page.keyboard.press("Shift+Escape")
    assert focused(page) == "composer-content"

    page.locator("h1#thread-title").click()
    page.keyboard.press("Control+Shift+C")
    wait_until(lambda: page.evaluate("navigator.clipboard.readText()") == "A short reply.",
               what="the reply on the clipboard")

    page.keyboard.press("Control+k")
    assert focused(page) == "search-q"

    page.locator("h1#thread-title").click()
    page.keyboard.press("Control+Shift+S")
    wait_until(lambda: not page.locator("#sidebar").is_visible(), what="the sidebar hidden")
    page.keyboard.press("Control+Shift+S")
    wait_until(lambda: page.locator("#sidebar").is_visible(), what="the sidebar back")

    # Stop: a long reply stops where it is.
    streaming = send_prompt(page, model.script(" ".join(["word"] * 400), token_delay_s=0.05))
    wait_until(lambda: (s := reply_state(page, streaming)) and s["status"] in ACTIVE
               and len(s["text"].split()) >= 3, what="the reply streaming")
    page.keyboard.press("Control+Shift+Period")
    wait_for_reply(page, streaming, ("aborted",))

    page.keyboard.press("Control+Shift+O")
    page.wait_for_url(re.compile(r"/$"))
    assert page.locator("section.welcome").count() == 1
    assert path


def test_shortcuts_are_command_keys_on_macos(new_context, model):
    context = new_context()
    context.add_init_script("""
      Object.defineProperty(navigator, 'platform', {get: () => 'MacIntel'});
      Object.defineProperty(navigator, 'userAgentData', {get: () => ({platform: 'macOS'})});
    """)
    page = context.new_page()
    thread_with_reply(page, model, "On a Mac")
    page.locator("h1#thread-title").click()
    page.keyboard.press("Control+k")  # not the Mac's binding: nothing happens
    assert focused(page) != "search-q"
    page.keyboard.press("Meta+k")
    assert focused(page) == "search-q"
    page.locator("h1#thread-title").click()
    page.keyboard.press("?")
    page.locator("#shortcuts-dialog[open]").wait_for()
    glyphs = page.locator("#shortcuts-dialog kbd[data-mod]").all_text_contents()
    assert glyphs and set(glyphs) == {"⌘"}


def test_question_mark_opens_an_accessible_list_of_the_shortcuts(page, model):
    thread_with_reply(page, model, "Shortcut help")
    box = page.locator("form#composer textarea[name=content]")
    box.focus()
    page.keyboard.type("why?")  # typing a question mark is typing
    assert box.input_value() == "why?"
    assert page.locator("#shortcuts-dialog[open]").count() == 0

    page.locator("h1#thread-title").click()
    page.locator('button[data-action="theme"]').focus()
    page.keyboard.press("?")
    dialog = page.locator("#shortcuts-dialog")
    wait_until(lambda: dialog.evaluate("d => d.open"), what="the dialog")
    assert page.evaluate("document.getElementById('shortcuts-dialog').contains("
                         "document.activeElement)")
    rows = dialog.locator("tr[data-shortcut]").evaluate_all(
        "rows => rows.map(r => r.dataset.shortcut)")
    assert rows == ["new-chat", "focus-composer", "stop", "copy-last", "search", "sidebar",
                    "help"]
    assert set(dialog.locator("kbd[data-mod]").all_text_contents()) == {"Ctrl"}
    # Focus goes round inside the dialog.
    for _ in range(5):
        page.keyboard.press("Tab")
        assert page.evaluate("document.getElementById('shortcuts-dialog').contains("
                             "document.activeElement)")
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.getElementById('shortcuts-dialog').contains("
                         "document.activeElement)")
    # Escape closes it and gives focus back.
    page.keyboard.press("Escape")
    wait_until(lambda: not dialog.evaluate("d => d.open"), what="the dialog to close")
    assert focused(page) == "theme"
    # Ctrl+/ opens it too; the single-key ? can be switched off there.
    page.keyboard.press("Control+/")
    wait_until(lambda: dialog.evaluate("d => d.open"), what="the dialog again")
    dialog.locator('input[data-action="single-key-shortcuts"]').uncheck()
    dialog.locator('button[data-action="close-shortcuts"]').click()
    wait_until(lambda: not dialog.evaluate("d => d.open"), what="the dialog to close")
    page.locator("h1#thread-title").click()
    page.keyboard.press("?")
    assert not dialog.evaluate("d => d.open")
    # The sidebar's button opens it as well.
    page.locator('button[data-action="shortcuts"]').click()
    wait_until(lambda: dialog.evaluate("d => d.open"), what="the dialog from its button")


# -- accessibility of the new states --------------------------------------------------------------
@pytest.mark.parametrize("theme", ("light", "dark"))
def test_axe_finds_nothing_serious_in_the_organised_states(new_context, model, artifacts_dir,
                                                           theme):
    page = new_context(color_scheme=theme, viewport={"width": 1366, "height": 900}).new_page()
    found: dict[str, list] = {}
    _, filed = thread_with_reply(page, model, "Filed thread")
    path, pinned = thread_with_reply(page, model, "Pinned thread")
    make_folder(page, "Projects")
    token = page.locator('meta[name="csrf-token"]').get_attribute("content")
    for thread_id, fields in ((filed, {"folder": "Projects"}), (pinned, {"pinned": True})):
        assert page.request.post(f"/threads/{thread_id}/organise", data=json.dumps(fields),
                                 headers={"X-CSRF-Token": token, **JSON,
                                          "Content-Type": "application/json"}).ok
    page.goto(path)
    open_menu(page, pinned)
    found["folders-pinned-menu"] = axe_violations(page)
    page.keyboard.press("Escape")
    page.locator('button[data-action="select-mode"]').click()
    page.locator(f"#thread-item-{pinned} input.thread-select").check()
    found["select-mode"] = axe_violations(page)
    page.locator('button[data-action="select-done"]').click()
    page.keyboard.press("?")
    page.locator("#shortcuts-dialog[open]").wait_for()
    found["shortcuts-dialog"] = axe_violations(page)
    page.keyboard.press("Escape")
    page.locator('button[data-action="archive"]').click()
    page.locator("#archived-banner").wait_for()
    found["archived-thread"] = axe_violations(page)
    page.goto("/threads/archived")
    found["archived-view"] = axe_violations(page)
    page.goto("/?temporary=1")
    found["home-temporary"] = axe_violations(page)
    box = page.locator("form#composer textarea[name=content]")
    box.fill(model.script("Temporary.", ask="Temporary axe"))
    box.press("Enter")
    page.locator("#temporary-banner").wait_for()
    found["temporary-chat"] = axe_violations(page)

    (artifacts_dir / f"axe-organise-{theme}.json").write_text(
        json.dumps(found, indent=2), encoding="utf-8")
    problems = {state: blocking(v) for state, v in found.items() if blocking(v)}
    assert not problems, json.dumps(problems, indent=2)
