"""Relay's data: threads, their messages, and the deltas of replies being written."""

from __future__ import annotations

import datetime as dt
import secrets
from typing import Any

from flask_sqlalchemy import SQLAlchemy
from sqlalchemy import JSON, ForeignKey, Index, String, Text, UniqueConstraint, false, true
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


class Base(DeclarativeBase):
    pass


# Requests read what they just wrote without reloading it: no expiry on commit (a view that
# changes rows with a bulk UPDATE re-reads them itself).
db = SQLAlchemy(model_class=Base, session_options={"expire_on_commit": False})

PENDING, STREAMING = "pending", "streaming"
COMPLETE, ERROR, ABORTED, INTERRUPTED = "complete", "error", "aborted", "interrupted"
ACTIVE_STATUSES = (PENDING, STREAMING)
TERMINAL_STATUSES = (COMPLETE, ERROR, ABORTED, INTERRUPTED)
DEFAULT_TITLE = "New thread"
TITLE_MAX_CHARS = 200
FOLDER_MAX_CHARS = 100


def utcnow() -> dt.datetime:
    """Naive UTC now: one convention for every database Relay runs on."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Thread(db.Model):
    __tablename__ = "threads"

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(64), index=True)
    title: Mapped[str] = mapped_column(String(TITLE_MAX_CHARS), default=DEFAULT_TITLE)
    # Set once a person names the thread: the automatic title never replaces their choice.
    title_chosen: Mapped[bool] = mapped_column(default=False, server_default=false())
    share_token: Mapped[str | None] = mapped_column(String(64), unique=True)
    # The model the thread's next reply is written by (the last one chosen); None: the
    # default model.
    model: Mapped[str | None] = mapped_column(String(200))
    # The last message of the path the thread shows and sends to the model (models.tree).
    # No foreign key: threads and messages would then reference each other.
    active_leaf_id: Mapped[int | None] = mapped_column()
    # Organisation: the name of the owner's folder it is filed in (None: unfiled), pinned
    # first, archived out of the lists (still found by search). A temporary thread is never
    # listed or found, and is deleted when its person leaves it or after TEMPORARY_TTL_S.
    folder: Mapped[str | None] = mapped_column(String(FOLDER_MAX_CHARS))
    pinned: Mapped[bool] = mapped_column(default=False, server_default=false())
    archived: Mapped[bool] = mapped_column(default=False, server_default=false())
    temporary: Mapped[bool] = mapped_column(default=False, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)

    messages: Mapped[list[Message]] = relationship(
        back_populates="thread", order_by="Message.id", cascade="all, delete-orphan",
        lazy="raise_on_sql",
    )

    @property
    def channel(self) -> str:
        """The hub channel on which this thread's changes are published."""
        return thread_channel(self.id)

    @staticmethod
    def new_share_token() -> str:
        return secrets.token_urlsafe(24)


class Folder(db.Model):
    """A named group of one owner's threads; a thread names its folder (`Thread.folder`)."""

    __tablename__ = "folders"
    __table_args__ = (UniqueConstraint("owner", "name", name="uq_folders_owner_name"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    owner: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(FOLDER_MAX_CHARS))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "name": self.name}


def thread_channel(thread_id: int) -> str:
    """Hub channel name of one thread (never a global broadcast)."""
    return f"thread:{thread_id}"


def control_channel(thread_id: int) -> str:
    """Hub channel of requests to the worker generating in a thread (Stop): apart from the
    thread's changes, so a generating worker never hears its own flushes."""
    return f"control:{thread_id}"


class Message(db.Model):
    __tablename__ = "messages"
    __table_args__ = (Index("ix_messages_thread_id_id", "thread_id", "id"),
                      Index("ix_messages_status_heartbeat", "status", "heartbeat_at"),
                      # The database watcher finds what other workers changed by it.
                      Index("ix_messages_updated_at", "updated_at"),
                      # A prompt sent with an Idempotency-Key is stored once per thread.
                      Index("uq_messages_thread_request_key", "thread_id", "request_key",
                            unique=True))

    id: Mapped[int] = mapped_column(primary_key=True)
    thread_id: Mapped[int] = mapped_column(ForeignKey("threads.id", ondelete="CASCADE"))
    # The message this one answers or follows (None for a thread's first prompts); messages
    # with the same parent and role are versions of one turn.
    parent_id: Mapped[int | None] = mapped_column(
        ForeignKey("messages.id", ondelete="SET NULL", name="fk_messages_parent_id"),
        index=True)
    role: Mapped[str] = mapped_column(String(16))
    content: Mapped[str] = mapped_column(Text, default="")
    # A prompt's Idempotency-Key, if its request had one: a retry of the same request finds
    # the prompt stored the first time instead of storing it again.
    request_key: Mapped[str | None] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16), default=COMPLETE)
    error: Mapped[str | None] = mapped_column(String(500))
    model: Mapped[str | None] = mapped_column(String(200))
    # {"prompt_tokens", "completion_tokens", "total_tokens"}, with "estimated": true when
    # the model sent no counts (llm.usage).
    usage: Mapped[dict[str, Any] | None] = mapped_column(JSON)
    # False: the model server refused to stream, and the reply arrived in one piece.
    streamed: Mapped[bool] = mapped_column(default=True, server_default=true())
    # The model's thinking (None: it showed none), and the tool steps it took, each
    # {name, arguments, result, status}; both written as they stream, like the text.
    reasoning: Mapped[str | None] = mapped_column(Text)
    steps: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)
    reasoning_ms: Mapped[int | None] = mapped_column()
    ttft_ms: Mapped[int | None] = mapped_column()
    duration_ms: Mapped[int | None] = mapped_column()
    heartbeat_at: Mapped[dt.datetime | None] = mapped_column()
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    # Counts the generations that claimed this reply: each writes only while the count is
    # still its own, so one taken over (continued elsewhere) can never write into it again.
    claim: Mapped[int] = mapped_column(default=0, server_default="0")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    thread: Mapped[Thread] = relationship(back_populates="messages")

    @property
    def is_terminal(self) -> bool:
        return self.status in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self.status in ACTIVE_STATUSES

    @property
    def timings(self) -> dict[str, int | None]:
        timings = {"ttft_ms": self.ttft_ms, "duration_ms": self.duration_ms}
        if self.reasoning_ms is not None:
            timings["reasoning_ms"] = self.reasoning_ms
        return timings

    @property
    def cost(self) -> float | None:
        """USD this reply cost by the app's MODEL_PRICES; None when its model has no price."""
        from flask import current_app

        prices = current_app.extensions.get("relay_prices")
        return None if prices is None else prices.cost(self.model, self.usage)

    def to_json(self, text: str | None = None, *,
                siblings: list[int] | None = None) -> dict[str, Any]:
        """The contract's JSON shape; `text` overrides content for a reply still streaming.

        `siblings`: the ids of this turn's versions, this one included, oldest first (read
        from the database when not given).
        """
        if siblings is None:
            from .tree import sibling_ids

            siblings = sibling_ids(db.session, self)
        return {
            "id": self.id,
            "thread_id": self.thread_id,
            "parent_id": self.parent_id,
            "siblings": siblings,
            "role": self.role,
            "status": self.status,
            "content": self.content if text is None else text,
            "error": self.error,
            "model": self.model,
            "usage": self.usage,
            "cost": self.cost,
            "streamed": self.streamed is not False,
            "reasoning": self.reasoning or None,
            "steps": self.steps or [],
            "timings": self.timings,
            "attachments": self.attachments_json(),
            "created_at": self.created_at.isoformat() + "Z",
        }

    def attachments_json(self) -> list[dict[str, Any]]:
        """The files this prompt carries, `{id, name, type, size}` each, in order."""
        from .uploads import attachments_json

        return attachments_json(db.session, self)


class StreamDelta(db.Model):
    """A persisted slice [start, end) of a reply still being written, in code points."""

    __tablename__ = "stream_deltas"
    __table_args__ = (
        UniqueConstraint("message_id", "start", name="uq_stream_deltas_message_start"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    # (message_id, start) is unique, so that index also serves reads by message.
    message_id: Mapped[int] = mapped_column(ForeignKey("messages.id", ondelete="CASCADE"))
    start: Mapped[int] = mapped_column()
    end: Mapped[int] = mapped_column()
    text: Mapped[str] = mapped_column(Text)


# The full-text index is built with the tables (create_all) as the migrations build it; so
# are the accounts' tables (users, their sessions, invites).
from . import accounts, search, uploads  # noqa: E402,F401
