"""The outbox and the deadlines in SQLite (layout in sqlite_schema.py, version 3).

`queue` runs inside the transaction of the job's change that calls for the deliveries, so a change
and its webhooks are stored together or not at all. The rest are the outbox's own transactions,
taken by SqliteJobStore.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Sequence
from datetime import datetime, timedelta

from kandinsky_serve.domain import transitions
from kandinsky_serve.domain.job import WebhookEvent
from kandinsky_serve.domain.transitions import Delivery
from kandinsky_serve.store.codec import from_micros, micros
from kandinsky_serve.store.outbox import Claimed
from kandinsky_serve.store.sqlite_rows import SELECT_FACTS, read_record

_CHUNK = 100


def queue(conn: sqlite3.Connection, found: Sequence[Delivery], now: datetime) -> None:
    """Deliveries a change calls for; one already pending is marked changed instead (see outbox.py)."""
    at = micros(now)
    conn.executemany(
        """INSERT INTO outbox (key, job_id, event, url, created, due, attempts, rev, token)
        VALUES (?, ?, ?, ?, ?, ?, 0, 0, NULL) ON CONFLICT (key) DO UPDATE SET rev = rev + 1""",
        [(d.key, d.job_id, d.event.value, d.url, at, at) for d in found],
    )


def any_due(conn: sqlite3.Connection, now: datetime) -> bool:
    return conn.execute("SELECT 1 FROM outbox WHERE due <= ? LIMIT 1", (micros(now),)).fetchone() is not None


def claim(conn: sqlite3.Connection, now: datetime, claim_seconds: float) -> Claimed | None:
    row = conn.execute(
        "SELECT key, job_id, event, url, attempts, created, rev FROM outbox WHERE due <= ? ORDER BY due, rowid LIMIT 1",
        (micros(now),),
    ).fetchone()
    if row is None:
        return None
    key, job_id, event, url, attempts, created, rev = row
    until = now + timedelta(seconds=claim_seconds)
    token = os.urandom(8).hex()
    conn.execute(
        "UPDATE outbox SET due = ?, attempts = attempts + 1, token = ? WHERE key = ?", (micros(until), token, key)
    )
    return Claimed(
        key=key,
        job_id=job_id,
        event=WebhookEvent(event),
        url=url,
        attempts=int(attempts) + 1,
        created_at=from_micros(created),
        rev=int(rev),
        token=token,
        claimed_until=until,
    )


def done(conn: sqlite3.Connection, claimed: Claimed, now: datetime) -> None:
    row = conn.execute("SELECT rev FROM outbox WHERE key = ? AND token = ?", (claimed.key, claimed.token)).fetchone()
    if row is None:
        return  # the claim ran out and another sender has it (or had it)
    if int(row[0]) == claimed.rev:
        conn.execute("DELETE FROM outbox WHERE key = ?", (claimed.key,))
    else:  # the job changed again meanwhile: its newer state is still to be sent
        conn.execute("UPDATE outbox SET due = ?, attempts = 0, token = NULL WHERE key = ?", (micros(now), claimed.key))


def retry(conn: sqlite3.Connection, claimed: Claimed, at: datetime) -> None:
    conn.execute(
        "UPDATE outbox SET due = ?, token = NULL WHERE key = ? AND token = ?", (micros(at), claimed.key, claimed.token)
    )


def pending(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT COUNT(*) FROM outbox").fetchone()[0])


def overdue(conn: sqlite3.Connection, now: datetime) -> list[str]:
    """The ids of the jobs a deadline cancels now, oldest deadline first: the index chooses them,
    transitions.overdue decides."""
    rows = conn.execute(
        f"""{SELECT_FACTS} WHERE j.cancel_at IS NOT NULL AND j.cancel_requested = 0
        AND j.state IN ('queued', 'running') AND j.cancel_at <= ? ORDER BY j.cancel_at LIMIT ?""",
        (micros(now), _CHUNK),
    ).fetchall()
    jobs = (read_record(*row).job for row in rows)
    return [job.id for job in jobs if transitions.overdue(job, now)]
