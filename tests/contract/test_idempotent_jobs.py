"""What Idempotency-Key relies on in every JobStore: a job's `fingerprint` is kept through its whole
life (every transition rewrites the job's JSON), a record stored before the field existed still
loads, and enqueues of one id racing from several stores make one job, admitted and charged once."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

from kandinsky_serve.domain.job import JobState, idempotent_job_id, new_job_id
from kandinsky_serve.store import Admission, SqliteJobStore
from kandinsky_serve.store.redis import RedisJobStore
from tests.contract import W1, lease_one, output


def test_the_fingerprint_is_kept_from_enqueue_to_expiry(store, make_job, clock):
    job = store.enqueue(make_job(seed=1).model_copy(update={"fingerprint": "f" * 64}))
    assert store.get(job.id).fingerprint == "f" * 64
    assert lease_one(store).fingerprint == "f" * 64
    assert store.complete(job.id, W1, [output(job.id)])
    clock.advance(10)
    assert store.expire(clock.now) == [output(job.id).key]
    kept = store.get(job.id)
    assert kept.data_removed and kept.state is JobState.SUCCEEDED and kept.fingerprint == "f" * 64
    assert store.list_jobs("alice").jobs[0].fingerprint == "f" * 64


def test_a_job_stored_without_a_fingerprint_still_loads(store, make_job):
    job = store.enqueue(make_job())
    # the record as a server from before the field wrote it
    if isinstance(store, SqliteJobStore):
        conn = store._connection()
        (text,) = conn.execute("SELECT job FROM jobs WHERE id = ?", (job.id,)).fetchone()
        old = {k: v for k, v in json.loads(text).items() if k != "fingerprint"}
        with conn:
            conn.execute("UPDATE jobs SET job = ? WHERE id = ?", (json.dumps(old), job.id))
    else:
        assert isinstance(store, RedisJobStore)
        text = store._redis.hget(f"{store._p}job:{job.id}", "job")
        old = {k: v for k, v in json.loads(text).items() if k != "fingerprint"}
        store._redis.hset(f"{store._p}job:{job.id}", "job", json.dumps(old))
    assert "fingerprint" in json.loads(text) and "fingerprint" not in old
    assert store.get(job.id) == job
    assert store.cancel(job.id).fingerprint is None


def test_racing_enqueues_of_one_id_make_one_job_charged_once(job_backend, clock, make_job):
    """Eight API threads over two store instances (two API nodes) enqueue one idempotent job; the
    budget holds one job's price and a half, so a second admission would be refused."""
    stores = [job_backend(clock), job_backend(clock)]
    job_id = idempotent_job_id("bob", "order-17")
    job = make_job(owner="bob").model_copy(update={"id": job_id, "price": 2.0, "fingerprint": "f"})
    admission = Admission(budget=3.0, max_active=1)
    start = Barrier(8)

    def enqueue(i: int) -> str:
        start.wait()
        return stores[i % 2].enqueue(job, admission).id

    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(enqueue, range(8)))
    assert got == [job_id] * 8
    assert [j.id for j in stores[0].list_jobs("bob").jobs] == [job_id]
    assert stores[1].spent("bob") == 2.0
    assert stores[0].counts()[JobState.QUEUED] == 1


def test_idempotent_ids_look_like_other_ids_and_are_per_owner():
    one = idempotent_job_id("alice", "k")
    assert one == idempotent_job_id("alice", "k")
    assert len({one, idempotent_job_id("bob", "k"), idempotent_job_id("alice", "k2")}) == 3
    # the owner's end cannot be shifted into the key's start
    assert idempotent_job_id("ab", "c") != idempotent_job_id("a", "bc")
    alphabet = set("0123456789abcdefghjkmnpqrstvwxyz")
    for made in (one, new_job_id()):
        assert len(made) == 26 and set(made) <= alphabet
