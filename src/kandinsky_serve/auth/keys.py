"""API keys: stored as SHA-256 hashes, checked in constant time, shown in full only once.

A key looks like `ks_<id>_<secret>`; the id finds the row, the hash of the whole key must match.
Keys are high-entropy random strings, so a fast hash is the right one (no password stretching).
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
from typing import Protocol

DUMMY_HASH = hashlib.sha256(b"no such key").hexdigest()


@dataclass(frozen=True)
class ApiKey:
    id: str
    name: str
    credits: float | None  # None: unlimited
    created_at: datetime
    revoked: bool = False


class RateLimiter(Protocol):
    def check(self, key: str) -> None:
        """Counts one request of key, or raises ServeError rate_limited with retry_after."""
        ...


class KeyStore(Protocol):
    def create(self, name: str, credits: float | None) -> tuple[ApiKey, str]:
        """A new key and its secret, which is not kept and cannot be shown again."""
        ...

    def verify(self, secret: str) -> ApiKey | None:
        """The key a secret belongs to, or None (unknown, malformed or revoked)."""
        ...

    def list(self) -> list[ApiKey]: ...

    def revoke(self, key_id: str) -> bool: ...

    def any_active(self) -> bool: ...


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def key_id_of(secret: str) -> str:
    """The id part of `ks_<id>_<secret>`, or "" for anything else."""
    parts = secret.split("_")
    return parts[1] if len(parts) >= 3 and parts[0] == "ks" else ""


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
                    created_at TEXT NOT NULL, revoked INTEGER NOT NULL DEFAULT 0)"""
            )

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self._path, timeout=5)
            conn.execute("PRAGMA synchronous = FULL")
            self._local.conn = conn
        return conn

    def create(self, name: str, credits: float | None) -> tuple[ApiKey, str]:
        key_id = secrets.token_hex(4)
        secret = f"ks_{key_id}_{secrets.token_urlsafe(24)}"
        key = ApiKey(key_id, name, credits, datetime.now(UTC))
        with self._conn() as conn:
            conn.execute(
                "INSERT INTO keys (id, name, hash, credits, created_at) VALUES (?, ?, ?, ?, ?)",
                (key.id, key.name, secret_hash(secret), key.credits, key.created_at.isoformat()),
            )
        return key, secret

    def verify(self, secret: str) -> ApiKey | None:
        parts = secret.split("_")
        key_id = parts[1] if len(parts) >= 3 and parts[0] == "ks" else ""
        row = (
            self._conn()
            .execute("SELECT id, name, hash, credits, created_at, revoked FROM keys WHERE id = ?", (key_id,))
            .fetchone()
        )
        # compare even when there is no row, so timing does not tell whether an id exists
        matches = hmac.compare_digest(secret_hash(secret), row[2] if row else DUMMY_HASH)
        if row is None or not matches or row[5]:
            return None
        return ApiKey(row[0], row[1], row[3], datetime.fromisoformat(row[4]))

    def list(self) -> list[ApiKey]:
        rows = self._conn().execute("SELECT id, name, credits, created_at, revoked FROM keys ORDER BY created_at")
        return [ApiKey(r[0], r[1], r[2], datetime.fromisoformat(r[3]), bool(r[4])) for r in rows]

    def revoke(self, key_id: str) -> bool:
        with self._conn() as conn:
            return conn.execute("UPDATE keys SET revoked = 1 WHERE id = ? AND revoked = 0", (key_id,)).rowcount == 1

    def any_active(self) -> bool:
        return self._conn().execute("SELECT 1 FROM keys WHERE revoked = 0 LIMIT 1").fetchone() is not None
