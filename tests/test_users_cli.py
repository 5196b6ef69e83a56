"""`flask relay users create|disable|enable|list|invite`, through Flask's CliRunner."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import select

from models import db
from models.accounts import AccountSession, User
from tests.conftest import JSON, made_app

PASSWORD = "operator chosen password"


@pytest.fixture
def app(tmp_path):
    with made_app(tmp_path, AUTH_MODE="accounts", SIGNUP="invite") as app:
        yield app


def signin(client, username: str, password: str = PASSWORD):
    page = client.get("/signin")
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    return client.post("/signin", json={"username": username, "password": password},
                       headers={"X-CSRF-Token": token, **JSON})


def test_create_asks_for_the_password_twice_and_the_user_can_sign_in(app, runner):
    result = runner.invoke(args=["relay", "users", "create", "ann"],
                           input=f"{PASSWORD}\n{PASSWORD}\n")
    assert result.exit_code == 0, result.output
    assert "created user ann" in result.output
    assert PASSWORD not in result.output  # the prompt hides what is typed
    assert signin(app.test_client(), "ann").status_code == 200
    with app.app_context():
        stored = db.session.scalar(select(User.password_hash).where(User.username == "ann"))
        assert stored.startswith("$argon2id$")


@pytest.mark.parametrize("args,words", [
    (["ann", "--password", "short"], "at least 8"),
    (["a b", "--password", PASSWORD], "letters, digits"),
])
def test_create_refuses_a_bad_name_or_password(app, runner, args, words):
    result = runner.invoke(args=["relay", "users", "create", *args])
    assert result.exit_code != 0 and words in result.output
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(User)) == 0


def test_create_refuses_a_name_that_is_taken_in_any_case(app, runner):
    assert runner.invoke(args=["relay", "users", "create", "ann", "--password",
                               PASSWORD]).exit_code == 0
    again = runner.invoke(args=["relay", "users", "create", "ANN", "--password", PASSWORD])
    assert again.exit_code == 1 and "there is a user named 'ANN' already" in again.output


def test_disable_signs_the_user_out_everywhere_and_list_shows_it(app, runner):
    for name in ("bob", "ann"):
        runner.invoke(args=["relay", "users", "create", name, "--password", PASSWORD])
    browser = app.test_client()
    assert signin(browser, "ann").status_code == 200
    listed = runner.invoke(args=["relay", "users", "list"])
    assert listed.exit_code == 0
    lines = listed.output.splitlines()
    assert lines[0].split() == ["user", "state", "threads", "sessions", "last", "sign-in"]
    assert lines[1].split()[:4] == ["ann", "active", "0", "1"]
    assert lines[2].split()[:4] == ["bob", "active", "0", "0"] and "never" in lines[2]

    disabled = runner.invoke(args=["relay", "users", "disable", "ann"])
    assert disabled.exit_code == 0 and "disabled user ann" in disabled.output
    assert browser.get("/", headers=JSON).status_code == 401
    assert signin(app.test_client(), "ann").status_code == 403
    with app.app_context():
        assert db.session.scalar(select(db.func.count()).select_from(AccountSession)) == 0
    assert runner.invoke(args=["relay", "users", "list"]).output.splitlines()[1].split()[:2] \
        == ["ann", "disabled"]
    missing = runner.invoke(args=["relay", "users", "disable", "nobody"])
    assert missing.exit_code == 1 and "no user named 'nobody'" in missing.output


def test_list_without_users_says_so(runner):
    result = runner.invoke(args=["relay", "users", "list"])
    assert result.exit_code == 0 and result.output == "no users\n"


def test_invite_prints_one_time_sign_up_links(app, runner):
    app.config["PUBLIC_URL"] = "https://relay.example.com"
    result = runner.invoke(args=["relay", "users", "invite", "--count", "2"])
    assert result.exit_code == 0, result.output
    links = re.findall(r"https://relay\.example\.com/signup\?invite=([\w-]+)", result.output)
    assert len(links) == 2 and links[0] != links[1]
    client = app.test_client()
    page = client.get(f"/signup?invite={links[0]}")
    token = re.search(r'name="csrf-token" content="([^"]+)"', page.text).group(1)
    made = client.post("/signup", json={"username": "newcomer", "password": PASSWORD,
                                        "invite": links[0]},
                       headers={"X-CSRF-Token": token, **JSON})
    assert made.status_code == 200 and made.json["user"]["username"] == "newcomer"
