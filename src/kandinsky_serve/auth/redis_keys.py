"""API keys and per-key request rates in Redis, for API nodes on several machines."""

from __future__ import annotations

import hmac
import logging
import math
from datetime import datetime
from typing import Any, cast

import redis

from kandinsky_serve.auth.keys import DUMMY_HASH, ApiKey, key_id_of, new_key, secret_hash
from kandinsky_serve.domain.errors import ErrorCode, ServeError

log = logging.getLogger(__name__)

# A token bucket on Redis's own clock (TIME), so API nodes with skewed clocks agree.
_BUCKET = """
local capacity, refill = tonumber(ARGV[1]), tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens, at = tonumber(b[1]) or capacity, tonumber(b[2]) or now
tokens = math.min(capacity, tokens + (now - at) * refill)
local wait = 0
if tokens < 1 then wait = (1 - tokens) / refill else tokens = tokens - 1 end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('EXPIRE', KEYS[1], math.ceil(capacity / refill) + 60)
return tostring(wait)
"""


class RedisKeyStore:
    def __init__(self, url: str, prefix: str = "ks") -> None:
        self._redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=10, socket_connect_timeout=5)
        self._p = f"{prefix}:"

    def create(
        self, name: str, credits: float | None, *, max_jobs: int | None = None, rate_limit: int | None = None
    ) -> tuple[ApiKey, str]:
        key, secret = new_key(name, credits, max_jobs, rate_limit)
        key_id = key.id
        fields: dict[Any, Any] = {
            "name": name,
            "hash": secret_hash(secret),
            "created_at": key.created_at.isoformat(),
            "revoked": "0",
        }
        if credits is not None:
            fields["credits"] = repr(credits)
        # absent fields mean the server's defaults, as for keys created before these existed
        if max_jobs is not None:
            fields["max_jobs"] = str(max_jobs)
        if rate_limit is not None:
            fields["rate_limit"] = str(rate_limit)
        pipe = self._redis.pipeline()
        pipe.hset(f"{self._p}key:{key_id}", mapping=fields)
        pipe.sadd(f"{self._p}keys", key_id)
        pipe.execute()
        return key, secret

    def verify(self, secret: str) -> ApiKey | None:
        row = self._row(key_id_of(secret))
        matches = hmac.compare_digest(secret_hash(secret), row.get("hash", DUMMY_HASH))
        if not row or not matches or row["revoked"] == "1":
            return None
        return _key(key_id_of(secret), row)

    def list(self) -> list[ApiKey]:
        ids = cast(set[str], self._redis.smembers(f"{self._p}keys"))
        return sorted((_key(i, row) for i in ids if (row := self._row(i))), key=lambda k: k.created_at)

    def _row(self, key_id: str) -> dict[str, str]:
        # decode_responses=True: redis-py's types do not know that replies are str then
        return cast(dict[str, str], self._redis.hgetall(f"{self._p}key:{key_id}"))

    def revoke(self, key_id: str) -> bool:
        where = f"{self._p}key:{key_id}"
        if self._redis.hget(where, "revoked") != "0":
            return False
        self._redis.hset(where, "revoked", "1")
        return True

    def any_created(self) -> bool:
        # revoked keys stay in the set (revoke only marks them), so this is "ever created"
        return bool(self._redis.exists(f"{self._p}keys"))


def _key(key_id: str, row: dict[str, str]) -> ApiKey:
    credits = float(row["credits"]) if "credits" in row else None
    return ApiKey(
        key_id,
        row["name"],
        credits,
        datetime.fromisoformat(row["created_at"]),
        row["revoked"] == "1",
        max_jobs=int(row["max_jobs"]) if "max_jobs" in row else None,
        rate_limit=int(row["rate_limit"]) if "rate_limit" in row else None,
    )


class RedisRateLimiter:
    def __init__(self, url: str, per_minute: int, prefix: str = "ks") -> None:
        self._redis = redis.Redis.from_url(url, decode_responses=True, socket_timeout=2, socket_connect_timeout=2)
        self._bucket = self._redis.register_script(_BUCKET)
        self._p = f"{prefix}:rate:"
        self.capacity = per_minute

    def check(self, key: str, per_minute: int | None = None) -> None:
        capacity = self.capacity if per_minute is None else per_minute
        if capacity <= 0:
            return
        try:
            wait = float(self._bucket(keys=[self._p + key], args=[capacity, capacity / 60.0]))
        except redis.RedisError:
            # fail open: a limiter outage must not take the API down with it
            log.warning("rate limiter unreachable; letting the request through")
            return
        if wait > 0:
            raise ServeError(
                ErrorCode.RATE_LIMITED,
                f"Rate limit reached: {capacity} jobs a minute; retry in {math.ceil(wait)} s.",
                retry_after=math.ceil(wait),
            )
