"""Fan-out of small change notices, one channel per thread.

Events carry offsets, never whole bodies: a subscriber that misses one loses nothing,
because it re-reads what it lacks from the database (or the live generation).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from typing import Any

from gevent.queue import Empty, Full, Queue

Event = dict[str, Any]


class Subscription:
    """Events published on one channel after `subscribe`; close it (or use `with`) when done."""

    def __init__(self, hub: InProcessHub, channel: str, maxsize: int) -> None:
        self.channel = channel
        self._hub = hub
        self._queue: Queue = Queue(maxsize=maxsize)
        self.dropped = 0

    def _offer(self, event: Event) -> None:
        try:
            self._queue.put_nowait(event)
        except Full:
            # A slow subscriber only loses wake-ups, and it refills gaps from the database.
            self.dropped += 1

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None when `timeout` seconds pass without one."""
        try:
            return self._queue.get(timeout=timeout)
        except Empty:
            return None

    def close(self) -> None:
        self._hub._unsubscribe(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InProcessHub:
    """Publish/subscribe within one worker process (gevent queues); the default backend."""

    name = "in-process"

    def __init__(self, queue_size: int = 256) -> None:
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._queue_size = queue_size

    def publish(self, channel: str, event: Event) -> None:
        for subscription in list(self._subscribers.get(channel, ())):
            subscription._offer(event)

    def subscribe(self, channel: str) -> Subscription:
        subscription = Subscription(self, channel, self._queue_size)
        self._subscribers[channel].add(subscription)
        return subscription

    def subscriber_count(self, channel: str | None = None) -> int:
        if channel is not None:
            return len(self._subscribers.get(channel, ()))
        return sum(len(s) for s in self._subscribers.values())

    def _unsubscribe(self, subscription: Subscription) -> None:
        subscribers = self._subscribers.get(subscription.channel)
        if subscribers is None:
            return
        subscribers.discard(subscription)
        if not subscribers:
            with contextlib.suppress(KeyError):
                del self._subscribers[subscription.channel]

    def health(self) -> dict[str, Any]:
        return {"backend": self.name, "ok": True, "subscribers": self.subscriber_count()}
