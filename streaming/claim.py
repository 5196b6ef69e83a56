"""The atomic claim that makes "exactly one generation per message" a database fact."""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.orm import Session

from models import PENDING, STREAMING, Message, utcnow


def claim_generation(session: Session, message_id: int) -> bool:
    """Move a pending message to streaming; True for exactly one caller, however many race."""
    result = session.execute(
        update(Message)
        .where(Message.id == message_id, Message.status == PENDING)
        .values(status=STREAMING, heartbeat_at=utcnow()))
    session.commit()
    return result.rowcount == 1
