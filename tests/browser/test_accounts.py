"""Accounts in a real browser: sign up and in through the pages, the same user in a second
browser follows a reply live, sign out; the pages in dark mode and on a phone."""

from __future__ import annotations

import uuid

import pytest

from .conftest import RELAY_ENV, new_thread, norm, send_prompt, wait_live, wait_until
from .test_streaming import follow

pytestmark = pytest.mark.browser

PASSWORD = "a long enough password"
TEXT = " ".join(f"together{i}" for i in range(60))


@pytest.fixture(scope="module")
def relay(server_factory):
    """Relay with local accounts, open sign-up, and the real (memory-hard) password cost."""
    return server_factory(**RELAY_ENV, AUTH_MODE="accounts", SIGNUP="open")


def sign_up(page, username: str) -> None:
    page.goto("/signup")
    page.locator("#signup-username").fill(username)
    page.locator("#signup-password").fill(PASSWORD)
    page.locator('button[data-action="signup"]').click()
    wait_until(lambda: page.url.endswith("/"), what="the home page after signing up")


def sign_in(page, username: str, password: str = PASSWORD) -> None:
    page.goto("/signin")
    page.locator("#signin-username").fill(username)
    page.locator("#signin-password").fill(password)
    page.locator('button[data-action="signin"]').click()


def test_the_same_user_in_a_second_browser_follows_a_reply_live(new_context, model):
    name = f"ann-{uuid.uuid4().hex[:8]}"
    laptop = new_context().new_page()
    sign_up(laptop, name)
    thread = new_thread(laptop)

    phone = new_context().new_page()  # another browser: its own cookies
    sign_in(phone, name)
    wait_until(lambda: phone.url.endswith("/"), what="the second browser to sign in")
    assert phone.locator("[data-user]").text_content() == name
    phone.goto(thread)
    assert phone.locator("form#composer").count() == 1  # its owner, not a viewer
    wait_live(phone, "the second browser's websocket")

    send_prompt(laptop, model.script(TEXT, token_delay_s=0.03))
    seen = follow({"laptop": laptop, "phone": phone}, timeout=60)

    for who, (state, _lengths) in seen.items():
        assert state["status"] == "complete", who
        assert norm(state["text"]) == norm(TEXT), who
        assert state["count"] == 1, who
    assert len(seen["phone"][1]) >= 2, \
        f"the second browser did not follow the reply live: {seen['phone'][1]}"


def test_a_wrong_password_is_shown_and_signing_out_goes_back_to_sign_in(new_context, console):
    console.allow(r"status of 401")  # the refused sign-in's page is a 401, as it should be
    name = f"bob-{uuid.uuid4().hex[:8]}"
    page = new_context().new_page()
    sign_up(page, name)
    page.locator('button[data-action="signout"]').first.click()
    wait_until(lambda: "/signin" in page.url, what="the sign-in page after signing out")
    assert page.goto("/usage").url.split("?")[0].endswith("/signin")

    sign_in(page, name, "not the password")
    error = page.locator("#account-error")
    error.wait_for()
    assert error.text_content() == "Wrong user name or password."
    assert page.locator("#signin-username").input_value() == name

    sign_in(page, name)
    wait_until(lambda: page.url.endswith("/"), what="the home page after signing in")
    assert page.locator("[data-user]").text_content() == name


@pytest.mark.parametrize("scheme,viewport", [("dark", {"width": 1280, "height": 800}),
                                             ("light", {"width": 390, "height": 844})],
                         ids=["desktop-dark", "phone-light"])
def test_the_account_pages_fit_the_look(new_context, artifacts_dir, scheme, viewport):
    context = new_context(color_scheme=scheme, viewport=viewport)
    page = context.new_page()
    page.goto("/signin")
    form = page.locator("#signin-form")
    box = form.bounding_box()
    assert box["width"] <= viewport["width"]  # nothing runs off a phone's screen
    page.screenshot(path=str(artifacts_dir / f"accounts-signin-{scheme}.png"))
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    field = page.evaluate("getComputedStyle(document.querySelector('#signin-username'))"
                          ".backgroundColor")
    dark = {"dark": True, "light": False}[scheme]
    assert (background == "rgb(20, 21, 23)") is dark, background
    assert field in ("rgb(30, 31, 35)", "rgb(255, 255, 255)"), field

    sign_up(page, f"cat-{uuid.uuid4().hex[:8]}")
    page.goto("/account")
    assert page.locator("#password-form").count() == 1
    page.screenshot(path=str(artifacts_dir / f"accounts-account-{scheme}.png"), full_page=True)
