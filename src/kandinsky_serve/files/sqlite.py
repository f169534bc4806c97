"""SqliteFileIndex: upload records in their own SQLite file beside the job database.

A file of its own, so that uploads never contend for the job queue's write lock. Ids sort by
creation time (see `new_job_id`), so "newest first" is "highest id first" and an id is the cursor.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path

from kandinsky_serve.files.model import FilePage, UploadedFile

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS files (
        id TEXT PRIMARY KEY,
        owner TEXT NOT NULL,
        expires_at INTEGER NOT NULL,
        record TEXT NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS files_by_owner ON files (owner, id)",
    "CREATE INDEX IF NOT EXISTS files_by_expiry ON files (expires_at)",
)


def _micros(moment: datetime) -> int:
    return round(moment.astimezone(UTC).timestamp() * 1_000_000)


class SqliteFileIndex:
    """One connection guarded by a lock: uploads are few next to job reads, and each query is short."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(path, timeout=5.0, isolation_level=None, check_same_thread=False)
        self._conn.execute("PRAGMA journal_mode = WAL")
        self._conn.execute("PRAGMA busy_timeout = 5000")
        for statement in _SCHEMA:
            self._conn.execute(statement)

    def add(self, file: UploadedFile) -> None:
        with self._lock:
            self._conn.execute(
                "INSERT INTO files (id, owner, expires_at, record) VALUES (?, ?, ?, ?)",
                (file.id, file.owner, _micros(file.expires_at), file.model_dump_json()),
            )

    def get(self, file_id: str) -> UploadedFile | None:
        with self._lock:
            row = self._conn.execute("SELECT record FROM files WHERE id = ?", (file_id,)).fetchone()
        return UploadedFile.model_validate_json(row[0]) if row else None

    def page(self, owner: str, *, now: datetime, limit: int, cursor: str | None = None) -> FilePage:
        query = "SELECT record FROM files WHERE owner = ? AND expires_at > ?"
        args: list[object] = [owner, _micros(now)]
        if cursor:
            query += " AND id < ?"
            args.append(cursor)
        with self._lock:
            rows = self._conn.execute(f"{query} ORDER BY id DESC LIMIT ?", (*args, limit + 1)).fetchall()
        files = [UploadedFile.model_validate_json(row[0]) for row in rows[:limit]]
        return FilePage(files, files[-1].id if len(rows) > limit else None)

    def remove(self, file_id: str) -> bool:
        with self._lock:
            return self._conn.execute("DELETE FROM files WHERE id = ?", (file_id,)).rowcount > 0

    def expire(self, now: datetime) -> list[str]:
        with self._lock:
            rows = self._conn.execute("DELETE FROM files WHERE expires_at <= ? RETURNING id", (_micros(now),))
            return [row[0] for row in rows.fetchall()]

    def close(self) -> None:
        with self._lock:
            self._conn.close()
