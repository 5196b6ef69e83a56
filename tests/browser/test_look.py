"""How the chat looks and handles: themes, the phone drawer, tables, touch typing, copy
buttons, jump to latest, one status per reply, timestamps. Desktop and phone, light and dark;
screenshots of each state are kept as artifacts."""

from __future__ import annotations

import pytest

from bench.fake_upstream import Reply

from .conftest import ACTIVE, new_thread, reply_state, send_prompt, wait_for_reply, wait_until
from .test_a11y import MARKDOWN, contrast

pytestmark = pytest.mark.browser

DEVICES = {
    "desktop": {"viewport": {"width": 1366, "height": 900}},
    "phone": {"viewport": {"width": 390, "height": 844}, "has_touch": True, "is_mobile": True},
}
THEMES = ("light", "dark")
CODE = 'def greet(name: str) -> str:\n    # say hello\n    return f"Hello, {name}!"\n'
WIDE_TABLE = ("| Algorithm | Complexity | Stability | Memory | Typical use |\n"
              "|---|---|---|---|---|\n"
              "| Quicksort | O(n log n) | Unstable | In place | General purpose sorting |\n"
              "| Mergesort | O(n log n) | Stable | Linear extra | Linked lists, external data |\n"
              "| Heapsort | O(n log n) | Unstable | In place | Guaranteed worst case bound |\n")


def open_page(new_context, device="desktop", theme="light", **options):
    return new_context(color_scheme=theme, **DEVICES[device], **options).new_page()


def background(page) -> str:
    return page.evaluate("getComputedStyle(document.body).backgroundColor")


def is_dark(page) -> bool:
    return contrast(background(page), "rgb(0, 0, 0)") < contrast(background(page),
                                                                   "rgb(255, 255, 255)")


def finished_reply(page, model, text: str = MARKDOWN) -> str:
    new_thread(page)
    reply = send_prompt(page, model.script(text))
    wait_for_reply(page, reply, ("complete",))
    return reply


# -- themes ------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("theme", THEMES)
def test_theme_follows_the_system_and_code_stays_readable(new_context, model, artifacts_dir,
                                                         device, theme):
    page = open_page(new_context, device, theme)
    reply = finished_reply(page, model)
    assert is_dark(page) == (theme == "dark")
    assert page.locator("[data-action=theme]").get_attribute("aria-pressed") == \
        str(theme == "dark").lower()
    # Every highlighted token is readable on the code block's background.
    colors = page.evaluate("""(id) => {
      const pre = document.querySelector('#' + id + ' .code-block pre');
      const bg = getComputedStyle(pre).backgroundColor;
      return [...pre.querySelectorAll('span[class]')].filter(s => s.textContent.trim())
        .map(s => [s.className, getComputedStyle(s).color, bg]);
    }""", reply)
    assert len(colors) > 5
    for token, fg, bg in colors:
        assert contrast(fg, bg) >= 4.5, (token, fg, bg)
    page.evaluate("(id) => document.getElementById(id).scrollIntoView()", reply)
    page.screenshot(path=str(artifacts_dir / f"look-finished-{device}-{theme}.png"), full_page=True)


def test_theme_toggle_is_remembered_across_reloads(new_context):
    page = open_page(new_context, theme="light")
    page.goto("/")
    toggle = page.locator("[data-action=theme]")
    assert not is_dark(page) and toggle.get_attribute("aria-pressed") == "false"
    toggle.click()
    assert is_dark(page) and toggle.get_attribute("aria-pressed") == "true"
    page.reload()
    assert page.evaluate("document.documentElement.dataset.theme") == "dark"
    assert is_dark(page) and toggle.get_attribute("aria-pressed") == "true"
    toggle.click()
    page.reload()
    assert not is_dark(page) and toggle.get_attribute("aria-pressed") == "false"


def test_a_picked_light_theme_wins_over_a_dark_system(new_context):
    page = open_page(new_context, theme="dark")
    page.goto("/")
    assert is_dark(page)
    page.locator("[data-action=theme]").click()
    page.reload()
    assert not is_dark(page)


# -- the phone drawer --------------------------------------------------------------------------
@pytest.mark.parametrize("theme", THEMES)
def test_phone_sidebar_is_a_drawer_that_opens_closes_and_moves_focus(new_context, artifacts_dir,
                                                                     theme):
    page = open_page(new_context, "phone", theme)
    new_thread(page)
    sidebar, toggle = page.locator("#sidebar"), page.locator("[data-action=menu]")
    assert toggle.is_visible() and not sidebar.is_visible()
    assert toggle.get_attribute("aria-expanded") == "false"

    toggle.click()
    wait_until(lambda: sidebar.is_visible(), what="the drawer to open")
    assert toggle.get_attribute("aria-expanded") == "true"
    assert page.evaluate("document.getElementById('sidebar').contains(document.activeElement)")
    assert page.evaluate("document.getElementById('main').inert")
    wait_until(lambda: sidebar.bounding_box()["x"] >= 0, what="the drawer to slide in")
    page.screenshot(path=str(artifacts_dir / f"look-drawer-open-phone-{theme}.png"))

    page.keyboard.press("Escape")
    wait_until(lambda: not sidebar.is_visible(), what="Escape to close the drawer")
    assert toggle.get_attribute("aria-expanded") == "false"
    assert page.evaluate("document.activeElement.getAttribute('data-action')") == "menu"
    assert not page.evaluate("document.getElementById('main').inert")

    toggle.click()
    wait_until(lambda: sidebar.is_visible(), what="the drawer to open again")
    page.mouse.click(370, 600)  # the backdrop, right of the drawer
    wait_until(lambda: not sidebar.is_visible(), what="a backdrop click to close the drawer")
    assert toggle.get_attribute("aria-expanded") == "false"


def test_desktop_keeps_the_sidebar_as_a_column(new_context):
    page = open_page(new_context)
    new_thread(page)
    assert page.locator("#sidebar").is_visible()
    assert not page.locator("[data-action=menu]").is_visible()


# -- tables and touch typing -------------------------------------------------------------------
@pytest.mark.parametrize("theme", THEMES)
def test_phone_table_scrolls_sideways_without_splitting_words(new_context, model, artifacts_dir,
                                                              theme):
    page = open_page(new_context, "phone", theme)
    reply = finished_reply(page, model, "Sorting compared:\n\n" + WIDE_TABLE)
    sizes = page.evaluate("""(id) => {
      const box = document.querySelector('#' + id + ' .table-scroll');
      const cells = [...box.querySelectorAll('td, th')].map(cell => {
        const range = document.createRange();
        const longest = Math.max(...cell.textContent.split(/\\s+/).map(word => {
          const text = cell.firstChild;
          const at = cell.textContent.indexOf(word);
          range.setStart(text, at); range.setEnd(text, at + word.length);
          return range.getBoundingClientRect().width;
        }));
        const style = getComputedStyle(cell);
        const inner = cell.clientWidth - parseFloat(style.paddingLeft)
          - parseFloat(style.paddingRight);
        return {text: cell.textContent, inner, longest};
      });
      return {scroll: box.scrollWidth, client: box.clientWidth, cells,
              page: document.documentElement.scrollWidth - innerWidth};
    }""", reply)
    assert sizes["scroll"] > sizes["client"], "the table does not scroll inside its box"
    assert sizes["page"] == 0, "the page itself scrolls sideways"
    for cell in sizes["cells"]:
        assert cell["inner"] + 0.5 >= cell["longest"], f"a word is split in {cell}"
    page.evaluate("(id) => document.querySelector('#' + id + ' table').scrollIntoView()", reply)
    page.screenshot(path=str(artifacts_dir / f"look-table-phone-{theme}.png"))


def test_enter_adds_a_line_on_a_touch_screen_and_send_sends(new_context, model):
    page = open_page(new_context, "phone")
    new_thread(page)
    box = page.locator("form#composer textarea[name=content]")
    box.click()
    box.press_sequentially("first line")
    box.press("Enter")
    box.press_sequentially("second line")
    assert box.input_value() == "first line\nsecond line"
    assert page.locator("article.message").count() == 0, "Enter sent the prompt"
    box.fill(model.script("Sent by the button."))
    page.locator("form#composer button[type=submit]").click()
    wait_until(lambda: page.locator('article.message[data-role="assistant"]').count() == 1,
               what="the tapped Send to send")


def test_enter_still_sends_with_a_mouse_and_keyboard(new_context, model):
    page = open_page(new_context)
    new_thread(page)
    box = page.locator("form#composer textarea[name=content]")
    box.fill(model.script("Sent by Enter."))
    box.press("Enter")
    wait_until(lambda: page.locator('article.message[data-role="assistant"]').count() == 1,
               what="Enter to send")


# -- copy --------------------------------------------------------------------------------------
def clipboard(page) -> str:
    return page.evaluate("navigator.clipboard.readText()")


@pytest.mark.parametrize("device", DEVICES)
def test_copy_buttons_copy_the_reply_markdown_the_prompt_and_the_code(new_context, model,
                                                                      device):
    page = open_page(new_context, device, permissions=["clipboard-read", "clipboard-write"])
    new_thread(page)
    prompt = model.script(MARKDOWN)
    reply = send_prompt(page, prompt)
    wait_for_reply(page, reply, ("complete",))

    head = page.locator(f"#{reply} .code-block:not(.diagram) .code-head")  # not the diagram
    assert head.locator(".code-lang").inner_text() == "python"
    code_button = head.locator("button[data-action=copy-code]")
    code_button.click()
    wait_until(lambda: clipboard(page) == CODE, what="the code in the clipboard")
    wait_until(lambda: page.locator("[role=status]", has_text="Copied").count() == 1,
               what="a polite 'Copied' announcement")

    page.locator(f"#{reply} button[data-action=copy]").click()
    wait_until(lambda: clipboard(page) == MARKDOWN, what="the reply's markdown in the clipboard")

    user = page.locator('article.message[data-role="user"]').last
    user.locator("button[data-action=copy]").click()
    wait_until(lambda: clipboard(page) == prompt, what="the prompt in the clipboard")


def test_a_reply_still_being_written_has_no_copy_button_until_it_ends(new_context, model):
    page = open_page(new_context)
    new_thread(page)
    reply = send_prompt(page, model.script(" ".join(["word"] * 200), token_delay_s=0.02))
    wait_until(lambda: reply_state(page, reply)["status"] == "streaming", what="streaming")
    assert page.locator(f"#{reply} button[data-action=copy]").count() == 0
    wait_for_reply(page, reply, ("complete",))
    assert page.locator(f"#{reply} button[data-action=copy]").count() == 1


# -- jump to latest ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_jump_to_latest_appears_when_scrolled_up_mid_stream_and_follows_again(
        new_context, model, artifacts_dir, device):
    page = open_page(new_context, device)
    new_thread(page)
    lines = "\n\n".join(f"Paragraph {i} of a long reply." for i in range(1, 161))
    reply = send_prompt(page, model.script(lines, token_delay_s=0.02))
    jump = page.locator("button[data-action=jump-latest]")
    wait_until(lambda: page.evaluate("document.documentElement.scrollHeight > innerHeight * 2"),
               what="a reply taller than two screens")
    assert not jump.is_visible(), "shown while the page follows the newest text"

    page.mouse.wheel(0, -5000)
    wait_until(lambda: jump.is_visible(), what="the jump button after scrolling up")
    assert reply_state(page, reply)["status"] in ACTIVE, "the reply ended before the test"
    top = page.evaluate("scrollY")
    page.screenshot(path=str(artifacts_dir / f"look-jump-latest-{device}.png"))
    # Away from the bottom, the page no longer follows the text.
    wait_until(lambda: page.evaluate("document.documentElement.scrollHeight") >
               page.evaluate("scrollY + innerHeight") + 300, what="more text below")
    assert abs(page.evaluate("scrollY") - top) < 5

    jump.click()
    assert not jump.is_visible()

    def newest_text_in_view():
        return page.evaluate("""(id) => {
          const body = document.querySelector('#' + id + ' .message-body');
          const doc = document.documentElement;
          return doc.scrollHeight - scrollY - innerHeight < 120
            && body.getBoundingClientRect().bottom <= innerHeight + 5;
        }""", reply)
    done = wait_for_reply(page, reply, ("complete",), check=lambda s: None)
    assert "Paragraph 160" in done["text"]
    wait_until(newest_text_in_view, what="the page to follow the newest text again")
    assert not jump.is_visible()


# -- one status per reply ----------------------------------------------------------------------
RECORD_STATUS_JS = """() => {
  window.statusLog = [];
  const note = () => {
    const all = document.querySelectorAll('article.message[data-role="assistant"]');
    const article = all[all.length - 1];
    if (!article) return;
    const label = article.querySelector('.message-status');
    const text = label ? label.textContent.trim() : null;
    const last = window.statusLog[window.statusLog.length - 1];
    if (last && last.text === text) return;
    const body = article.querySelector('.message-body');
    const pseudo = (where) => getComputedStyle(body, where).content;
    window.statusLog.push({text, status: article.getAttribute('data-status'),
      labels: article.querySelectorAll('.message-status, .typing').length,
      animations: article.getAnimations({subtree: true}).length,
      decorated: [pseudo('::before'), pseudo('::after')]
        .some(c => c !== 'none' && c !== 'normal')});
  };
  new MutationObserver(note).observe(document.body,
                                     {subtree: true, childList: true, characterData: true});
}"""


def record_statuses(page, model, reduced: bool) -> list[dict]:
    new_thread(page)
    page.evaluate(RECORD_STATUS_JS)
    prompt = model.script("unused")
    # A model that thinks for a while before its first word, then writes for a while.
    model.failures[prompt] = Reply.words(" ".join(["word"] * 60), token_delay_s=0.02,
                                         first_token_delay_s=1.5)
    reply = send_prompt(page, prompt)
    wait_for_reply(page, reply, ("complete",))
    return page.evaluate("window.statusLog")


@pytest.mark.parametrize("theme", THEMES)
def test_a_reply_shows_one_status_connecting_thinking_writing_done(new_context, model, theme):
    page = open_page(new_context, theme=theme)
    log = record_statuses(page, model, reduced=False)
    texts = [entry["text"] for entry in log]
    assert texts[0] == "connecting", texts
    assert texts[-3:] == ["thinking", "writing", "done"], texts
    for entry in log:
        assert entry["labels"] == 1, entry
        assert not entry["decorated"], f"the reply body has its own indicator: {entry}"
        active = entry["status"] in ACTIVE
        assert entry["animations"] == (1 if active else 0), entry
    label = page.locator('article.message[data-role="assistant"] .message-status')
    assert label.inner_text() == "done"  # visible text: it is in the accessibility tree


def test_reduced_motion_stops_the_status_animation(new_context, model):
    page = open_page(new_context, reduced_motion="reduce")
    log = record_statuses(page, model, reduced=True)
    assert [e["text"] for e in log][-3:] == ["thinking", "writing", "done"]
    assert all(entry["animations"] == 0 for entry in log), log


def test_failed_and_stopped_replies_say_so(new_context, model):
    page = open_page(new_context)
    new_thread(page)
    reply = send_prompt(page, model.script("x", failure=Reply(tokens=[], status=500)))
    assert wait_for_reply(page, reply, ("error",))["label"] == "failed"


# -- keyboard and times ------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
def test_skip_link_is_first_and_moves_focus_to_the_conversation(new_context, device):
    page = open_page(new_context, device)
    new_thread(page)
    page.keyboard.press("Tab")
    focused = page.evaluate("[document.activeElement.className,"
                            " document.activeElement.textContent]")
    assert focused == ["skip-link", "Skip to conversation"]
    assert page.locator(".skip-link").is_visible()
    page.keyboard.press("Enter")
    assert page.evaluate("document.activeElement.id") == "main"


def test_message_times_are_relative_exact_on_hover_and_stay_current(new_context, model):
    page = open_page(new_context)
    page.clock.install()
    reply = finished_reply(page, model, "On time.")
    stamp = page.locator(f"#{reply} time.message-time")
    assert stamp.inner_text() == "just now"
    assert stamp.get_attribute("datetime").endswith("Z")
    # The server's title is in UTC; the page shows the reader's own time once it settles.
    wait_until(lambda: "UTC" not in (stamp.get_attribute("title") or "UTC"),
               what="the exact time in the reader's zone")
    page.clock.run_for("05:10")
    wait_until(lambda: stamp.inner_text() == "5 min ago", what="the time to read 5 min ago")
    page.clock.run_for("02:00:00")
    wait_until(lambda: stamp.inner_text() == "2 h ago", what="the time to read 2 h ago")
