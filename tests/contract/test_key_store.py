"""One suite for both KeyStores (SQLite, a real redis-server) and both rate limiters: keys, their own
limits, "ever created" surviving revocation, and a key database made before per-key limits."""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kandinsky_serve.auth.keys import KeyStore, RateLimiter, SqliteKeyStore, secret_hash
from kandinsky_serve.auth.limits import MemoryRateLimiter
from kandinsky_serve.auth.redis_keys import RedisKeyStore, RedisRateLimiter
from kandinsky_serve.domain.errors import ErrorCode, ServeError
from tests.redis_server import RedisServer


def _prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture(params=["sqlite", "redis"])
def keys(request: pytest.FixtureRequest, tmp_path: Path) -> KeyStore:
    if request.param == "sqlite":
        return SqliteKeyStore(tmp_path / "keys.db")
    server: RedisServer = request.getfixturevalue("redis_server")
    return RedisKeyStore(server.url, _prefix())


@pytest.fixture(params=["memory", "redis"])
def limiter(request: pytest.FixtureRequest) -> Iterator[RateLimiter]:
    if request.param == "memory":
        yield MemoryRateLimiter(60)
    else:
        server: RedisServer = request.getfixturevalue("redis_server")
        yield RedisRateLimiter(server.url, 60, _prefix())


def test_a_key_is_verified_by_its_whole_secret(keys: KeyStore) -> None:
    key, secret = keys.create("alice", 5.0)
    assert keys.verify(secret) == key
    assert keys.verify(secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert keys.verify(f"ks_{key.id}_") is None
    for placeholder in ("YOUR_API_KEY", "sk-local", "", "ks__x"):
        assert keys.verify(placeholder) is None


def test_limits_are_kept_with_the_key_and_none_means_the_servers(keys: KeyStore) -> None:
    plain, plain_secret = keys.create("plain", None)
    big, big_secret = keys.create("big", 100.0, max_jobs=12, rate_limit=0)
    assert (plain.max_jobs, plain.rate_limit) == (None, None)
    assert (big.max_jobs, big.rate_limit, big.credits) == (12, 0, 100.0)
    assert keys.verify(plain_secret) == plain
    assert keys.verify(big_secret) == big
    assert keys.list() == [plain, big]
    with pytest.raises(ValueError, match="max_jobs"):
        keys.create("zero", None, max_jobs=0)
    with pytest.raises(ValueError, match="rate_limit"):
        keys.create("negative", None, rate_limit=-1)


def test_keys_ever_created_count_after_every_one_is_revoked(keys: KeyStore) -> None:
    assert not keys.any_created()
    key, secret = keys.create("only", None)
    assert keys.any_created()
    assert keys.revoke(key.id)
    assert not keys.revoke(key.id)  # once
    assert keys.verify(secret) is None
    assert [k.revoked for k in keys.list()] == [True]
    assert keys.any_created()  # what keeps a server that had keys closed


def test_a_key_database_from_before_per_key_limits_keeps_working(tmp_path: Path) -> None:
    path = tmp_path / "keys.db"
    with sqlite3.connect(path) as conn:  # the schema as the first release created it
        conn.execute(
            """CREATE TABLE keys (
                id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL, credits REAL,
                created_at TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)"""
        )
    secret = "ks_0123abcd_old-secret-old-secret"
    with sqlite3.connect(path) as conn:
        conn.execute(
            "INSERT INTO keys (id, name, hash, credits, created_at) VALUES (?, ?, ?, ?, ?)",
            ("0123abcd", "old", secret_hash(secret), 7.0, "2025-01-01T00:00:00+00:00"),
        )
    keys = SqliteKeyStore(path)
    old = keys.verify(secret)
    assert old is not None and (old.name, old.credits, old.max_jobs, old.rate_limit) == ("old", 7.0, None, None)
    new, new_secret = keys.create("new", None, max_jobs=3, rate_limit=5)
    assert keys.verify(new_secret) == new
    assert SqliteKeyStore(path).list() == [old, new]  # opening it again migrates nothing twice


def test_a_keys_own_rate_replaces_the_default(limiter: RateLimiter) -> None:
    for _ in range(2):
        limiter.check("two", 2)
    with pytest.raises(ServeError) as refused:
        limiter.check("two", 2)
    assert refused.value.code is ErrorCode.RATE_LIMITED
    assert refused.value.retry_after is not None and 1 <= refused.value.retry_after <= 30
    for _ in range(5):  # another key's bucket, at the default 60 a minute
        limiter.check("default")
    for _ in range(100):  # 0: no limit
        limiter.check("unlimited", 0)
