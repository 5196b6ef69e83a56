"""Whether the model can answer, asked cheaply and remembered for a few seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any


class ModelHealth:
    """The provider's reachability, probed at most once per `ttl_s` in this worker.

    A provider with a `check(timeout)` method (returning None when healthy, or a short
    human reason) is probed; one without it (the offline demo model) is always healthy.
    """

    def __init__(self, provider: Any, *, ttl_s: float = 5.0, timeout_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.provider = provider
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self._clock = clock
        self._lock = threading.Lock()  # one probe at a time; the others read its answer
        self._checked_at: float | None = None
        self._reason: str | None = None

    def status(self) -> dict[str, Any]:
        """{ok, message, provider, model, label}; probes when the last answer is stale."""
        with self._lock:
            now = self._clock()
            if self._checked_at is None or now - self._checked_at >= self.ttl_s:
                check = getattr(self.provider, "check", None)
                self._reason = check(self.timeout_s) if check else None
                self._checked_at = self._clock()
            reason = self._reason
        return {"ok": reason is None, "message": reason or "The model is ready.",
                "provider": self.provider.name, "model": self.provider.model,
                "label": self.provider.label}
