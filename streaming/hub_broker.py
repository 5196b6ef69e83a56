"""What the broker backends share: one listening connection per worker, fanned out locally.

A listener greenlet owns the broker connection: it starts and stops listening to the
channels this worker's subscribers want, and hands each event it receives to them. When
the broker is away the hub is *degraded*: publishing reaches this worker's subscribers
only, the database watcher tells them what other workers change, and the listener
reconnects with capped exponential backoff. Back, it tells every subscriber to re-read
(`RESYNC`), since events may have been missed meanwhile.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import gevent
from gevent.event import Event as GeventEvent

from .hub import RESYNC, Event, InProcessHub
from .watcher import DatabaseWatcher

log = logging.getLogger(__name__)

MAX_BATCH = 500  # events per broker round trip
STOP_TIMEOUT_S = 2.0


class BrokerUnavailable(Exception):
    """The broker cannot be reached now."""


class BrokerHub(InProcessHub):
    """Base of the Redis and PostgreSQL backends; subclasses implement the broker calls."""

    name = "broker"

    def __init__(self, *, watcher: DatabaseWatcher | None, prefix: str = "relay:",
                 queue_size: int = 256, poll_s: float = 0.05, ready_timeout_s: float = 2.0,
                 backoff_max_s: float = 5.0) -> None:
        super().__init__(queue_size, watcher=watcher)
        self.prefix = prefix
        self.poll_s = poll_s  # how soon a new channel is listened to
        self.ready_timeout_s = ready_timeout_s
        self.backoff_max_s = backoff_max_s
        self.degraded = True  # until the listener is connected
        self.last_error: str | None = None
        self.reconnects = 0
        self.received = 0
        self.published = 0
        self._listening: set[str] = set()
        self._ready: dict[str, GeventEvent] = {}
        self._dirty = GeventEvent()
        self._greenlet: gevent.Greenlet | None = None
        self.batches = 0
        self._outbox: deque[tuple[str, Event]] = deque()
        self._outbox_ready = GeventEvent()
        self._sender: gevent.Greenlet | None = None

    # -- what subclasses implement ----------------------------------------------------
    def _connect(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def _listen(self, add: set[str], remove: set[str]) -> None:
        """Start listening to `add` and stop listening to `remove` (broker names)."""
        raise NotImplementedError

    def _receive(self, timeout: float) -> Iterator[tuple[str, str]]:
        """(broker name, payload) pairs that arrive within `timeout` seconds."""
        raise NotImplementedError

    def _send(self, items: list[tuple[str, str]]) -> None:
        """Publish payloads; raise BrokerUnavailable (or any error) when it cannot."""
        raise NotImplementedError

    # -- publishing -------------------------------------------------------------------
    def publish(self, channel: str, event: Event) -> None:
        self.publish_many([(channel, event)])

    def publish_many(self, events: Iterable[tuple[str, Event]]) -> None:
        """Queue events for the broker; never waits on it.

        One greenlet sends whatever has queued meanwhile as one batch (one round trip, one
        NOTIFY transaction), in order, so no request or writer tick waits for the broker.
        """
        if self.degraded:
            self._deliver_here(events)
            return
        self._outbox.extend(events)
        self._outbox_ready.set()
        if self._sender is None or self._sender.dead:
            self._sender = gevent.spawn(self._send_loop)

    def _send_loop(self) -> None:
        while True:
            self._outbox_ready.wait()
            self._outbox_ready.clear()
            self.flush()

    def flush(self) -> None:
        """Send every queued event now (the broker away: deliver them here)."""
        while self._outbox:
            batch = [self._outbox.popleft()
                     for _ in range(min(len(self._outbox), MAX_BATCH))]
            if self.degraded:
                self._deliver_here(batch)
                continue
            try:
                self._send([(self.prefix + c, json.dumps(e, separators=(",", ":")))
                            for c, e in batch])
                self.published += len(batch)
                self.batches += 1
            except Exception as err:
                self._degrade(err)
                self._deliver_here(batch)

    def _deliver_here(self, events: Iterable[tuple[str, Event]]) -> None:
        # The broker is away: this worker's own subscribers still hear it; other workers
        # learn of the change from their database watchers.
        for channel, event in events:
            self.published += 1
            self.deliver(channel, event)

    # -- subscribing ------------------------------------------------------------------
    def _channel_added(self, channel: str) -> None:
        self._ready.setdefault(channel, GeventEvent())
        self._dirty.set()

    def _await_listening(self, channel: str) -> None:
        # Listening before the caller reads the database means no change falls between.
        ready = self._ready.get(channel)
        if ready is None or self.degraded or self._greenlet is None:
            return
        if not ready.wait(self.ready_timeout_s):
            log.warning("hub: listening to %s took over %.1f s", channel, self.ready_timeout_s)

    def _channel_removed(self, channel: str) -> None:
        self._ready.pop(channel, None)
        self._dirty.set()

    def _sync(self) -> None:
        self._dirty.clear()
        wanted = set(self._subscribers)
        add, remove = wanted - self._listening, self._listening - wanted
        if add or remove:
            self._listen({self.prefix + c for c in add}, {self.prefix + c for c in remove})
            self._listening = (self._listening - remove) | add
        for channel in self._listening:
            ready = self._ready.get(channel)
            if ready is not None:
                ready.set()

    # -- the listener -----------------------------------------------------------------
    def start(self) -> None:
        if self._greenlet is None or self._greenlet.dead:
            self._greenlet = gevent.spawn(self._run)
        if self.degraded and self.watcher is not None:
            self.watcher.start()  # until the broker first answers, as while it is away

    def stop(self) -> None:
        # Each greenlet is dead before its connection is closed: closing a socket that a
        # greenlet still waits on can abort the worker (see PostgresHub._close).
        if self._sender is not None:
            self._sender.kill(block=True, timeout=STOP_TIMEOUT_S)
            self._sender = None
        self.flush()  # the last events (replies just ended) still reach the others
        if self._greenlet is not None:
            self._greenlet.kill(block=True, timeout=STOP_TIMEOUT_S)
            self._greenlet = None
        super().stop()
        self._close_quietly()

    def _run(self) -> None:
        backoff = 0.1
        while True:
            try:
                self._connect()
                self._listening = set()
                self._sync()
                if self.degraded:
                    self._recovered()
                backoff = 0.1
                while True:
                    if self.degraded:  # publishing failed meanwhile: start afresh
                        raise BrokerUnavailable(self.last_error or "publishing failed")
                    if self._dirty.is_set():
                        self._sync()
                    for name, payload in self._receive(self.poll_s):
                        self._dispatch(name, payload)
                    gevent.sleep(0)  # let others run even where sockets are not cooperative
            except gevent.GreenletExit:
                raise
            except Exception as err:
                self._degrade(err)
                self._close_quietly()
                gevent.sleep(backoff)
                backoff = min(backoff * 2, self.backoff_max_s)
                self.reconnects += 1

    def _dispatch(self, name: str, payload: str) -> None:
        if not name.startswith(self.prefix):
            return
        try:
            event = json.loads(payload)
        except ValueError:
            log.warning("hub: dropped a malformed event on %s", name)
            return
        if isinstance(event, dict):
            self.received += 1
            self.deliver(name[len(self.prefix):], event)

    def _degrade(self, err: BaseException) -> None:
        self.last_error = f"{type(err).__name__}: {err}"[:200]
        if not self.degraded:
            log.warning("hub %s is away (%s): following through the database until it is "
                        "back", self.name, self.last_error)
            self.degraded = True
        for ready in self._ready.values():
            ready.set()  # nobody waits for a broker that is away
        if self.watcher is not None:
            self.watcher.start()

    def _recovered(self) -> None:
        log.info("hub %s is connected", self.name)
        self.degraded = False
        if self.watcher is not None:
            self.watcher.stop()
        self.deliver_everywhere(RESYNC)

    def _close_quietly(self) -> None:
        try:
            self._close()
        except Exception as err:
            log.debug("hub %s: closing failed: %s", self.name, err)

    def health(self) -> dict[str, Any]:
        return {**super().health(), "ok": True, "degraded": self.degraded,
                "error": self.last_error if self.degraded else None,
                "reconnects": self.reconnects, "received": self.received,
                "published": self.published, "batches": self.batches,
                "queued": len(self._outbox)}
