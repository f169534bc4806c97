"""SqliteJobStore: the embedded JobStore, one SQLite file shared by the API and worker processes.

The settings (sqlite_schema.py) follow the reliability notes (B.4): WAL, so readers never wait for the
writer; synchronous=FULL for the writes a caller is told are stored (enqueue, cancel), so those survive a
power loss, and NORMAL for the rest, which a crash of the process cannot lose either; BEGIN IMMEDIATE for every
transaction that writes, because busy_timeout cannot rescue a transaction that read first and then
tries to write. Each thread has its own connection; processes share nothing but the file, so every
change (which job a worker gets, whether it still holds it) is read, decided and written inside one
write transaction. What a change makes of a job is decided by domain/transitions.py, as for Redis.

A job is JSON in rows (sqlite_rows.py): its request without input images, written at enqueue; the
whole request with its images, for a job that has some, apart, read by lease() only and deleted by
expiry; and the rest of the job, small and rewritten on every change. So reads (get, list_jobs,
cancel) never load an image. The columns beside the JSON serve the queries and are rewritten from
the Job in the same statement. `worker` and `lease_expires` exist only as columns: they name the
current lease holder and are cleared when the lease ends.

A change of a job with webhooks writes the deliveries it calls for to the `outbox` table in its own
transaction; jobs with a deadline are found by the `cancel_at` column (sqlite_outbox.py).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType

from kandinsky_serve.domain import transitions
from kandinsky_serve.domain.errors import ErrorCode, invalid
from kandinsky_serve.domain.job import Job, JobEvent, JobState, Output, utcnow
from kandinsky_serve.domain.transitions import Record
from kandinsky_serve.store import sqlite_outbox
from kandinsky_serve.store.codec import micros
from kandinsky_serve.store.outbox import Claimed
from kandinsky_serve.store.protocol import Admission, Heartbeat, JobPage
from kandinsky_serve.store.sqlite_admission import admit, spent
from kandinsky_serve.store.sqlite_rows import (
    SELECT_FACTS,
    SELECT_FACTS_OF_IDS,
    SELECT_JOB,
    SELECT_RECORD,
    SELECT_WHOLE,
    insert,
    oldest_queued,
    read_job,
    read_record,
    remove_inputs,
    save_record,
    whole_job,
)
from kandinsky_serve.store.sqlite_schema import connect, migrate
from kandinsky_serve.store.sqlite_schema import pragmas as read_pragmas

_EXPIRE_CHUNK = 100  # jobs stripped per transaction, so expiry never holds the write lock for long


class SqliteJobStore:
    """A JobStore in one SQLite file; open one per process, share it between that process's threads."""

    def __init__(self, path: Path, *, clock: Callable[[], datetime] = utcnow) -> None:
        self._path = Path(path)
        self._clock = clock
        self._lock = threading.Lock()
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._inherited: list[sqlite3.Connection] = []
        self._pid = os.getpid()
        self._closed = False
        try:
            self._set_up()
        except BaseException:
            self.close()
            raise

    @property
    def path(self) -> Path:
        return self._path

    def pragmas(self) -> dict[str, str | int]:
        """The durability settings in force (journal mode, synchronous, busy timeout, schema version)."""
        return read_pragmas(self._connection())

    # -- the JobStore protocol ------------------------------------------------------------------

    def enqueue(self, job: Job, admission: Admission | None = None) -> Job:
        """Stores the job as given. Enqueueing an id that exists changes nothing and returns the stored
        job (as get() does, without its input images), so a retried enqueue is harmless."""
        transitions.check_new(job)
        with self._write(durable=True) as conn:
            existing = conn.execute(f"{SELECT_JOB} WHERE j.id = ?", (job.id,)).fetchone()
            if existing is not None:
                return read_job(*existing)
            if admission is not None:
                admit(conn, job, admission)
            insert(conn, job)
        return job

    def spent(self, owner: str) -> float:
        return spent(self._connection(), owner)

    def get(self, job_id: str) -> Job | None:
        """Without the request's input images, which only lease() reads."""
        row = self._connection().execute(f"{SELECT_JOB} WHERE j.id = ?", (job_id,)).fetchone()
        return None if row is None else read_job(*row)

    def list_jobs(self, owner: str, *, limit: int = 100, cursor: str | None = None) -> JobPage:
        """The cursor is the id of the last job of the previous page; one that is not among the owner's
        jobs is refused with an invalid_input ServeError. Jobs as get() returns them."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        conn = self._connection()
        newest_first = "ORDER BY j.created_at DESC, j.id DESC LIMIT ?"
        if cursor is None:
            rows = conn.execute(f"{SELECT_JOB} WHERE j.owner = ? {newest_first}", (owner, limit + 1)).fetchall()
        else:
            anchor = conn.execute("SELECT created_at FROM jobs WHERE id = ? AND owner = ?", (cursor, owner)).fetchone()
            if anchor is None:
                raise invalid("cursor", "does not come from an earlier page of this list")
            rows = conn.execute(
                f"{SELECT_JOB} WHERE j.owner = ? AND (j.created_at, j.id) < (?, ?) {newest_first}",
                (owner, anchor[0], cursor, limit + 1),
            ).fetchall()
        jobs = [read_job(*row) for row in rows[:limit]]
        return JobPage(jobs=jobs, next_cursor=jobs[-1].id if len(rows) > limit else None)

    def lease(
        self, worker: str, *, max_batch: int, lease_seconds: float, models: Collection[str] | None = None
    ) -> list[Job]:
        """The jobs with their input images: the one read that loads them."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        now = self._clock()
        with self._write() as conn:
            first = oldest_queued(conn, models)
            if first is None:
                return []
            # a batch key names the model, so the mates are of the first job's model
            more = conn.execute(
                """SELECT id FROM jobs WHERE state = 'queued' AND batch_key = ? AND id != ?
                ORDER BY created_at, id LIMIT ?""",
                (first[1], first[0], max_batch - 1),
            ).fetchall()
            leased = []
            for job_id in [first[0], *(row[0] for row in more)]:
                job = whole_job(*conn.execute(f"{SELECT_WHOLE} WHERE j.id = ?", (job_id,)).fetchone())
                record = transitions.lease(job, worker, now, lease_seconds)
                _save(conn, job, record, now)
                leased.append(record.job)
        return leased

    def heartbeat(self, worker: str, job_ids: Sequence[str], lease_seconds: float) -> Heartbeat:
        if not job_ids:
            return Heartbeat()
        now = self._clock()
        held: dict[str, bool] = {}
        with self._write() as conn:
            rows = conn.execute(SELECT_FACTS_OF_IDS, (json.dumps(list(job_ids)),)).fetchall()
            for row in rows:
                if (record := transitions.heartbeat(read_record(*row), worker, now, lease_seconds)) is not None:
                    save_record(conn, record)
                    held[record.job.id] = record.job.cancel_requested
        return Heartbeat(held=set(held), cancel_requested={job_id for job_id, cancel in held.items() if cancel})

    def complete(self, job_id: str, worker: str, outputs: Sequence[Output]) -> bool:
        return self._change(job_id, lambda r, now: transitions.complete(r, worker, outputs, now)) is not None

    def fail(self, job_id: str, worker: str, code: ErrorCode, message: str) -> bool:
        return self._change(job_id, lambda r, now: transitions.fail(r, worker, code, message, now)) is not None

    def finish_canceled(self, job_id: str, worker: str) -> bool:
        return self._change(job_id, lambda r, now: transitions.finish_canceled(r, worker, now)) is not None

    def release(self, job_id: str, worker: str) -> bool:
        return self._change(job_id, lambda r, now: transitions.release(r, worker, now)) is not None

    def cancel(self, job_id: str) -> Job | None:
        with self._write(durable=True) as conn:
            row = conn.execute(f"{SELECT_RECORD} WHERE j.id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            record, now = read_record(*row), self._clock()
            if (changed := transitions.cancel(record, now)) is None:
                return record.job
            _save(conn, record.job, changed, now)
        return changed.job

    def add_events(self, job_id: str, events: Sequence[JobEvent]) -> None:
        """Events for a job that does not exist are dropped: a progress report must never fail a run."""
        if not events:
            return
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM jobs WHERE id = ?", (job_id,)).fetchone() is None:
                return
            last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM events WHERE job_id = ?", (job_id,)).fetchone()
            first_seq = int(last[0]) + 1
            conn.executemany(
                "INSERT INTO events (job_id, seq, event) VALUES (?, ?, ?)",
                [
                    (job_id, seq, event.model_copy(update={"seq": seq}).model_dump_json())
                    for seq, event in enumerate(events, start=first_seq)
                ],
            )

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        rows = self._connection().execute(
            "SELECT event FROM events WHERE job_id = ? AND seq > ? ORDER BY seq", (job_id, after)
        )
        return [JobEvent.model_validate_json(row[0]) for row in rows.fetchall()]

    def reclaim(self, *, max_attempts: int) -> list[Job]:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        now = self._clock()
        changed = []
        with self._write() as conn:
            rows = conn.execute(
                f"{SELECT_RECORD} WHERE j.state = 'running' AND j.lease_expires < ? ORDER BY j.created_at, j.id",
                (micros(now),),
            ).fetchall()
            for row in rows:
                before = read_record(*row)
                if (record := transitions.reclaim(before, now, max_attempts)) is not None:
                    _save(conn, before.job, record, now)
                    changed.append(record.job)
        return changed

    def expire(self, completed_before: datetime) -> list[str]:
        keys: list[str] = []
        while True:
            with self._write() as conn:
                rows = conn.execute(
                    """SELECT j.job, r.request, j.worker, j.lease_expires FROM jobs j JOIN requests r ON r.job_id = j.id
                    WHERE j.data_removed = 0 AND j.completed_at IS NOT NULL AND j.completed_at < ?
                    AND j.state IN ('succeeded', 'failed', 'canceled') ORDER BY j.completed_at LIMIT ?""",
                    (micros(completed_before), _EXPIRE_CHUNK),
                ).fetchall()
                stripped_any = False
                for facts, request, worker, lease_expires in rows:
                    record = read_record(facts, None, worker, lease_expires)
                    if (stripped := transitions.expire(record, completed_before)) is None:
                        continue  # the query chose only jobs to expire: not reached
                    keys.extend(output.key for output in record.job.outputs)
                    remove_inputs(conn, record.job.id, request)
                    save_record(conn, stripped)
                    stripped_any = True
            if len(rows) < _EXPIRE_CHUNK or not stripped_any:  # a chunk that changed nothing would come again
                return keys

    def overdue(self) -> list[str]:
        return sqlite_outbox.overdue(self._connection(), self._clock())

    # -- the Outbox protocol (store/outbox.py) --------------------------------------------------

    def claim(self, claim_seconds: float) -> Claimed | None:
        # every API process looks every second: a look that finds nothing due takes no write lock
        if not sqlite_outbox.any_due(self._connection(), self._clock()):
            return None
        with self._write() as conn:
            return sqlite_outbox.claim(conn, self._clock(), claim_seconds)

    def done(self, claimed: Claimed) -> None:
        with self._write() as conn:
            sqlite_outbox.done(conn, claimed, self._clock())

    def retry(self, claimed: Claimed, at: datetime) -> None:
        with self._write() as conn:
            sqlite_outbox.retry(conn, claimed, at)

    def pending(self) -> int:
        return sqlite_outbox.pending(self._connection())

    def counts(self) -> dict[JobState, int]:
        rows = self._connection().execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        found = {JobState(state): int(count) for state, count in rows}
        return {state: found.get(state, 0) for state in JobState}

    def close(self) -> None:
        """Closes every thread's connection; the store cannot be used afterwards."""
        with self._lock:
            self._closed = True
            connections, self._connections = self._connections, []
        for conn in connections:
            conn.close()

    def __enter__(self) -> SqliteJobStore:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- transitions ----------------------------------------------------------------------------

    def _change(self, job_id: str, decide: Callable[[Record, datetime], Record | None]) -> Record | None:
        """Reads the job and its lease, asks `decide` (a transition) what they become, and writes that,
        in one transaction. The record as changed, or None for no change (or no such job)."""
        with self._write() as conn:
            row = conn.execute(f"{SELECT_FACTS} WHERE j.id = ?", (job_id,)).fetchone()
            if row is None:
                return None
            before, now = read_record(*row), self._clock()
            if (changed := decide(before, now)) is None:
                return None
            _save(conn, before.job, changed, now)
        return changed

    # -- connections ----------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if os.getpid() != self._pid:
            self._forget_parent_connections()
        if self._closed:
            raise RuntimeError(f"the job store {self._path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with self._lock:
                if self._closed:  # again: close() may have run since the check above
                    raise RuntimeError(f"the job store {self._path} is closed")
                conn = connect(self._path)
                self._connections.append(conn)
            self._local.conn = conn
        return conn

    def _forget_parent_connections(self) -> None:
        # a SQLite connection must not be used across fork(): the child opens its own, and keeps the
        # parent's referenced, because closing one (as garbage collection would) can disturb the
        # parent's locks and WAL files
        with self._lock:
            self._inherited.extend(self._connections)
            self._connections = []
            self._local = threading.local()
            self._pid = os.getpid()

    @contextmanager
    def _write(self, *, durable: bool = False) -> Iterator[sqlite3.Connection]:
        """A write transaction; a durable one is on disk when it returns (one fsync of the WAL, which
        carries every earlier commit with it), the others once SQLite next syncs."""
        conn = self._connection()
        if durable:
            conn.execute("PRAGMA synchronous = FULL")  # outside a transaction: SQLite ignores it inside
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            if durable:
                conn.execute("PRAGMA synchronous = NORMAL")

    def _set_up(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        migrate(self._connection(), self._path)


def _save(conn: sqlite3.Connection, before: Job, record: Record, now: datetime) -> None:
    """A change of a job, and the webhook deliveries it calls for, in the caller's transaction."""
    save_record(conn, record)
    if found := transitions.deliveries(before, record.job):
        sqlite_outbox.queue(conn, found, now)
