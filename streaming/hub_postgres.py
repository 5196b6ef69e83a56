"""The PostgreSQL LISTEN/NOTIFY backend: many workers and hosts with no other server.

One autocommit connection per worker listens; another publishes. Payloads are small JSON
offsets (NOTIFY allows under 8,000 bytes), never text.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator

import psycopg
from psycopg import sql

from .hub_broker import BrokerHub, BrokerUnavailable
from .watcher import DatabaseWatcher

# One transaction for a batch. It need not wait for its WAL flush (synchronous_commit off
# for this transaction only): events are wake-ups that the rows themselves back.
NOTIFY_MANY = ("SELECT set_config('synchronous_commit', 'off', true), pg_notify(c, p) "
               "FROM unnest(%s::text[], %s::text[]) AS t(c, p)")


class PostgresHub(BrokerHub):
    """Events travel as NOTIFY payloads on `<prefix>thread:<id>` channels."""

    name = "postgres"

    def __init__(self, conninfo: str, *, watcher: DatabaseWatcher | None,
                 prefix: str = "relay:", connect_timeout_s: int = 5, **options) -> None:
        super().__init__(watcher=watcher, prefix=prefix, **options)
        self.conninfo = conninfo
        self.connect_timeout_s = connect_timeout_s
        self._listener: psycopg.Connection | None = None
        self._publisher: psycopg.Connection | None = None
        self._publish_lock = threading.Lock()  # a gevent lock once the worker is patched
        self._publisher_stale = False

    def _open(self) -> psycopg.Connection:
        return psycopg.connect(self.conninfo, autocommit=True,
                               connect_timeout=self.connect_timeout_s,
                               application_name="relay-hub")

    def _connect(self) -> None:
        self._listener = self._open()

    def _close(self) -> None:
        # A connection is closed only where nobody waits on its socket: libpq closes the fd
        # in C, and a greenlet whose wait on that fd is not yet registered with the event
        # loop would make libev abort the whole worker. The listener is used only by the
        # listener greenlet (which calls this, or is dead); a send holds the publish lock.
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()
        if self._publish_lock.acquire(blocking=False):
            try:
                publisher, self._publisher = self._publisher, None
                self._publisher_stale = False
                if publisher is not None:
                    publisher.close()
            finally:
                self._publish_lock.release()
        else:
            self._publisher_stale = True  # the send in flight's connection: it closes it

    def _listen(self, add: set[str], remove: set[str]) -> None:
        conn = self._require()
        for name in remove:
            conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(name)))
        for name in add:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(name)))

    def _receive(self, timeout: float) -> Iterator[tuple[str, str]]:
        for notify in self._require().notifies(timeout=timeout):
            yield notify.channel, notify.payload

    def _send(self, items: list[tuple[str, str]]) -> None:
        with self._publish_lock:
            conn = self._publisher
            if conn is not None and (self._publisher_stale or conn.closed):
                self._publisher = None
                conn.close()
                conn = None
            self._publisher_stale = False
            if conn is None:
                conn = self._publisher = self._open()
            try:
                conn.execute(NOTIFY_MANY, ([n for n, _ in items], [p for _, p in items]))
            except psycopg.Error:
                if self._publisher is conn:
                    self._publisher = None
                conn.close()
                raise

    def _require(self) -> psycopg.Connection:
        if self._listener is None or self._listener.closed:
            raise BrokerUnavailable("not connected")
        return self._listener
