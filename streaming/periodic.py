"""A greenlet that does one piece of background work every interval, until stopped."""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

import gevent
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeout

log = logging.getLogger(__name__)


class Periodic:
    """Calls `work` every `interval_s` seconds (spread by `jitter`, a fraction of it).

    A failing call is logged and the next one comes as usual: background work such as
    sweeping or watching must outlive a database that is briefly away.
    """

    def __init__(self, work: Callable[[], object], interval_s: float, *, name: str,
                 jitter: float = 0.0) -> None:
        self._work = work
        self.interval_s = interval_s
        self.name = name
        self.jitter = jitter
        self._greenlet: gevent.Greenlet | None = None

    @property
    def running(self) -> bool:
        return self._greenlet is not None and not self._greenlet.dead

    def start(self) -> None:
        if not self.running:
            self._greenlet = gevent.spawn(self._run)

    def stop(self) -> None:
        if self._greenlet is not None:
            self._greenlet.kill(block=False)
            self._greenlet = None

    def _run(self) -> None:
        while True:
            gevent.sleep(self.interval_s * random.uniform(1 - self.jitter, 1 + self.jitter))
            try:
                self._work()
            except (DBAPIError, PoolTimeout) as err:
                # A database busy or away is expected now and then: no traceback for it.
                log.warning("%s failed: %s", self.name, getattr(err, "orig", None) or err)
            except Exception as err:
                log.warning("%s failed: %s", self.name, err, exc_info=True)
