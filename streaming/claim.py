"""The atomic claim that makes "exactly one generation per message" a database fact."""

from __future__ import annotations

from functools import cache
from typing import NamedTuple

from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from models import PENDING, STREAMING, Message, utcnow


class ClaimedReply(NamedTuple):
    """What starting a claimed reply needs of its message."""

    id: int
    thread_id: int
    parent_id: int | None
    role: str
    content: str
    model: str | None
    usage: dict | None  # a continued reply's earlier calls
    reasoning: str | None  # and the parts it had: its cursor goes on from them
    steps: list | None
    reasoning_ms: int | None
    claim: int  # this claim's number: the generation writes only while it is the latest


def claim_reply(session: Session, message_id: int, *, commit: bool = True) -> ClaimedReply | None:
    """Move a pending message to streaming; the claimed message for exactly one caller
    however many race, None for the others.

    With `commit=False` the claim stays in the session's transaction: what the caller reads
    next (the history) goes in the same transaction on the same connection, and a failure
    before the caller commits rolls the claim back, leaving the reply pending for a retry.
    A claim committed first would leave a reply `streaming` with no generation when the
    read after it fails (a pool timeout under load), until the sweeper gives it up.

    One statement where the database can return the row it changed (SQLite 3.35+,
    PostgreSQL): a claim is on every reply's way to its first token.
    """
    claim, columns = _claim_statements()
    params = {"claimed": message_id, "now": utcnow()}
    if session.get_bind().dialect.update_returning:
        row = session.execute(claim.returning(*columns), params).one_or_none()
    else:
        won = session.execute(claim, params).rowcount == 1
        row = session.execute(select(*columns).where(Message.__table__.c.id == message_id)
                              ).one_or_none() if won else None
    if commit:
        session.commit()
    return None if row is None else ClaimedReply(*row)


@cache
def _claim_statements():
    # Built once, with bound parameters: building a statement costs more than running it.
    messages = Message.__table__
    claim = (update(messages)
             .where(messages.c.id == bindparam("claimed"), messages.c.status == PENDING)
             .values(status=STREAMING, heartbeat_at=bindparam("now"),
                     claim=messages.c.claim + 1))
    columns = (messages.c.id, messages.c.thread_id, messages.c.parent_id, messages.c.role,
               messages.c.content, messages.c.model, messages.c.usage,
               messages.c.reasoning, messages.c.steps, messages.c.reasoning_ms,
               messages.c.claim)
    return claim, columns
