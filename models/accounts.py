"""People who sign in: users, their signed-in sessions, and invites to sign up.

A user owns threads as the owner id `user:<id>` (an anonymous browser's owner id is a random
token without a colon, so the two never meet). A session row is what a signed-in cookie
points at: removing it signs that browser out, wherever its cookie went.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
import secrets

from sqlalchemy import ForeignKey, String, delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from . import Thread, db, utcnow

USERNAME_MAX_CHARS = 64
# Local names: letters, digits and . _ - @ (an e-mail address fits); a proxy's names are
# taken as the proxy sends them, within the length and without control characters.
LOCAL_USERNAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@-]{0,63}")
PASSWORD_MAX_CHARS = 1024


class User(db.Model):
    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(USERNAME_MAX_CHARS))
    # The name compared at sign-in and kept unique: "Ann" and "ann" are one person.
    name_key: Mapped[str] = mapped_column(String(USERNAME_MAX_CHARS), unique=True)
    # None: a user known from a proxy's header, who has no password here.
    password_hash: Mapped[str | None] = mapped_column(String(255))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_signin_at: Mapped[dt.datetime | None] = mapped_column()
    disabled_at: Mapped[dt.datetime | None] = mapped_column()

    @property
    def owner(self) -> str:
        """The owner id of this user's threads."""
        return user_owner(self.id)

    @property
    def disabled(self) -> bool:
        return self.disabled_at is not None

    def to_json(self) -> dict:
        return {"id": self.id, "username": self.username,
                "created_at": self.created_at.isoformat() + "Z"}


class AccountSession(db.Model):
    """One signed-in browser; the cookie holds the token, the database only its hash."""

    __tablename__ = "account_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"),
                                         index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Invite(db.Model):
    """A one-time sign-up code (SIGNUP=invite); the database keeps only its hash."""

    __tablename__ = "invites"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    used_at: Mapped[dt.datetime | None] = mapped_column()
    used_by: Mapped[int | None] = mapped_column(ForeignKey("users.id", ondelete="SET NULL"))


def user_owner(user_id: int) -> str:
    return f"user:{user_id}"


def name_key(username: str) -> str:
    return username.casefold()


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).hexdigest()


def username_problem(username: str) -> str | None:
    """Why `username` cannot be a local user's name, or None."""
    if not LOCAL_USERNAME.fullmatch(username):
        return (f"A user name is 1 to {USERNAME_MAX_CHARS} letters, digits or . _ - @, "
                "starting with a letter or digit.")
    return None


def password_problem(password: str, min_chars: int) -> str | None:
    """Why `password` cannot be a password, or None (it is kept exactly as typed)."""
    if len(password) < min_chars:
        return f"A password has at least {min_chars} characters."
    if len(password) > PASSWORD_MAX_CHARS:
        return f"A password has at most {PASSWORD_MAX_CHARS} characters."
    if not password.strip():
        return "A password cannot be only spaces."
    return None


def find_user(session: Session, username: str) -> User | None:
    if len(username) > USERNAME_MAX_CHARS:
        return None
    return session.scalar(select(User).where(User.name_key == name_key(username)))


class NameTaken(Exception):
    """The user name is someone's already (whatever its case)."""


class InviteInvalid(Exception):
    """The invite does not exist, has expired, or was spent."""


def create_user(session: Session, username: str, password_hash: str | None, *,
                invite: str | None = None) -> User:
    """A new user, committed, spending `invite` in the same transaction when given."""
    user = User(username=username, name_key=name_key(username), password_hash=password_hash,
                created_at=utcnow())
    session.add(user)
    try:
        session.flush()
    except IntegrityError:
        session.rollback()
        raise NameTaken(username) from None
    if invite is not None and not use_invite(session, invite, user.id):
        session.rollback()
        raise InviteInvalid()
    try:
        session.commit()
    except IntegrityError:  # a sign-up with the same name at the same moment
        session.rollback()
        raise NameTaken(username) from None
    return user


def proxy_user(session: Session, username: str) -> User:
    """The user a trusted proxy names, made on first sight (two first requests at once
    agree on one row)."""
    user = find_user(session, username)
    if user is None:
        try:
            user = create_user(session, username, None)
        except NameTaken:
            user = find_user(session, username)
    assert user is not None
    return user


def open_session(session: Session, user: User) -> str:
    """Sign `user` in on a new session; returns the token its cookie keeps."""
    token = secrets.token_urlsafe(32)
    session.add(AccountSession(user_id=user.id, token_hash=token_hash(token),
                               created_at=utcnow()))
    user.last_signin_at = utcnow()
    session.commit()
    return token


def session_user(session: Session, token: str) -> User | None:
    """The active user whose session `token` is, or None (signed out, or disabled)."""
    user = session.scalar(select(User).join(AccountSession, AccountSession.user_id == User.id)
                          .where(AccountSession.token_hash == token_hash(token)))
    return None if user is None or user.disabled else user


def close_session(session: Session, token: str) -> None:
    session.execute(delete(AccountSession).where(AccountSession.token_hash == token_hash(token)))
    session.commit()


def close_all_sessions(session: Session, user_id: int) -> int:
    """Sign the user out everywhere; returns how many sessions there were."""
    closed = session.execute(delete(AccountSession).where(AccountSession.user_id == user_id))
    session.commit()
    return closed.rowcount or 0


def set_disabled(session: Session, user: User, disabled: bool) -> None:
    """Disable (every session closed at once) or enable a user."""
    user.disabled_at = utcnow() if disabled else None
    if disabled:
        session.execute(delete(AccountSession).where(AccountSession.user_id == user.id))
    session.commit()


def new_invite(session: Session, ttl_s: float) -> tuple[str, Invite]:
    token = secrets.token_urlsafe(24)
    invite = Invite(token_hash=token_hash(token), created_at=utcnow(),
                    expires_at=utcnow() + dt.timedelta(seconds=ttl_s))
    session.add(invite)
    session.commit()
    return token, invite


def use_invite(session: Session, token: str, user_id: int) -> bool:
    """Spend an invite for `user_id` (in the caller's transaction): False when it does not
    exist, has expired, or was spent already (also by a request at the same moment)."""
    spent = session.execute(
        update(Invite).where(Invite.token_hash == token_hash(token), Invite.used_at.is_(None),
                             Invite.expires_at > utcnow())
        .values(used_at=utcnow(), used_by=user_id))
    return spent.rowcount == 1


def invite_is_valid(session: Session, token: str) -> bool:
    return session.scalar(select(func.count()).select_from(Invite).where(
        Invite.token_hash == token_hash(token), Invite.used_at.is_(None),
        Invite.expires_at > utcnow())) == 1


def thread_count(session: Session, owner: str) -> int:
    return session.scalar(select(func.count()).select_from(Thread).where(Thread.owner == owner))


def claim_threads(session: Session, from_owner: str, user: User) -> int:
    """Move every thread of an anonymous owner to `user`; returns how many moved."""
    if from_owner.startswith("user:"):
        return 0  # only a browser's anonymous threads can be claimed
    from .uploads import Upload

    moved = session.execute(update(Thread).where(Thread.owner == from_owner)
                            .values(owner=user.owner))
    # Their files go with them (and the ones not sent yet), so they can be attached again.
    session.execute(update(Upload).where(Upload.owner == from_owner).values(owner=user.owner))
    session.commit()
    return moved.rowcount or 0
