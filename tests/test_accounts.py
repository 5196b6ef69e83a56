"""Accounts (AUTH_MODE=accounts): sign-up, sign-in, sign-out, password change, rate limits,
session rotation, claiming a browser's anonymous threads, and every access rule per user."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from models import Thread, db
from models.accounts import AccountSession, User, new_invite
from tests.conftest import JSON, csrf_of, made_app, new_thread, send

PASSWORD = "correct horse battery"


@pytest.fixture
def app(tmp_path):
    with made_app(tmp_path, AUTH_MODE="accounts", SIGNUP="open") as app:
        yield app


def page_csrf(client, path: str = "/signin") -> str:
    """The CSRF token of a page (a signed-in browser is sent on from the sign-in page)."""
    page = client.get(path, follow_redirects=True)
    assert page.status_code == 200, page.status_code
    return re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)


def signup(client, username: str, password: str = PASSWORD, **extra) -> dict:
    """Make an account from a fresh page, as JSON; returns the new page's CSRF token and user."""
    response = client.post("/signup", json={"username": username, "password": password,
                                            **extra},
                           headers={"X-CSRF-Token": page_csrf(client, "/signup"), **JSON})
    assert response.status_code == 200, response.text
    return {"user": response.json["user"], "csrf": csrf_of(client)}


def signin(client, username: str, password: str = PASSWORD):
    return client.post("/signin", json={"username": username, "password": password},
                       headers={"X-CSRF-Token": page_csrf(client), **JSON})


def session_cookie(client, app) -> str:
    return client.get_cookie(app.config["SESSION_COOKIE_NAME"]).value


def with_cookie(app, value: str):
    other = app.test_client()
    other.set_cookie(app.config["SESSION_COOKIE_NAME"], value)
    return other


# -- sign-up, sign-in, sign-out ------------------------------------------------------------------
def test_a_stranger_is_sent_to_sign_in_and_api_clients_get_401(client):
    page = client.get("/threads/1?follow=poll")
    assert page.status_code == 302
    assert page.headers["Location"] == "/signin?next=/threads/1?follow%3Dpoll"
    for headers in (JSON, {"HX-Request": "true"}):
        refused = client.get("/", headers=headers)
        assert refused.status_code == 401
        assert "Sign in" in refused.text
    form = client.get("/signin")
    assert form.status_code == 200
    assert 'id="signin-form"' in form.text and 'name="password"' in form.text
    assert client.get("/healthz").status_code == 200


def test_signing_up_signs_in_and_pages_show_the_name_and_a_sign_out_button(client):
    form = client.get("/signup")
    assert 'id="signup-form"' in form.text
    token = page_csrf(client, "/signup")
    response = client.post("/signup", data={"username": "Ann", "password": PASSWORD,
                                            "csrf_token": token})
    assert response.status_code == 303 and response.headers["Location"] == "/"
    home = client.get("/")
    assert home.status_code == 200
    assert "Signed in as <strong data-user>Ann</strong>" in home.text
    assert 'data-action="signout"' in home.text
    thread_id = new_thread(client, csrf_of(client))
    with client.application.app_context():
        owner = db.session.get(Thread, thread_id).owner
        user = db.session.scalar(select(User).where(User.username == "Ann"))
        assert owner == f"user:{user.id}"
        assert user.password_hash.startswith("$argon2id$")  # never the password itself
        assert PASSWORD not in user.password_hash


def test_sign_in_then_sign_out(app, client):
    signup(client, "ann")
    client.post("/signout", headers={"X-CSRF-Token": csrf_of(client)})
    assert client.get("/", headers=JSON).status_code == 401

    answer = client.post("/signin", data={"username": "ANN", "password": PASSWORD,
                                          "csrf_token": page_csrf(client)})
    assert answer.status_code == 303 and answer.headers["Location"] == "/"
    assert client.get("/").status_code == 200
    as_json = signin(client, "ann")
    assert as_json.status_code == 200 and as_json.json["user"]["username"] == "ann"
    htmx = client.post("/signin", data={"username": "ann", "password": PASSWORD},
                       headers={"X-CSRF-Token": page_csrf(client), "HX-Request": "true"})
    assert htmx.status_code == 204 and htmx.headers["HX-Redirect"] == "/"

    copy = session_cookie(client, app)
    out = client.post("/signout", headers={"X-CSRF-Token": csrf_of(client)})
    assert out.status_code == 303 and out.headers["Location"] == "/"
    assert client.get("/").status_code == 302
    # A copy of the signed-in cookie is signed out too: its session ended on the server.
    assert with_cookie(app, copy).get("/", headers=JSON).status_code == 401


def test_a_wrong_password_or_unknown_name_is_401_with_the_same_message(app, client):
    signup(client, "ann")
    client.post("/signout", headers={"X-CSRF-Token": csrf_of(client)})
    wrong = signin(client, "ann", "not the password")
    unknown = signin(client, "nobody", PASSWORD)
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json["message"] == unknown.json["message"] == "Wrong user name or password."
    page = client.post("/signin", data={"username": "ann", "password": "nope",
                                        "csrf_token": page_csrf(client)})
    assert page.status_code == 401
    assert "Wrong user name or password." in page.text and 'id="signin-form"' in page.text
    assert 'value="ann"' in page.text  # the name typed is kept, the password never
    assert client.get("/", headers=JSON).status_code == 401


def test_sign_in_goes_back_to_the_page_asked_for_but_never_off_the_site(client):
    signup(client, "ann")
    client.post("/signout", headers={"X-CSRF-Token": csrf_of(client)})
    for sent, expected in [("/threads/list", "/threads/list"), ("//evil.example", "/"),
                           ("https://evil.example/", "/"), ("/\\evil.example", "/"),
                           ("/signin?next=/signin", "/")]:
        answer = client.post("/signin", data={"username": "ann", "password": PASSWORD,
                                              "next": sent, "csrf_token": page_csrf(client)})
        assert answer.status_code == 303
        assert answer.headers["Location"] == expected, sent
    assert client.get("/signin?next=/signin").headers["Location"] == "/"  # no loop


def test_bad_sign_up_input_is_a_400_or_409_with_a_message(client):
    signup(client, "ann")
    other = client.application.test_client()
    token = page_csrf(other, "/signup")
    cases = [({"username": "ann", "password": PASSWORD}, 409, "taken"),
             ({"username": "ANN", "password": PASSWORD}, 409, "taken"),
             ({"username": "bob", "password": "short"}, 400, "at least 8"),
             ({"username": "bob", "password": " " * 12}, 400, "only spaces"),
             ({"username": "b o b", "password": PASSWORD}, 400, "letters, digits"),
             ({"username": "x" * 65, "password": PASSWORD}, 400, "1 to 64"),
             ({"username": "bob", "password": 12345678}, 400, "'password' is missing"),
             ({"username": "bob", "password": "\ud800" * 9}, 400, "not valid Unicode"),
             ({"password": PASSWORD}, 400, "'username' is missing")]
    for body, status, words in cases:
        answer = other.post("/signup", json=body, headers={"X-CSRF-Token": token, **JSON})
        assert answer.status_code == status, (body, answer.text)
        assert words in answer.json["message"], (body, answer.json)
    with client.application.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(User)) == 1


# -- sign-up modes and invites -------------------------------------------------------------------
def test_sign_up_off_is_refused_and_invite_only_needs_a_fresh_invite(app, client):
    app.config["SIGNUP"] = "off"
    token = page_csrf(client)
    closed = client.post("/signup", json={"username": "ann", "password": PASSWORD},
                         headers={"X-CSRF-Token": token, **JSON})
    assert closed.status_code == 403 and "closed" in closed.json["message"]
    assert "Ask the administrator" in client.get("/signin").text

    app.config["SIGNUP"] = "invite"
    uninvited = client.post("/signup", json={"username": "ann", "password": PASSWORD},
                            headers={"X-CSRF-Token": token, **JSON})
    assert uninvited.status_code == 403 and "invitation" in uninvited.json["message"]
    with app.app_context():
        invite, _ = new_invite(db.session, 3600)
        expired, _ = new_invite(db.session, -1)
    assert 'id="signup-form"' in client.get(f"/signup?invite={invite}").text
    stale = client.post("/signup", json={"username": "ann", "password": PASSWORD,
                                         "invite": expired},
                        headers={"X-CSRF-Token": token, **JSON})
    assert stale.status_code == 403 and "not valid" in stale.json["message"]
    welcomed = client.post("/signup", json={"username": "ann", "password": PASSWORD,
                                            "invite": invite},
                           headers={"X-CSRF-Token": token, **JSON})
    assert welcomed.status_code == 200
    again = app.test_client()
    reused = again.post("/signup", json={"username": "bob", "password": PASSWORD,
                                         "invite": invite},
                        headers={"X-CSRF-Token": page_csrf(again), **JSON})
    assert reused.status_code == 403 and "not valid" in reused.json["message"]
    with app.app_context():
        assert [u.username for u in db.session.scalars(select(User))] == ["ann"]


# -- password change -----------------------------------------------------------------------------
def test_changing_the_password_signs_out_other_browsers_and_the_old_password_fails(app):
    laptop, phone = app.test_client(), app.test_client()
    signup(laptop, "ann")
    assert signin(phone, "ann").status_code == 200
    page = laptop.get("/account")
    assert 'id="password-form"' in page.text
    wrong = laptop.post("/account/password", json={"current_password": "nope nope",
                                                    "new_password": "a new password"},
                        headers={"X-CSRF-Token": csrf_of(laptop), **JSON})
    assert wrong.status_code == 403 and "current password" in wrong.json["message"]
    short = laptop.post("/account/password", json={"current_password": PASSWORD,
                                                    "new_password": "short"},
                        headers={"X-CSRF-Token": csrf_of(laptop), **JSON})
    assert short.status_code == 400
    before = session_cookie(laptop, app)

    changed = laptop.post("/account/password", data={
        "current_password": PASSWORD, "new_password": "a new password",
        "csrf_token": csrf_of(laptop)})
    assert changed.status_code == 303
    assert changed.headers["Location"] == "/account?done=password"
    assert "Password changed" in laptop.get("/account?done=password").text
    assert laptop.get("/").status_code == 200  # this browser stays signed in, afresh
    assert session_cookie(laptop, app) != before
    assert phone.get("/", headers=JSON).status_code == 401  # every other one is out
    assert with_cookie(app, before).get("/", headers=JSON).status_code == 401
    assert signin(phone, "ann", PASSWORD).status_code == 401
    assert signin(phone, "ann", "a new password").status_code == 200


# -- rate limits ---------------------------------------------------------------------------------
def test_sign_in_attempts_are_limited_per_account_with_retry_after(app, client):
    app.config["SIGNIN_RATE_LIMIT"] = "3/minute"
    signup(client, "ann")
    signup(app.test_client(), "bob")
    for _ in range(3):
        assert signin(client, "ann", "wrong password").status_code == 401
    limited = signin(client, "ann", PASSWORD)  # even the right password waits now
    assert limited.status_code == 429
    assert limited.headers["Retry-After"].isdigit()
    assert 0 < int(limited.headers["Retry-After"]) <= 60
    assert "Too many attempts" in limited.json["message"]
    assert signin(client, "ANN", PASSWORD).status_code == 429  # the name in any case
    assert signin(client, "bob", PASSWORD).status_code == 200  # another account is free
    page = client.post("/signin", data={"username": "ann", "password": PASSWORD,
                                        "csrf_token": page_csrf(client)})
    assert page.status_code == 429 and "Too many attempts" in page.text
    assert page.headers["Retry-After"].isdigit()


def test_sign_in_attempts_are_limited_per_address(app):
    app.config["SIGNIN_ADDRESS_RATE_LIMIT"] = "4/minute"
    here, elsewhere = app.test_client(), app.test_client()
    for n in range(4):
        assert signin(here, f"name{n}", "wrong password").status_code == 401
    limited = signin(here, "another", "wrong password")
    assert limited.status_code == 429 and int(limited.headers["Retry-After"]) > 0
    other = elsewhere.post("/signin", json={"username": "another", "password": "x"},
                           headers={"X-CSRF-Token": page_csrf(elsewhere), **JSON},
                           environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert other.status_code == 401


# -- session rotation ----------------------------------------------------------------------------
def test_signing_in_rotates_the_session_and_the_old_cookie_signs_nobody_in(app, client):
    signup(app.test_client(), "ann")
    before_token = page_csrf(client)
    before = session_cookie(client, app)
    assert signin(client, "ann").status_code == 200
    first = session_cookie(client, app)
    first_token = csrf_of(client)
    assert first != before and first_token != before_token
    # The cookie from before signing in is still nobody, and its token does not post.
    stale = with_cookie(app, before)
    assert stale.get("/", headers=JSON).status_code == 401
    assert client.post("/threads", headers={"X-CSRF-Token": before_token,
                                             **JSON}).status_code == 403

    assert signin(client, "ann").status_code == 200  # signing in again: rotated again
    assert session_cookie(client, app) != first
    assert csrf_of(client) != first_token
    assert with_cookie(app, first).get("/", headers=JSON).status_code == 401
    with app.app_context():  # the sign-up browser's session and this one's: none piles up
        assert db.session.scalar(select(db.func.count()).select_from(AccountSession)) == 2


# -- claiming a browser's anonymous threads ------------------------------------------------------
def test_threads_made_anonymously_can_be_kept_when_signing_in(app, client):
    app.config["AUTH_MODE"] = "anonymous"  # Relay as it ran before accounts were switched on
    token = csrf_of(client)
    made = [new_thread(client, token) for _ in range(2)]
    send(client, token, made[0], "from before")
    stranger = app.test_client()
    theirs = new_thread(stranger, csrf_of(stranger))
    with app.app_context():
        stranger_owner = db.session.get(Thread, theirs).owner
    app.config["AUTH_MODE"] = "accounts"

    signup(client, "ann")
    home = client.get("/")
    assert "Keep the 2 threads from this browser" in home.text
    assert client.get(f"/threads/{made[0]}", headers=JSON).status_code == 404  # not yet
    kept = client.post("/account/claim", data={"keep": "yes", "csrf_token": csrf_of(client)})
    assert kept.status_code == 303
    assert "Keep the" not in client.get("/").text
    assert client.get(f"/threads/{made[0]}", headers=JSON).status_code == 200
    listed = {t["id"] for t in client.get("/", headers=JSON).json["threads"]}
    assert listed == set(made)
    # The same user in another browser sees them; the stranger's thread moved nowhere.
    phone = app.test_client()
    assert signin(phone, "ann").status_code == 200
    assert {t["id"] for t in phone.get("/", headers=JSON).json["threads"]} == set(made)
    with app.app_context():
        assert db.session.get(Thread, theirs).owner == stranger_owner
    # Claiming again (nothing left to claim) moves nothing.
    again = client.post("/account/claim", headers={"X-CSRF-Token": csrf_of(client), **JSON})
    assert again.status_code == 200 and again.json == {"claimed": 0}


def test_leaving_anonymous_threads_unclaimed_keeps_them_apart(app, client):
    app.config["AUTH_MODE"] = "anonymous"
    made = new_thread(client, csrf_of(client))
    app.config["AUTH_MODE"] = "accounts"
    signup(client, "ann")
    left = client.post("/account/claim", json={"keep": "no"},
                       headers={"X-CSRF-Token": csrf_of(client), **JSON})
    assert left.status_code == 200 and left.json == {"claimed": 0}
    assert "Keep the" not in client.get("/").text
    assert client.get(f"/threads/{made}", headers=JSON).status_code == 404


# -- access rules per user -----------------------------------------------------------------------
def test_one_user_cannot_reach_anothers_threads(app):
    ann, bob = app.test_client(), app.test_client()
    signup(ann, "ann")
    signup(bob, "bob")
    token = csrf_of(ann)
    thread_id = new_thread(ann, token)
    sent = send(ann, token, thread_id, "ann's secret")
    reply = sent["assistant_message"]["id"]
    bob_token = csrf_of(bob)
    post = {"X-CSRF-Token": bob_token, **JSON}
    attempts = [
        bob.get(f"/threads/{thread_id}", headers=JSON),
        bob.get(f"/threads/{thread_id}/messages", headers=JSON),
        bob.get(f"/messages/{reply}", headers=JSON),
        bob.get(f"/messages/{reply}/stream"),
        bob.get(f"/threads/{thread_id}/export?format=json"),
        bob.post(f"/threads/{thread_id}/messages", json={"content": "hi"}, headers=post),
        bob.post(f"/threads/{thread_id}/rename", json={"title": "mine"}, headers=post),
        bob.post(f"/threads/{thread_id}/share", headers=post),
        bob.post(f"/messages/{reply}/cancel", headers=post),
        bob.post(f"/threads/{thread_id}/delete", headers=post),
    ]
    assert [a.status_code for a in attempts] == [404] * len(attempts)
    assert "ann's secret" not in bob.get("/search?q=secret", headers=JSON).text
    assert bob.get("/", headers=JSON).json["threads"] == []
    assert ann.get(f"/threads/{thread_id}", headers=JSON).status_code == 200


def test_a_share_link_works_for_a_signed_out_browser_read_only(app, client):
    signup(client, "ann")
    token = csrf_of(client)
    thread_id = new_thread(client, token)
    reply = send(client, token, thread_id, "shared words")["assistant_message"]["id"]
    link = client.post(f"/threads/{thread_id}/share", headers={"X-CSRF-Token": token,
                                                               **JSON}).json["share_url"]
    viewer = app.test_client()
    page = viewer.get(link)
    assert page.status_code == 200 and "shared words" in page.text
    assert 'id="composer"' not in page.text
    assert viewer.get(f"/messages/{reply}", headers=JSON).status_code == 200
    assert viewer.get(f"/threads/{thread_id}/messages", headers=JSON).status_code == 200
    # Read-only: nothing that changes the thread, and nothing else of the owner's.
    assert viewer.get(f"/threads/{thread_id}", headers=JSON).status_code == 401
    assert viewer.post(f"/threads/{thread_id}/messages", json={"content": "x"},
                       headers={"X-CSRF-Token": "x", **JSON}).status_code == 401


def test_the_new_posts_need_the_csrf_token(app, client):
    signup(app.test_client(), "ann")
    for path, body in [("/signin", {"username": "ann", "password": PASSWORD}),
                       ("/signup", {"username": "bob", "password": PASSWORD})]:
        refused = client.post(path, json=body, headers=JSON)
        assert refused.status_code == 403 and "CSRF" in refused.json["message"], path
        forged = client.post(path, json=body, headers={"X-CSRF-Token": "forged", **JSON})
        assert forged.status_code == 403, path
    assert client.get("/", headers=JSON).status_code == 401  # nobody signed in by them
    assert signin(client, "ann").status_code == 200
    for path, body in [("/account/password", {"current_password": PASSWORD,
                                              "new_password": "another password"}),
                       ("/account/claim", {}), ("/signout", {})]:
        refused = client.post(path, json=body, headers=JSON)
        assert refused.status_code == 403 and "CSRF" in refused.json["message"], path
    assert client.get("/", headers=JSON).status_code == 200  # still signed in
    assert signin(app.test_client(), "ann", PASSWORD).status_code == 200  # same password


def test_a_disabled_user_is_signed_out_and_refused(app, client):
    signup(client, "ann")
    assert client.get("/", headers=JSON).status_code == 200
    runner = app.test_cli_runner()
    result = runner.invoke(args=["relay", "users", "disable", "ann"])
    assert result.exit_code == 0, result.output
    assert client.get("/", headers=JSON).status_code == 401
    refused = signin(app.test_client(), "ann")
    assert refused.status_code == 403 and "disabled" in refused.json["message"]
    assert runner.invoke(args=["relay", "users", "enable", "ann"]).exit_code == 0
    assert signin(app.test_client(), "ann").status_code == 200


def test_pages_that_need_accounts_are_404_in_anonymous_mode(tmp_path):
    with made_app(tmp_path) as app:
        client = app.test_client()
        token = csrf_of(client)
        for path in ("/signin", "/signup"):
            assert client.get(path).status_code == 404
            assert client.post(path, json={"username": "a", "password": PASSWORD},
                               headers={"X-CSRF-Token": token, **JSON}).status_code == 404
        assert client.get("/account").status_code == 404
        home = client.get("/")
        assert 'data-action="signout"' not in home.text and "Sign in" not in home.text


@pytest.mark.parametrize("settings,words", [
    ({"AUTH_MODE": "ldap"}, "AUTH_MODE must be"),
    ({"SIGNUP": "maybe"}, "SIGNUP must be"),
    ({"AUTH_MODE": "header"}, "needs AUTH_PROXY_ADDRESSES"),
    ({"AUTH_MODE": "header", "AUTH_PROXY_ADDRESSES": "10.0.0.300"}, "not an IP address"),
    ({"PASSWORD_HASH_MEMORY_KIB": 4}, "PASSWORD_HASH_MEMORY_KIB at least"),
])
def test_a_setting_that_cannot_work_stops_the_start_with_a_message(tmp_path, settings, words):
    with pytest.raises(ValueError, match=words), made_app(tmp_path, **settings):
        pass
