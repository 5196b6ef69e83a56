"""Admission: how many replies a worker generates at once, and the queue of the rest.

Past its capacity a worker does not start another generation beside the others (which
would slow every stream at once): the reply waits in this worker's queue, its tab shows
how many are ahead, and it starts as soon as a generation ends. Capacity is a number of
concurrent generations and, measured, the event loop's lag: a loop that wakes late is
already overloaded whatever the count says.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from .periodic import Periodic


class LoopLag:
    """How late this worker's event loop wakes a sleeping greenlet (smoothed, seconds)."""

    def __init__(self, interval_s: float = 0.05, *, then: Callable[[], object] = lambda: None,
                 clock: Callable[[], float] = time.monotonic, smoothing: float = 0.2) -> None:
        self.interval_s = interval_s
        self.lag_s = 0.0
        self._then = then
        self._clock = clock
        self._smoothing = smoothing
        self._last: float | None = None
        self._periodic = Periodic(self._look, interval_s, name="event loop lag")

    def start(self) -> None:
        self._last = self._clock()
        self._periodic.start()

    def stop(self) -> None:
        self._periodic.stop()

    def _look(self) -> None:
        now = self._clock()
        if self._last is not None:
            self.record(now - self._last - self.interval_s)
        self._last = now
        self._then()

    def record(self, late_s: float) -> None:
        self.lag_s += self._smoothing * (max(0.0, late_s) - self.lag_s)


class Admission:
    """Slots for generations in this worker, and the FIFO queue of replies waiting for one."""

    def __init__(self, *, max_running: int, max_queued: int, max_lag_s: float,
                 running: Callable[[], int], lag: LoopLag) -> None:
        self.max_running = max_running  # 0: no limit
        self.max_queued = max_queued
        self.max_lag_s = max_lag_s  # 0: lag not considered
        self._running = running
        self.lag = lag
        self.waiting: deque[int] = deque()

    def has_slot(self) -> bool:
        if self.max_running and self._running() >= self.max_running:
            return False
        # An overloaded loop takes no new work, but an idle worker always takes one.
        return not (self.max_lag_s and self.lag.lag_s > self.max_lag_s and self._running())

    def full(self) -> bool:
        """Too many waiting already: refuse new prompts (503) rather than queue them."""
        return len(self.waiting) >= self.max_queued and not self.has_slot()

    def enqueue(self, message_id: int) -> None:
        if message_id not in self.waiting:
            self.waiting.append(message_id)

    def ahead_of(self, message_id: int) -> int | None:
        """How many wait before `message_id` here; None when it is not waiting here."""
        try:
            return self.waiting.index(message_id)
        except ValueError:
            return None

    def next_waiting(self) -> int | None:
        return self.waiting.popleft() if self.waiting and self.has_slot() else None
