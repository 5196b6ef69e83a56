"""`flask relay users ...`: make, list, disable and enable users, and invite people."""

from __future__ import annotations

import click
from flask import current_app, url_for
from sqlalchemy import func, select

from models import Thread, db
from models.accounts import (
    AccountSession,
    NameTaken,
    User,
    create_user,
    find_user,
    new_invite,
    password_problem,
    set_disabled,
    user_owner,
    username_problem,
)
from models.passwords import Passwords

from . import relay


@relay.group("users")
def users() -> None:
    """Local users (AUTH_MODE=accounts) and the users a proxy named (AUTH_MODE=header)."""


@users.command("create")
@click.argument("username")
@click.option("--password", prompt=True, hide_input=True, confirmation_prompt=True,
              help="Asked for when not given (a password on the command line is seen by "
                   "everyone on the machine).")
def users_create(username: str, password: str) -> None:
    """Make a user who signs in with USERNAME and a password."""
    problem = username_problem(username) or password_problem(
        password, current_app.config["PASSWORD_MIN_CHARS"])
    if problem:
        raise click.BadParameter(problem)
    try:
        user = create_user(db.session, username,
                           Passwords.from_config(current_app.config).hash(password))
    except NameTaken:
        raise click.ClickException(f"there is a user named {username!r} already") from None
    click.echo(f"created user {user.username} (id {user.id})")


def _user(username: str) -> User:
    user = find_user(db.session, username)
    if user is None:
        raise click.ClickException(f"no user named {username!r}")
    return user


@users.command("disable")
@click.argument("username")
def users_disable(username: str) -> None:
    """Refuse USERNAME from now on: signed out everywhere at once, threads kept."""
    user = _user(username)
    set_disabled(db.session, user, True)
    click.echo(f"disabled user {user.username}; every session of theirs has ended")


@users.command("enable")
@click.argument("username")
def users_enable(username: str) -> None:
    """Let a disabled USERNAME sign in again."""
    user = _user(username)
    set_disabled(db.session, user, False)
    click.echo(f"enabled user {user.username}")


@users.command("list")
def users_list() -> None:
    """Every user: name, state, threads, signed-in sessions, last sign-in."""
    sessions = (select(func.count()).select_from(AccountSession)
                .where(AccountSession.user_id == User.id).scalar_subquery())
    rows = db.session.execute(select(User, sessions).order_by(User.name_key)).all()
    counts = dict(db.session.execute(
        select(Thread.owner, func.count()).where(Thread.owner.like("user:%"))
        .group_by(Thread.owner)).all())
    if not rows:
        click.echo("no users")
        return
    width = max(len("user"), *(len(user.username) for user, _ in rows))
    click.echo(f"{'user':<{width}}  {'state':<8}  {'threads':>7}  {'sessions':>8}  "
               f"last sign-in")
    for user, session_count in rows:
        state = "disabled" if user.disabled else "active"
        last = user.last_signin_at.strftime("%Y-%m-%d %H:%M") + " UTC" \
            if user.last_signin_at else "never"
        click.echo(f"{user.username:<{width}}  {state:<8}  "
                   f"{counts.get(user_owner(user.id), 0):>7}  {session_count:>8}  {last}")


@users.command("invite")
@click.option("--count", default=1, show_default=True, type=click.IntRange(1, 100),
              help="How many one-time invites to make.")
def users_invite(count: int) -> None:
    """Print one-time sign-up links (SIGNUP=invite), valid for INVITE_TTL_S."""
    if current_app.config["SIGNUP"] != "invite":
        click.echo(f"note: SIGNUP is {current_app.config['SIGNUP']!r}; these links work "
                   "only while it is 'invite'", err=True)
    base = (current_app.config.get("PUBLIC_URL") or "").rstrip("/")
    for _ in range(count):
        token, invite = new_invite(db.session, current_app.config["INVITE_TTL_S"])
        with current_app.test_request_context():
            path = url_for("accounts.signup_form", invite=token)
        click.echo(f"{base}{path}  (until {invite.expires_at:%Y-%m-%d %H:%M} UTC)")
