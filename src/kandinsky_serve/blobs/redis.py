"""RedisBlobStore: blobs in Redis, for API nodes and workers on machines that share no disk.

Each blob is one hash, `<prefix>:blob:<key>`, with its bytes and its content type, replaced in one
MULTI so that a reader sees the old pair or the new one. With `ttl_seconds` (the retention), Redis
drops blobs on its own when they expire, so a lost expiry pass leaves no images behind forever.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from kandinsky_serve.blobs.protocol import Blob, check_key
from kandinsky_serve.redis_server import check_server, connect


class RedisBlobStore:
    """A BlobStore in Redis; keys follow the same rules as LocalBlobStore's, so either can replace the other."""

    def __init__(self, url: str, *, prefix: str = "ks", ttl_seconds: float | None = None) -> None:
        if ttl_seconds is not None and ttl_seconds <= 0:
            raise ValueError(f"ttl_seconds must be positive, not {ttl_seconds}")
        self._redis = connect(url, decode_responses=False)
        self._p = f"{prefix}:blob:"
        self._ttl_ms = None if ttl_seconds is None else max(int(ttl_seconds * 1000), 1)
        try:
            check_server(self._redis)
        except BaseException:
            self._redis.close()
            raise

    def put(self, key: str, data: bytes, content_type: str) -> None:
        name = self._name(key)
        pipe = self._redis.pipeline(transaction=True)
        pipe.hset(name, mapping={"data": data, "type": content_type.encode()})
        if self._ttl_ms is None:
            pipe.persist(name)
        else:
            pipe.pexpire(name, self._ttl_ms)
        pipe.execute()

    def get(self, key: str) -> Blob | None:
        data, content_type = cast(list[Any], self._redis.hmget(self._name(key), ["data", "type"]))
        if data is None or content_type is None:
            return None
        return Blob(data=bytes(data), content_type=bytes(content_type).decode())

    def delete(self, keys: Sequence[str]) -> None:
        names = [self._name(key) for key in keys]  # all checked before any is removed
        if names:
            self._redis.delete(*names)

    def close(self) -> None:
        self._redis.close()

    def _name(self, key: str) -> str:
        check_key(key)
        return self._p + key
