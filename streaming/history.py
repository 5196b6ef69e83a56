"""The conversation sent to the model as context for one reply."""

from __future__ import annotations

from functools import cache

from sqlalchemy import bindparam, literal, select
from sqlalchemy.orm import Session

from models import Message

from .claim import ClaimedReply


def build_history(session: Session, message: Message | ClaimedReply, *, system_prompt: str | None,
                  limit: int) -> list[dict[str, str]]:
    """System prompt, then the last `limit` messages of the path that leads to `message`
    (its parent, the parent's parent, ...): the versions the reply answers, never a branch
    beside it.

    Assistant replies count once they have text (a stopped or failed reply's partial
    text is still what the person saw); replies without text are skipped.
    """
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
    for role, content in rows:
        if role == "user" or content:
            history.append({"role": role, "content": content})
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
    return (select(messages.c.role, messages.c.content)  # two columns, not objects
            .join(up, messages.c.id == up.c.id).order_by(up.c.depth.desc()))


def _linear_history(session: Session, message: Message | ClaimedReply,
                    limit: int) -> list[dict[str, str]]:
    rows = session.execute(
        select(Message.role, Message.content)
        .where(Message.thread_id == message.thread_id, Message.id < message.id)
        .order_by(Message.id.desc())
        .limit(limit)).all()
    return [{"role": role, "content": content} for role, content in reversed(rows)
            if role == "user" or content]


def continuation(partial: str) -> list[dict[str, str]]:
    """The partial reply as the history's last message: each provider asks its model to go
    on from it in its own way (llm.base.Provider.stream)."""
    return [{"role": "assistant", "content": partial}]
