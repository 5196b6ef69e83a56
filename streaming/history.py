"""The conversation sent to the model as context for one reply."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Message


def build_history(session: Session, message: Message, *, system_prompt: str | None,
                  limit: int) -> list[dict[str, str]]:
    """System prompt, then the thread's last `limit` usable messages before `message`.

    Assistant replies count once they have text (a stopped or failed reply's partial
    text is still what the person saw); replies without text are skipped.
    """
    rows = session.execute(  # two columns, not whole objects: this runs for every reply
        select(Message.role, Message.content)
        .where(Message.thread_id == message.thread_id, Message.id < message.id)
        .order_by(Message.id.desc())
        .limit(limit)).all()
    history: list[dict[str, str]] = []
    if system_prompt:
        history.append({"role": "system", "content": system_prompt})
    for role, content in reversed(rows):
        if role == "user" or content:
            history.append({"role": role, "content": content})
    return history


def continuation(partial: str) -> list[dict[str, str]]:
    """The partial reply as the history's last message: each provider asks its model to go
    on from it in its own way (llm.base.Provider.stream)."""
    return [{"role": "assistant", "content": partial}]
