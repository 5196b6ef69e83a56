"""The Redis pub/sub backend: many workers and hosts, one subscribing connection per worker."""

from __future__ import annotations

import time
from collections.abc import Iterator

import gevent
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from .hub_broker import BrokerHub, BrokerUnavailable
from .watcher import DatabaseWatcher

CONFIRM_TIMEOUT_S = 2.0


class RedisHub(BrokerHub):
    """Events travel as small JSON payloads on `<prefix>thread:<id>` Redis channels."""

    name = "redis"

    def __init__(self, url: str, *, watcher: DatabaseWatcher | None, prefix: str = "relay:",
                 **options) -> None:
        super().__init__(watcher=watcher, prefix=prefix, **options)
        self.url = url
        # Errors must reach the listener: a silent reconnect inside redis-py would hide the
        # events lost meanwhile, which the listener answers with a resync.
        common = {"decode_responses": True, "socket_connect_timeout": 2,
                  "socket_keepalive": True, "retry": Retry(NoBackoff(), 0)}
        self._publisher = redis.Redis.from_url(url, socket_timeout=2, **common)
        self._client = redis.Redis.from_url(url, health_check_interval=15, **common)
        self._pubsub: redis.client.PubSub | None = None
        self._stash: list[tuple[str, str]] = []

    def _connect(self) -> None:
        self._client.ping()
        self._pubsub = self._client.pubsub()
        self._stash = []

    def _close(self) -> None:
        if self._pubsub is not None:
            pubsub, self._pubsub = self._pubsub, None
            pubsub.close()

    def _listen(self, add: set[str], remove: set[str]) -> None:
        pubsub = self._require()
        if remove:
            pubsub.unsubscribe(*remove)
        if add:
            pubsub.subscribe(*add)
            # Wait for Redis to confirm, so a subscriber that reads the database next
            # cannot miss an event published in between.
            waiting, deadline = set(add), time.monotonic() + CONFIRM_TIMEOUT_S
            while waiting and (remaining := deadline - time.monotonic()) > 0:
                message = pubsub.get_message(timeout=remaining)
                if message is None:
                    continue
                if message["type"] == "subscribe":
                    waiting.discard(message["channel"])
                elif message["type"] == "message":
                    self._stash.append((message["channel"], message["data"]))
            if waiting:
                raise BrokerUnavailable(f"Redis did not confirm {len(waiting)} subscriptions")

    def _receive(self, timeout: float) -> Iterator[tuple[str, str]]:
        stash, self._stash = self._stash, []
        yield from stash
        pubsub = self._require()
        if not pubsub.subscribed:
            gevent.sleep(timeout)  # nothing to listen to yet
            return
        message = pubsub.get_message(timeout=timeout)
        while message is not None:
            if message["type"] == "message":
                yield message["channel"], message["data"]
            message = pubsub.get_message(timeout=0)

    def _send(self, items: list[tuple[str, str]]) -> None:
        if len(items) == 1:
            self._publisher.publish(*items[0])
            return
        with self._publisher.pipeline(transaction=False) as pipe:
            for name, payload in items:
                pipe.publish(name, payload)
            pipe.execute()

    def _require(self):
        if self._pubsub is None:
            raise BrokerUnavailable("not connected")
        return self._pubsub

    def stop(self) -> None:
        super().stop()
        self._publisher.close()
