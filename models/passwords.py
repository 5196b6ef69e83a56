"""Password hashing: Argon2id (argon2-cffi), off the event loop, the same cost for strangers.

Hashing is memory-hard on purpose (64 MiB and about a tenth of a second by default); under
gevent it runs in the hub's thread pool (argon2-cffi releases the GIL), so the worker's
streams go on meanwhile. A name nobody has is checked against a dummy hash of the same cost,
so a wrong name takes as long as a wrong password.
"""

from __future__ import annotations

import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError


class Passwords:
    """Hash and check passwords with the configured Argon2id cost; one per app."""

    def __init__(self, *, memory_kib: int, time_cost: int, parallelism: int) -> None:
        if parallelism < 1 or time_cost < 1 or memory_kib < 8 * parallelism:
            raise ValueError("PASSWORD_HASH_PARALLELISM and PASSWORD_HASH_TIME_COST must be at "
                             "least 1, and PASSWORD_HASH_MEMORY_KIB at least 8 x the "
                             f"parallelism (got {memory_kib}, {time_cost}, {parallelism})")
        self.hasher = PasswordHasher(memory_cost=memory_kib, time_cost=time_cost,
                                     parallelism=parallelism)
        self._dummy: str | None = None

    @classmethod
    def from_config(cls, config) -> Passwords:
        return cls(memory_kib=config["PASSWORD_HASH_MEMORY_KIB"],
                   time_cost=config["PASSWORD_HASH_TIME_COST"],
                   parallelism=config["PASSWORD_HASH_PARALLELISM"])

    def hash(self, password: str) -> str:
        return _off_loop(self.hasher.hash, password)

    def verify(self, stored: str | None, password: str) -> bool:
        """True when `password` matches `stored`; with no stored hash (an unknown name, a
        proxy's user) the same work is done and the answer is False."""
        if stored is None:
            _off_loop(self._check, self._dummy_hash(), password)
            return False
        return _off_loop(self._check, stored, password)

    def needs_rehash(self, stored: str) -> bool:
        """True when `stored` was made with another cost than the configured one."""
        try:
            return self.hasher.check_needs_rehash(stored)
        except InvalidHashError:
            return True

    def _check(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def _dummy_hash(self) -> str:
        if self._dummy is None:
            self._dummy = self.hasher.hash(secrets.token_urlsafe(16))
        return self._dummy


def _off_loop(function, *args):
    """Run `function` in gevent's thread pool when the process is monkey-patched (a
    gunicorn gevent worker), else right here."""
    try:
        from gevent import get_hub
        from gevent.monkey import is_module_patched
    except ImportError:  # pragma: no cover - gevent is a requirement
        return function(*args)
    if not is_module_patched("threading"):
        return function(*args)
    return get_hub().threadpool.apply(function, args)
