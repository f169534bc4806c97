"""Requests per minute per key: a token bucket in this process (one API process: `serve` on SQLite)."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from kandinsky_serve.domain.errors import ErrorCode, ServeError


class MemoryRateLimiter:
    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.capacity = float(per_minute)
        self.refill = per_minute / 60.0  # tokens per second
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, when)
        self._lock = threading.Lock()

    def check(self, key: str) -> None:
        """Takes one token for key, or raises rate_limited with the seconds until one is back."""
        if self.capacity <= 0:
            return
        with self._lock:
            now = self.clock()
            tokens, then = self._buckets.get(key, (self.capacity, now))
            tokens = min(self.capacity, tokens + (now - then) * self.refill)
            if tokens < 1.0:
                wait = (1.0 - tokens) / self.refill
                self._buckets[key] = (tokens, now)
                raise ServeError(
                    ErrorCode.RATE_LIMITED,
                    f"Rate limit reached: {self.capacity:g} jobs a minute; retry in {math.ceil(wait)} s.",
                    retry_after=math.ceil(wait),
                )
            self._buckets[key] = (tokens - 1.0, now)
