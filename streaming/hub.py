"""Fan-out of small change notices, one channel per thread: the Hub protocol and its
in-process backend.

Events carry offsets, never whole bodies: a subscriber that misses one loses nothing,
because it re-reads what it lacks from the database (or the live generation). Every
backend fans out to the subscribers of its own worker through `InProcessHub`; the
broker backends (`hub_redis`, `hub_postgres`) only carry events between workers.
"""

from __future__ import annotations

import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, Protocol

from gevent.queue import Empty, Full, Queue

log = logging.getLogger(__name__)

Event = dict[str, Any]
# Delivered to every local channel when events may have been missed (a broker came back):
# subscribers re-read what they follow from the database.
RESYNC: Event = {"type": "resync"}


def concerns(event: Event, message_id: int) -> bool:
    """Whether a reader of `message_id` should look again after `event`."""
    return event.get("message") == message_id or event.get("type") == "resync"


class Subscription:
    """Events published on one channel after `subscribe`; close it (or use `with`) when done.

    With `on_event`, each event is handed to that callback at once (it must not block)
    instead of being queued for `get`.
    """

    def __init__(self, hub: InProcessHub, channel: str, maxsize: int,
                 on_event: Callable[[Event], None] | None = None) -> None:
        self.channel = channel
        self._hub = hub
        self._queue: Queue = Queue(maxsize=maxsize)
        self._on_event = on_event
        self.dropped = 0
        self._missed = False  # events were dropped: a RESYNC is owed once the queue drains

    def _offer(self, event: Event) -> None:
        if self._on_event is not None:
            try:
                self._on_event(event)
            except Exception:  # one bad callback must not stop the others' delivery
                log.exception("hub callback on %s failed", self.channel)
            return
        try:
            self._queue.put_nowait(event)
        except Full:
            # A slow subscriber only loses wake-ups: once it has read what is queued, it is
            # told to re-read from the database what it follows (`get` hands it a RESYNC).
            self.dropped += 1
            self._missed = True

    def get(self, timeout: float | None = None) -> Event | None:
        """The next event, or None when `timeout` seconds pass without one; after events
        were dropped (a full queue), a RESYNC follows the ones that were kept."""
        if self._missed and self._queue.empty():
            self._missed = False
            return dict(RESYNC)
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


class Hub(Protocol):
    """What the engine, the writer and every reader use, whatever the backend."""

    name: str

    def publish(self, channel: str, event: Event) -> None: ...

    def publish_many(self, events: Iterable[tuple[str, Event]]) -> None: ...

    def subscribe(self, channel: str, *, on_event: Callable[[Event], None] | None = None,
                  wait: bool = True) -> Subscription: ...

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def health(self) -> dict[str, Any]: ...


class InProcessHub:
    """Publish/subscribe within one worker process (gevent queues).

    Alone it is the backend for SQLite: a `DatabaseWatcher` (when given) publishes what
    other workers on the same database change. The broker backends subclass it for their
    local fan-out.
    """

    name = "in-process"

    def __init__(self, queue_size: int = 256, watcher: Any = None) -> None:
        self._subscribers: dict[str, set[Subscription]] = defaultdict(set)
        self._queue_size = queue_size
        self.watcher = watcher
        self.published = 0  # events published here, and received from elsewhere (metrics)
        self.received = 0

    # -- publishing -------------------------------------------------------------------
    def publish(self, channel: str, event: Event) -> None:
        self.published += 1
        self.deliver(channel, event)

    def receive(self, channel: str, event: Event) -> None:
        """An event from another worker (found by the database watcher): deliver it here."""
        self.received += 1
        self.deliver(channel, event)

    def publish_many(self, events: Iterable[tuple[str, Event]]) -> None:
        for channel, event in events:
            self.publish(channel, event)

    def deliver(self, channel: str, event: Event) -> None:
        """Hand `event` to this worker's subscribers of `channel`."""
        for subscription in list(self._subscribers.get(channel, ())):
            subscription._offer(event)

    def deliver_everywhere(self, event: Event) -> None:
        for channel in self.channels():
            self.deliver(channel, event)

    # -- subscribing ------------------------------------------------------------------
    def subscribe(self, channel: str, *, on_event: Callable[[Event], None] | None = None,
                  wait: bool = True) -> Subscription:
        subscription = Subscription(self, channel, self._queue_size, on_event)
        first = channel not in self._subscribers
        self._subscribers[channel].add(subscription)
        if first:
            self._channel_added(channel)
        if wait:
            self._await_listening(channel)
        return subscription

    def channels(self) -> list[str]:
        """Channels with at least one subscriber in this worker."""
        return list(self._subscribers)

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
            self._channel_removed(subscription.channel)

    def _channel_added(self, channel: str) -> None:
        """A channel got its first local subscriber (brokers start listening to it)."""

    def _await_listening(self, channel: str) -> None:
        """Return once events published on `channel` from anywhere reach this worker."""

    def _channel_removed(self, channel: str) -> None:
        """A channel lost its last local subscriber."""

    # -- lifecycle --------------------------------------------------------------------
    def start(self) -> None:
        """Start this worker's background work; call once per worker process."""
        if self.watcher is not None:
            self.watcher.start()

    def stop(self) -> None:
        if self.watcher is not None:
            self.watcher.stop()

    def health(self) -> dict[str, Any]:
        return {"backend": self.name, "ok": True, "degraded": False,
                "watcher": self.watcher is not None and self.watcher.running,
                "channels": len(self._subscribers), "subscribers": self.subscriber_count()}
