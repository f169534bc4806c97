"""Where each backend keeps a job's input images: apart from what reads load, in a place only lease
reads and expiry deletes; and data stored before that place existed (a SQLite database of schema 1,
Redis records with the images in p:req) keeps working."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import timedelta

import pytest
import redis

from kandinsky_serve.domain.job import Job, JobState
from kandinsky_serve.store import SqliteJobStore
from kandinsky_serve.store.codec import job_json, micros, strip_request
from kandinsky_serve.store.redis import RedisJobStore
from kandinsky_serve.store.sqlite_schema import _SCHEMA_V1

from . import LEASE, W1, as_read, inputs_kept, lease_one, output

# -- reads never touch the inputs ---------------------------------------------------------------


def corrupt_inputs(store: SqliteJobStore | RedisJobStore, job_id: str) -> None:
    """Turns the job's inputs into something no read could parse."""
    if isinstance(store, SqliteJobStore):
        with store._write() as conn:
            assert conn.execute("UPDATE inputs SET request = 'not json' WHERE job_id = ?", (job_id,)).rowcount == 1
    else:
        assert store._redis.set(f"{store._p}inp:{job_id}", "not json", xx=True)


def test_reads_do_not_read_the_inputs_and_lease_does(store, make_job, photo):
    job = store.enqueue(make_job(task="img2img", image=photo))
    corrupt_inputs(store, job.id)
    assert store.get(job.id) == as_read(job)
    assert store.list_jobs("alice").jobs == [as_read(job)]
    assert store.enqueue(job) == as_read(job)
    with pytest.raises(ValueError, match=r"(?i)invalid json"):  # the lease, and only it, read them
        store.lease(W1, max_batch=1, lease_seconds=LEASE)


def test_a_job_without_images_keeps_no_inputs(store, make_job):
    job = store.enqueue(make_job())
    assert not inputs_kept(store, job.id)
    assert store.get(job.id) == job and lease_one(store).request == job.request


# -- SQLite: a database of schema 1 is migrated -------------------------------------------------


def v1_database(path, jobs: list[Job], *, expired: set[str] = frozenset()) -> None:
    """A database as kandinsky-serve wrote it at schema 1: the whole request, images included, in
    `requests`; stripped there for an expired job."""
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    for statement in _SCHEMA_V1:
        conn.execute(statement)
    for job in jobs:
        removed = job.id in expired
        conn.execute(
            """INSERT INTO jobs (id, owner, state, batch_key, created_at, lease_expires, worker, attempts,
            completed_at, data_removed, cancel_requested, price, job)
            VALUES (?, ?, ?, ?, ?, NULL, NULL, ?, ?, ?, 0, ?, ?)""",
            (
                job.id,
                job.owner,
                job.state.value,
                job.batch_key,
                micros(job.created_at),
                job.attempts,
                None if job.completed_at is None else micros(job.completed_at),
                int(removed),
                job.price,
                job_json(job.model_copy(update={"data_removed": removed})),
            ),
        )
        request = job.request.model_dump_json()
        conn.execute("INSERT INTO requests VALUES (?, ?)", (job.id, strip_request(request) if removed else request))
    conn.execute("PRAGMA user_version = 1")
    conn.close()


def test_a_schema_1_database_is_migrated_and_its_jobs_run_with_their_images(tmp_path, make_job, photo, mask, clock):
    queued = make_job(task="inpaint", image=photo, mask=mask, seed=3)
    text = make_job(seed=4)
    finished = make_job(task="img2img", image=photo).model_copy(
        update={"state": JobState.SUCCEEDED, "attempts": 1, "completed_at": clock.now, "outputs": [output("d")]}
    )
    gone = make_job(task="img2img", image=photo).model_copy(
        update={"state": JobState.SUCCEEDED, "attempts": 1, "completed_at": clock.now}
    )
    path = tmp_path / "jobs.db"
    v1_database(path, [queued, text, finished, gone], expired={gone.id})

    store = SqliteJobStore(path, clock=clock)
    assert store.pragmas()["schema_version"] == 3
    conn = store._connection()
    assert {row[0] for row in conn.execute("SELECT job_id FROM inputs")} == {queued.id, finished.id}
    assert max(len(row[0]) for row in conn.execute("SELECT request FROM requests")) < 1000  # no base64 left
    assert store.get(queued.id) == as_read(queued)
    assert store.get(text.id) == text
    assert store.get(finished.id) == as_read(finished)
    assert store.get(gone.id).data_removed and store.get(gone.id).request.image is None
    store.close()

    store = SqliteJobStore(path, clock=clock)  # opened again: nothing more to migrate
    leased = lease_one(store)
    assert leased.id == queued.id and leased.request == queued.request  # the images, byte for byte
    assert leased.request.image == photo and leased.request.mask == mask
    assert lease_one(store).request == text.request
    clock.advance(10)
    assert store.expire(clock.now) == [output("d").key]
    assert not inputs_kept(store, finished.id) and store.get(finished.id).data_removed
    store.close()


# -- Redis: records stored before p:inp existed -------------------------------------------------


def test_a_redis_record_with_its_images_in_p_req_still_leases_and_expires(redis_server, make_job, photo, clock):
    name = f"test-{uuid.uuid4().hex[:12]}"
    store = RedisJobStore(redis_server.url, prefix=name, clock=clock)
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
    job = store.enqueue(make_job(task="img2img", image=photo, seed=5))
    # as the enqueue script wrote it before p:inp: the hash is the same, p:req holds the whole request
    raw.set(f"{name}:req:{job.id}", job.request.model_dump_json())
    raw.delete(f"{name}:inp:{job.id}")

    assert store.get(job.id) == as_read(job)  # its images are dropped, unread
    assert store.list_jobs("alice").jobs == [as_read(job)]
    leased = lease_one(store)
    assert leased.request == job.request and leased.request.image == photo
    assert store.complete(job.id, W1, [output(job.id)])
    clock.advance(10)
    assert store.expire(clock.now - timedelta(seconds=1)) == [output(job.id).key]
    assert len(raw.get(f"{name}:req:{job.id}")) < 1000 and not raw.exists(f"{name}:inp:{job.id}")
    assert store.get(job.id).data_removed and store.get(job.id).request.image is None
    raw.close()
    store.close()
