"""How SqliteJobStore lays a Job out in rows, and reads it back.

Three rows (layout in sqlite_schema.py): `jobs`, the job's columns beside its JSON without the
request, rewritten on every change; `requests`, the request without its input images, written at
enqueue; and, for a job with images, `inputs`, the whole request, which only a lease reads and
expiry deletes. Reads join the first two, so a status read never loads an image.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Collection
from datetime import datetime

from kandinsky_serve.domain.job import Job
from kandinsky_serve.domain.transitions import Record
from kandinsky_serve.store.codec import (
    from_micros,
    job_json,
    load_job,
    load_request,
    load_summary,
    micros,
    split_request,
    strip_request,
)

# A job as reads return it. Callers append WHERE/ORDER BY on aliases j and r.
SELECT_JOB = "SELECT j.job, r.request FROM jobs j JOIN requests r ON r.job_id = j.id"
# A job with its inputs, for the worker that runs it; a job without images has its whole request in r
SELECT_WHOLE = """SELECT j.job, COALESCE(i.request, r.request), j.data_removed
    FROM jobs j JOIN requests r ON r.job_id = j.id LEFT JOIN inputs i ON i.job_id = j.id"""
# A job and its lease, as the transitions (domain/transitions.py) take it: SELECT_RECORD with the
# request as reads return it, SELECT_FACTS with a placeholder request (for changes that return no job)
SELECT_RECORD = """SELECT j.job, r.request, j.worker, j.lease_expires
    FROM jobs j JOIN requests r ON r.job_id = j.id"""
SELECT_FACTS = "SELECT j.job, NULL, j.worker, j.lease_expires FROM jobs j"
SELECT_FACTS_OF_IDS = """SELECT j.job, NULL, j.worker, j.lease_expires FROM jobs j
    WHERE j.id IN (SELECT value FROM json_each(?))"""  # the ids as a JSON list
_SAVE = """UPDATE jobs SET state = ?, attempts = ?, completed_at = ?, data_removed = ?, cancel_requested = ?,
    worker = ?, lease_expires = ?, job = ? WHERE id = ?"""


def insert(conn: sqlite3.Connection, job: Job) -> None:
    """A new job's rows."""
    # the immutable columns here, the rest (and the JSON) by the one function every change goes through
    conn.execute(
        """INSERT INTO jobs
        (id, owner, batch_key, created_at, price, cancel_at, state, attempts, data_removed, cancel_requested, job)
        VALUES (?, ?, ?, ?, ?, ?, '', 0, 0, 0, '')""",
        (job.id, job.owner, job.batch_key, micros(job.created_at), job.price, micros_or_none(job.cancel_at)),
    )
    save(conn, job, worker=None, lease_expires=None)
    request, inputs = split_request(job.request)
    conn.execute("INSERT INTO requests (job_id, request) VALUES (?, ?)", (job.id, request))
    if inputs is not None:
        conn.execute("INSERT INTO inputs (job_id, request) VALUES (?, ?)", (job.id, inputs))


def save(conn: sqlite3.Connection, job: Job, *, worker: str | None, lease_expires: int | None) -> None:
    """Rewrites a job's mutable columns and JSON together, so the two never disagree."""
    conn.execute(
        _SAVE,
        (
            job.state.value,
            job.attempts,
            micros_or_none(job.completed_at),
            int(job.data_removed),
            int(job.cancel_requested),
            worker,
            lease_expires,
            job_json(job),
            job.id,
        ),
    )


def oldest_queued(conn: sqlite3.Connection, models: Collection[str] | None) -> tuple[str, str] | None:
    """The id and batch key of the oldest QUEUED job, of one of `models` unless that is None."""
    if models is None:
        return conn.execute(  # type: ignore[no-any-return]
            "SELECT id, batch_key FROM jobs WHERE state = 'queued' ORDER BY created_at, id LIMIT 1"
        ).fetchone()
    # The model is only in the request's JSON (a column would need a new schema version): this walks
    # the queue oldest first and stops at the first job of a model served, so it costs one small JSON
    # read (requests hold no images) per job of other models queued ahead of it.
    return conn.execute(  # type: ignore[no-any-return]
        """SELECT j.id, j.batch_key FROM jobs j JOIN requests r ON r.job_id = j.id
        WHERE j.state = 'queued' AND json_extract(r.request, '$.model') IN (SELECT value FROM json_each(?))
        ORDER BY j.created_at, j.id LIMIT 1""",
        (json.dumps(list(models)),),
    ).fetchone()


def save_record(conn: sqlite3.Connection, record: Record) -> None:
    save(conn, record.job, worker=record.worker, lease_expires=micros_or_none(record.lease_expires))


def read_record(job: str, request: str | None, worker: str | None, lease_expires: int | None) -> Record:
    """A row of SELECT_RECORD or SELECT_FACTS."""
    facts = load_job(job) if request is None else read_job(job, request)
    return Record(facts, worker, None if lease_expires is None else from_micros(lease_expires))


def remove_inputs(conn: sqlite3.Connection, job_id: str, request: str) -> None:
    """Expiry: the inputs go, and the request keeps no image (one stored whole before schema 2 did)."""
    conn.execute("DELETE FROM inputs WHERE job_id = ?", (job_id,))
    conn.execute("UPDATE requests SET request = ? WHERE job_id = ?", (strip_request(request), job_id))


def read_job(job: str, request: str) -> Job:
    """A row of SELECT_JOB: the job with its request's images left out."""
    return load_job(job, load_summary(request))


def whole_job(job: str, request: str, data_removed: int) -> Job:
    """A row of SELECT_WHOLE: the job with its inputs."""
    return load_job(job, load_request(request, data_removed=bool(data_removed)))


def micros_or_none(moment: datetime | None) -> int | None:
    return None if moment is None else micros(moment)
