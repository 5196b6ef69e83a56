"""The conversation sent to the model as context for one reply."""

from __future__ import annotations

from sqlalchemy import literal, select
from sqlalchemy.orm import Session, aliased

from models import Message


def build_history(session: Session, message: Message, *, system_prompt: str | None,
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
    up = (select(Message.id, Message.parent_id, literal(1).label("depth"))
          .where(Message.id == message.parent_id, Message.thread_id == message.thread_id)
          .cte("ancestors", recursive=True))
    older = aliased(Message)
    up = up.union_all(select(older.id, older.parent_id, up.c.depth + 1)
                      .where(older.id == up.c.parent_id, up.c.depth < limit))
    rows = session.execute(select(Message.role, Message.content)  # two columns, not objects
                           .join(up, Message.id == up.c.id).order_by(up.c.depth.desc())).all()
    for role, content in rows:
        if role == "user" or content:
            history.append({"role": role, "content": content})
    return history


def _linear_history(session: Session, message: Message, limit: int) -> list[dict[str, str]]:
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
