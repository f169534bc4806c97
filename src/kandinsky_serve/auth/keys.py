"""API keys: stored as SHA-256 hashes, checked in constant time, shown in full only once.

A key looks like `ks_<id>_<secret>`; the id finds the row, the hash of the whole key must match.
Keys are high-entropy random strings, so a fast hash is the right one (no password stretching).
A key may carry its own limits (jobs in flight, submissions a minute); None means the server's.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    credits: float | None  # None: unlimited
    created_at: datetime
    revoked: bool = False
    max_jobs: int | None = None  # queued + running jobs at once; None: KS_MAX_JOBS_PER_KEY
    rate_limit: int | None = None  # submissions a minute, 0 for no limit; None: KS_RATE_LIMIT_PER_MINUTE


class RateLimiter(Protocol):
    def check(self, key: str, per_minute: int | None = None) -> None:
        """Counts one request of key against per_minute (None: the limiter's default; 0: no limit),
        or raises ServeError rate_limited with retry_after."""
        ...


class KeyStore(Protocol):
    def create(
        self, name: str, credits: float | None, *, max_jobs: int | None = None, rate_limit: int | None = None
    ) -> tuple[ApiKey, str]:
        """A new key and its secret, which is not kept and cannot be shown again."""
        ...

    def verify(self, secret: str) -> ApiKey | None:
        """The key a secret belongs to, or None (unknown, malformed or revoked)."""
        ...

    def list(self) -> list[ApiKey]: ...

    def revoke(self, key_id: str) -> bool: ...

    def any_created(self) -> bool:
        """Whether a key was ever created here, revoked ones included: once a server has had keys,
        revoking the last one must not open it to whoever can reach it."""
        ...


def new_key(name: str, credits: float | None, max_jobs: int | None, rate_limit: int | None) -> tuple[ApiKey, str]:
    if max_jobs is not None and max_jobs < 1:
        raise ValueError(f"max_jobs must be at least 1, not {max_jobs}")
    if rate_limit is not None and rate_limit < 0:
        raise ValueError(f"rate_limit must be 0 (no limit) or more, not {rate_limit}")
    key_id = secrets.token_hex(4)
    secret = f"ks_{key_id}_{secrets.token_urlsafe(24)}"
    return ApiKey(key_id, name, credits, datetime.now(UTC), max_jobs=max_jobs, rate_limit=rate_limit), secret


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id_of(secret: str) -> str:
    """The id part of `ks_<id>_<secret>`, or "" for anything else."""
    parts = secret.split("_")
    return parts[1] if len(parts) >= 3 and parts[0] == "ks" else ""


_SELECT = "SELECT id, name, credits, created_at, revoked, max_jobs, rate_limit, hash FROM keys"
# columns added after the first release, with their types: a key database made before them gains them
_ADDED_COLUMNS = {"max_jobs": "INTEGER", "rate_limit": "INTEGER"}


class SqliteKeyStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._path = path
        self._local = threading.local()
        with self._conn() as conn:
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute(
                """CREATE TABLE IF NOT EXISTS keys (
                    id TEXT PRIMARY KEY, name TEXT NOT NULL, hash TEXT NOT NULL, credits REAL,
                    created_at TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0,
                    max_jobs INTEGER, rate_limit INTEGER)"""
            )
        self._migrate()

    def _migrate(self) -> None:
        conn = self._conn()
        present = {row[1] for row in conn.execute("PRAGMA table_info(keys)")}
        for column, kind in _ADDED_COLUMNS.items():
            if column in present:
                continue
            try:
                with conn:
                    conn.execute(f"ALTER TABLE keys ADD COLUMN {column} {kind}")
            except sqlite3.OperationalError as error:
                # another process (the server, a `keys` command) added it first
                if "duplicate column" not in str(error):
                    raise

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=5)
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
        return conn

    def create(
        self, name: str, credits: float | None, *, max_jobs: int | None = None, rate_limit: int | None = None
    ) -> tuple[ApiKey, str]:
        key, secret = new_key(name, credits, max_jobs, rate_limit)
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO keys (id, name, hash, credits, created_at, max_jobs, rate_limit)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (
                    key.id,
                    key.name,
                    secret_hash(secret),
                    key.credits,
                    key.created_at.isoformat(),
                    key.max_jobs,
                    key.rate_limit,
                ),
            )
        return key, secret

    def verify(self, secret: str) -> ApiKey | None:
        row = self._conn().execute(f"{_SELECT} WHERE id = ?", (key_id_of(secret),)).fetchone()
        # compare even when there is no row, so timing does not tell whether an id exists
        matches = hmac.compare_digest(secret_hash(secret), row[-1] if row else DUMMY_HASH)
        if row is None or not matches:
            return None
        key = _key(row)
        return None if key.revoked else key

    def list(self) -> list[ApiKey]:
        return [_key(row) for row in self._conn().execute(f"{_SELECT} ORDER BY created_at")]

    def revoke(self, key_id: str) -> bool:
        with self._conn() as conn:
            return conn.execute("UPDATE keys SET revoked = 1 WHERE id = ? AND revoked = 0", (key_id,)).rowcount == 1

    def any_created(self) -> bool:
        return self._conn().execute("SELECT 1 FROM keys LIMIT 1").fetchone() is not None


def _key(row: tuple[Any, ...]) -> ApiKey:
    key_id, name, credits, created_at, revoked, max_jobs, rate_limit = row[:7]
    return ApiKey(key_id, name, credits, datetime.fromisoformat(created_at), bool(revoked), max_jobs, rate_limit)
