"""The conversation sent to the model as context for one reply."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import bindparam, literal, select
from sqlalchemy.orm import Session

from llm.base import Attachment
from models import Message
from models.uploads import blob_data, message_uploads

from .claim import ClaimedReply


def build_history(session: Session, message: Message | ClaimedReply, *, system_prompt: str | None,
                  limit: int, attachments: bool = False,
                  vision: bool = True) -> list[dict[str, Any]]:
    """System prompt, then the last `limit` messages of the path that leads to `message`
    (its parent, the parent's parent, ...): the versions the reply answers, never a branch
    beside it.

    Assistant replies count once they have text (a stopped or failed reply's partial
    text is still what the person saw); replies without text are skipped.

    With `attachments`, a prompt's files come with it (llm.base.Attachment); for a model
    without `vision`, an image is a line of text that names it.
    """
    history = _history(session, message, system_prompt, limit)
    if attachments:
        _attach(session, history, vision)
    for entry in history:
        entry.pop("id", None)
    return history


def _attach(session: Session, history: list[dict[str, Any]], vision: bool) -> None:
    ids = [m["id"] for m in history if m.get("role") == "user" and m.get("id")]
    found = message_uploads(session, ids)
    for entry in history:
        uploads = found.get(entry.get("id"))
        if not uploads:
            continue
        files = []
        for upload in uploads:
            if upload.is_image and not vision:
                files.append(Attachment(upload.name, "text/plain",
                                        text=f"(an image this model cannot see: {upload.name})"))
                continue
            if upload.is_image:  # a large one as its smaller copy
                files.append(Attachment(
                    upload.name, upload.model_type or upload.type,
                    data=blob_data(session, upload.model_sha256 or upload.sha256),
                    width=upload.width, height=upload.height))
            else:
                files.append(Attachment(upload.name, upload.type, text=upload.text))
        entry["attachments"] = files


def _history(session: Session, message: Message | ClaimedReply, system_prompt: str | None,
             limit: int) -> list[dict[str, Any]]:
    history: list[dict[str, str]] = []
    if system_prompt:
        history.append({"role": "system", "content": system_prompt})
    if limit <= 0:
        return history
    if message.parent_id is None:
        if message.role == "assistant":  # written without a tree: the thread is one path
            return history + _linear_history(session, message, limit)
        return history
    # Walked up in the database, `limit` steps at most: this runs for every reply, and the
    # cost must not grow with the thread.
    rows = session.execute(_ancestors_statement(), {
        "parent_id": message.parent_id, "thread_id": message.thread_id, "limit": limit}).all()
    for message_id, role, content in rows:
        if role == "user" or content:
            history.append({"role": role, "content": content, "id": message_id})
    return history


@cache
def _ancestors_statement():
    # Built once (with bound parameters): building it costs more than running it.
    messages = Message.__table__
    up = (select(messages.c.id, messages.c.parent_id, literal(1).label("depth"))
          .where(messages.c.id == bindparam("parent_id"),
                 messages.c.thread_id == bindparam("thread_id"))
          .cte("ancestors", recursive=True))
    older = messages.alias("older")
    up = up.union_all(select(older.c.id, older.c.parent_id, up.c.depth + 1)
                      .where(older.c.id == up.c.parent_id, up.c.depth < bindparam("limit")))
    return (select(messages.c.id, messages.c.role, messages.c.content)  # columns, not objects
            .join(up, messages.c.id == up.c.id).order_by(up.c.depth.desc()))


def _linear_history(session: Session, message: Message | ClaimedReply,
                    limit: int) -> list[dict[str, str]]:
    rows = session.execute(
        select(Message.id, Message.role, Message.content)
        .where(Message.thread_id == message.thread_id, Message.id < message.id)
        .order_by(Message.id.desc())
        .limit(limit)).all()
    return [{"role": role, "content": content, "id": message_id}
            for message_id, role, content in reversed(rows) if role == "user" or content]


def continuation(partial: str) -> list[dict[str, str]]:
    """The partial reply as the history's last message: each provider asks its model to go
    on from it in its own way (llm.base.Provider.stream)."""
    return [{"role": "assistant", "content": partial}]
