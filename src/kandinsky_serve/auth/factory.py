"""Opens the key store and the rate limiter the settings call for: SQLite and memory on one
machine, Redis when API nodes share one."""

from __future__ import annotations

from kandinsky_serve.auth.keys import KeyStore, RateLimiter, SqliteKeyStore
from kandinsky_serve.auth.limits import MemoryRateLimiter
from kandinsky_serve.settings import Settings


def open_keys(settings: Settings) -> KeyStore:
    if settings.store_url is not None:
        from kandinsky_serve.auth.redis_keys import RedisKeyStore

        return RedisKeyStore(settings.store_url, settings.redis_prefix)
    return SqliteKeyStore(settings.keys_path)


def open_limiter(settings: Settings) -> RateLimiter:
    if settings.store_url is not None:
        from kandinsky_serve.auth.redis_keys import RedisRateLimiter

        return RedisRateLimiter(settings.store_url, settings.rate_limit_per_minute, settings.redis_prefix)
    return MemoryRateLimiter(settings.rate_limit_per_minute)
