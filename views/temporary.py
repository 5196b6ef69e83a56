"""Temporary chats: never listed or found, gone when their person leaves them or, at the
latest, TEMPORARY_TTL_S after their last activity."""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable

from flask import Flask, session
from sqlalchemy import select, true

from models import Thread, db, utcnow
from streaming.periodic import Periodic

log = logging.getLogger(__name__)


def init_temporary(app: Flask) -> None:
    """Give every worker's engine a sweep of the temporary chats that outlived their TTL."""
    sweeper = TemporarySweeper(app, ttl_s=app.config["TEMPORARY_TTL_S"])
    app.extensions["relay_temporary"] = sweeper
    app.extensions["relay"].add_background(
        Periodic(sweeper.sweep, app.config["TEMPORARY_SWEEP_S"], name="temporary sweep",
                 jitter=0.25))


class TemporarySweeper:
    """Deletes temporary threads idle for `ttl_s` (running replies are stopped first, as a
    delete does); `now` is injectable for tests."""

    def __init__(self, app: Flask, *, ttl_s: float,
                 now: Callable[[], dt.datetime] = utcnow) -> None:
        self.app = app
        self.ttl_s = ttl_s
        self.now = now

    def sweep(self) -> list[int]:
        """One pass: the ids of the threads deleted."""
        from .threads import remove_threads

        cutoff = self.now() - dt.timedelta(seconds=self.ttl_s)
        with self.app.app_context():
            expired = list(db.session.scalars(select(Thread).where(
                Thread.temporary == true(), Thread.updated_at < cutoff).limit(500)))
            remove_threads(expired)
        if expired:
            log.info("deleted %d temporary chats past their time", len(expired))
        return [thread.id for thread in expired]


def leave_temporary(keep: int | None = None) -> list[int]:
    """This browser opened another page than its temporary chat: delete its temporary
    chats but `keep` (the one being shown). The ids deleted."""
    from .threads import remove_threads

    owner = session.get("owner")
    if not owner:
        return []
    query = select(Thread).where(Thread.owner == owner, Thread.temporary == true())
    if keep is not None:
        query = query.where(Thread.id != keep)
    left = list(db.session.scalars(query))
    remove_threads(left)
    return [thread.id for thread in left]
