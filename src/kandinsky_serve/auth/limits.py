"""Requests per minute per key: a token bucket in this process (one API process: `serve` on SQLite).

Each key's bucket holds its own rate (a key may have one of its own), or the server's default."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from kandinsky_serve.domain.errors import ErrorCode, ServeError


class MemoryRateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)
        self._lock = threading.Lock()

    def check(self, key: str, per_minute: int | None = None) -> None:
        """Takes one token for key, or raises rate_limited with the seconds until one is back."""
        capacity = self.capacity if per_minute is None else float(per_minute)
        if capacity <= 0:
            return
        refill = capacity / 60.0
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(key, (capacity, now))
            tokens = min(capacity, tokens + (now - then) * refill)
            if tokens < 1.0:
                wait = (1.0 - tokens) / refill
                self._buckets[key] = (tokens, now)
                raise ServeError(
                    ErrorCode.RATE_LIMITED,
                    f"Rate limit reached: {capacity:g} jobs a minute; retry in {math.ceil(wait)} s.",
                    retry_after=math.ceil(wait),
                )
            self._buckets[key] = (tokens - 1.0, now)
