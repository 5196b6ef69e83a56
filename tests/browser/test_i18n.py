"""The interface in another language: Arabic mirrors the layout (right to left) while code
stays left to right; the switcher works with and without JavaScript."""

from __future__ import annotations

import pytest

from .conftest import new_thread, send_prompt, wait_for_reply, wait_until

pytestmark = pytest.mark.browser

VIEWPORTS = {"desktop": {"width": 1280, "height": 800}, "phone": {"width": 390, "height": 844}}
CODE_REPLY = ("Here is the code you asked for:\n\n```python\nprint('hello')\n```\n\n"
              "It prints a greeting.")


def box(page, selector: str) -> dict:
    found = page.locator(selector).first.bounding_box()
    assert found is not None, f"{selector} is not on screen"
    return found


def choose_language(page, code: str) -> None:
    """Pick `code` in the sidebar's switcher, as a reader does (the page reloads in it)."""
    with page.expect_navigation():
        page.locator("select[data-action=language]").select_option(code)
    wait_until(lambda: page.locator("html").get_attribute("lang") == code,
               what=f"the page in {code}")


def test_arabic_mirrors_the_layout_and_keeps_code_left_to_right(new_context, model,
                                                                 artifacts_dir):
    context = new_context(viewport=VIEWPORTS["desktop"])
    page = context.new_page()
    page.goto("/")
    assert page.locator("html").get_attribute("dir") == "ltr"
    choose_language(page, "ar")
    assert page.locator("html").get_attribute("dir") == "rtl"

    new_thread(page)
    prompt = model.script(CODE_REPLY, ask="Show me some code")
    reply = send_prompt(page, prompt)
    wait_for_reply(page, reply, ("complete",))
    page.locator(f"#{reply} .code-block pre").wait_for()
    page.screenshot(path=str(artifacts_dir / "rtl-arabic-thread-desktop.png"), full_page=True)

    # The sidebar is on the right, the conversation on its left.
    width = VIEWPORTS["desktop"]["width"]
    sidebar, main = box(page, "#sidebar"), box(page, "#main")
    assert sidebar["x"] > width / 2 and sidebar["x"] + sidebar["width"] >= width - 2
    assert main["x"] + main["width"] <= sidebar["x"] + 1
    # The composer reads right to left: the box first (on the right), Send after it.
    textarea = box(page, "form#composer textarea")
    send = box(page, "form#composer [data-action=send]")
    assert send["x"] + send["width"] <= textarea["x"] + 1
    assert page.locator("form#composer [data-action=send]").inner_text() == "إرسال"
    # The reader's own prompt sits at the far (left) side, the reply spans the column.
    prompt_box = box(page, 'article.message[data-role="user"]')
    reply_box = box(page, f"#{reply}")
    assert prompt_box["x"] <= reply_box["x"] + 1
    assert prompt_box["x"] + prompt_box["width"] < reply_box["x"] + reply_box["width"] - 20
    # Code stays left to right, starting at its left edge.
    pre = page.locator(f"#{reply} .code-block pre")
    assert pre.evaluate("el => getComputedStyle(el).direction") == "ltr"
    assert page.locator(f"#{reply} .code-block").evaluate(
        "el => getComputedStyle(el).direction") == "ltr"
    code_text = page.locator(f"#{reply} .code-block pre code").first
    text_box, pre_box = code_text.bounding_box(), pre.bounding_box()
    assert text_box["x"] - pre_box["x"] < 40
    # The page scripts speak Arabic too: the code's copy button, the reply's status.
    assert page.locator(f"#{reply} [data-action=copy-code]").inner_text() == "نسخ"
    assert page.locator(f"#{reply} .message-status").inner_text() == "اكتمل"


def test_on_a_phone_the_arabic_drawer_opens_from_the_right(new_context, artifacts_dir):
    context = new_context(viewport=VIEWPORTS["phone"], has_touch=True, locale="ar",
                          extra_http_headers={"Accept-Language": "ar"})
    page = context.new_page()
    page.goto("/")
    assert page.locator("html").get_attribute("dir") == "rtl"
    page.screenshot(path=str(artifacts_dir / "rtl-arabic-home-phone.png"), full_page=True)
    page.locator("[data-action=menu]").click()
    wait_until(lambda: page.locator("#sidebar").evaluate(
        "el => getComputedStyle(el).transform") in ("none", "matrix(1, 0, 0, 1, 0, 0)"),
        what="the drawer to open")
    sidebar = box(page, "#sidebar")
    assert abs(sidebar["x"] + sidebar["width"] - VIEWPORTS["phone"]["width"]) <= 2
    page.screenshot(path=str(artifacts_dir / "rtl-arabic-drawer-phone.png"))
    assert page.evaluate("document.documentElement.scrollWidth - window.innerWidth") == 0


def test_the_switcher_works_without_javascript(new_context):
    context = new_context(java_script_enabled=False)
    page = context.new_page()
    page.goto("/")
    page.locator("select[name=lang]").select_option("fr")
    with page.expect_navigation():
        page.locator(".language-form button[type=submit]").click()
    assert page.locator("html").get_attribute("lang") == "fr"
    assert page.locator("[data-action=new-thread]").inner_text() == "Nouveau fil"
    page.goto("/usage")  # remembered on the next page
    assert page.locator("html").get_attribute("lang") == "fr"


def test_english_stays_the_default_and_its_labels_are_unchanged(page):
    page.goto("/")
    assert page.locator("html").get_attribute("lang") == "en"
    assert page.locator("html").get_attribute("dir") == "ltr"
    assert page.locator(".language-form button[type=submit]").is_hidden()
    assert page.locator("form#composer [data-action=send]").inner_text() == "Send"


def test_axe_finds_no_serious_or_critical_violation_in_arabic(new_context, model, console,
                                                               artifacts_dir):
    import json

    from .test_a11y import audit_every_state, blocking

    console.allow(r"status of 404")  # the not-found page is one of the states audited
    page = new_context(locale="ar", extra_http_headers={"Accept-Language": "ar"}).new_page()
    found = audit_every_state(page, model)
    assert page.locator("html").get_attribute("dir") == "rtl"
    (artifacts_dir / "axe-arabic.json").write_text(json.dumps(found, indent=2), encoding="utf-8")
    problems = {state: blocking(v) for state, v in found.items() if blocking(v)}
    assert not problems, json.dumps(problems, indent=2)
