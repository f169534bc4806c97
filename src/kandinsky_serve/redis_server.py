"""The Redis server every Redis backend shares (jobs, blobs, files, keys, the bus): how to connect,
and the server settings a queue needs."""

from __future__ import annotations

import logging
from typing import Any, cast

import redis

logger = logging.getLogger(__name__)

# No command the stores send blocks on the server, so a reply slower than this means a lost server.
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0


def connect(url: str, *, decode_responses: bool) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=decode_responses,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        health_check_interval=30,
    )


def check_server(client: redis.Redis) -> None:
    """Refuses a server that may evict keys (a queue that loses keys loses jobs), and warns when it
    does not log writes to disk (AOF), as a restart would then lose acknowledged jobs."""
    try:
        config = {text(k): text(v) for k, v in untyped(client.config_get("maxmemory-policy")).items()}
        config |= {text(k): text(v) for k, v in untyped(client.config_get("appendonly")).items()}
    except redis.ResponseError as exc:  # managed services often disable CONFIG
        logger.warning(
            "Cannot read the Redis server's settings (%s); make sure maxmemory-policy is noeviction "
            "and appendonly is yes.",
            exc,
        )
        return
    policy = config.get("maxmemory-policy", "")
    if policy != "noeviction":
        raise RuntimeError(
            f"The Redis server's maxmemory-policy is {policy!r}, so it may evict queued jobs; "
            "set it to noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf)."
        )
    if config.get("appendonly") != "yes":
        logger.warning(
            "The Redis server does not write an append-only file, so a restart loses the jobs of the "
            "last few minutes; set appendonly yes (and appendfsync everysec or always)."
        )


def untyped(reply: Any) -> Any:
    """redis-py types replies as `Awaitable | Any` for its sync and async clients alike; ours are sync."""
    return cast(Any, reply)


def text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
