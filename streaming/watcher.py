"""The database watcher: what other workers changed, found by two queries per interval.

Several workers on one SQLite file share no broker, and a broker can be away: then each
worker asks the database every `interval_s` which messages of the threads its own
followers watch have changed, and what those threads look like (title, version shown, or
gone), and publishes the differences to them locally. The cost is one cheap indexed query
of messages and one primary-key lookup of threads per worker per interval, whatever the
number of followers.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Collection

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import Message, Thread, thread_channel, utcnow

from .hub import Event
from .periodic import Periodic

CHANNEL_PREFIX = "thread:"
MAX_THREADS_PER_QUERY = 500
GONE = None  # a watched thread that was deleted (announced once)


class DatabaseWatcher:
    """Publishes to this worker's subscribers the message rows changed since the last look.

    Rows are found by `updated_at`, which every change of a message row bumps (a flush
    refreshes the heartbeat in the same transaction as its deltas). Each look re-reads the
    last `lookback_s` seconds, so a transaction that committed later than its timestamp is
    still seen; a row already published at that `updated_at` is not published again.
    """

    def __init__(self, session_factory: Callable[[], Session],
                 deliver: Callable[[str, Event], None],
                 channels: Callable[[], Collection[str]], *, interval_s: float,
                 is_local: Callable[[int], bool] = lambda message_id: False,
                 lookback_s: float = 2.0, now: Callable[[], dt.datetime] = utcnow) -> None:
        self._session_factory = session_factory
        self._deliver = deliver
        self._channels = channels
        self._is_local = is_local  # its own generations publish for themselves
        self.lookback = dt.timedelta(seconds=lookback_s)
        self._now = now
        self._seen: dict[int, dt.datetime] = {}
        # What each watched thread looked like at the last look: (title, active leaf).
        self._threads: dict[int, tuple[str, int | None] | None] = {}
        self.looks = 0
        self._periodic = Periodic(self.look, interval_s, name="database watcher")

    def start(self) -> None:
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()

    @property
    def running(self) -> bool:
        return self._periodic.running

    def look(self) -> int:
        """One look: publish every change not yet published; returns how many."""
        threads = [int(c[len(CHANNEL_PREFIX):]) for c in self._channels()
                   if c.startswith(CHANNEL_PREFIX)]
        if not threads:
            self._seen.clear()
            self._threads.clear()
            return 0
        self.looks += 1
        now = self._now()
        since = now - self.lookback
        rows = []
        shapes: dict[int, tuple[str, int | None]] = {}
        with self._session_factory() as session:
            for i in range(0, len(threads), MAX_THREADS_PER_QUERY):
                chunk = threads[i:i + MAX_THREADS_PER_QUERY]
                # Threads first: a turn committed between the two queries then shows its
                # messages now and its new leaf at the next look (not a version switch).
                shapes.update((t, (title, leaf)) for t, title, leaf in session.execute(
                    select(Thread.id, Thread.title, Thread.active_leaf_id)
                    .where(Thread.id.in_(chunk))))
                rows += session.execute(
                    select(Message.id, Message.thread_id, Message.status, Message.updated_at,
                           Message.created_at)
                    .where(Message.updated_at > since,
                           Message.thread_id.in_(threads[i:i + MAX_THREADS_PER_QUERY]))
                    .order_by(Message.id)).all()
        published = 0
        created: set[int] = set()
        for message_id, thread_id, status, updated_at, created_at in rows:
            previous = self._seen.get(message_id)
            if previous is not None and previous >= updated_at:
                continue
            self._seen[message_id] = updated_at
            if self._is_local(message_id):
                continue
            event = {"type": "persisted", "message": message_id, "status": status}
            if previous is None and created_at > since:  # new, perhaps ended already too
                event.update(type="created", messages=[message_id])
                created.add(message_id)
            self._deliver(thread_channel(thread_id), event)
            published += 1
        self._seen = {k: v for k, v in self._seen.items() if v > since}
        return published + self._thread_changes(threads, shapes, created)

    def _thread_changes(self, threads: list[int], shapes: dict[int, tuple[str, int | None]],
                        created: set[int]) -> int:
        """Publish what changed on the watched threads themselves since the last look:
        renamed, another version shown, deleted. The first look at a thread only notes it."""
        published = 0
        for thread_id in threads:
            before, shape = self._threads.get(thread_id, ()), shapes.get(thread_id, GONE)
            events = []
            if shape is GONE:
                if before is not GONE:
                    events.append({"type": "deleted", "thread": thread_id})
            elif before:
                if shape[0] != before[0]:
                    events.append({"type": "renamed", "thread": thread_id})
                # A leaf that is a new message is a new turn, announced as created already.
                if shape[1] != before[1] and shape[1] not in created:
                    events.append({"type": "selected", "leaf": shape[1]})
            for event in events:
                self._deliver(thread_channel(thread_id), event)
            published += len(events)
        self._threads = {t: shapes.get(t, GONE) for t in threads}
        return published
