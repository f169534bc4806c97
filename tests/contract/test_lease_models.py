"""The JobStore contract on leases for some models: a worker takes only jobs of the models it serves."""

from __future__ import annotations

import uuid

import redis

from kandinsky_serve.domain.job import JobState
from kandinsky_serve.store.redis import RedisJobStore

from . import LEASE, W1, W2, ids

A, B, C = "model-a", "model-b", "model-c"


def test_a_worker_for_one_model_never_gets_another_models_jobs(store, make_job):
    a1, b1, a2, b2, a3 = (make_job(model=m) for m in (A, B, A, B, A))
    for job in (a1, b1, a2, b2, a3):
        store.enqueue(job)

    assert ids(store.lease(W1, max_batch=2, lease_seconds=LEASE, models=[B])) == [b1.id, b2.id]
    assert store.lease(W1, max_batch=2, lease_seconds=LEASE, models=[B]) == []
    assert store.lease(W1, max_batch=4, lease_seconds=LEASE, models=[C]) == []
    assert store.lease(W1, max_batch=4, lease_seconds=LEASE, models=[]) == []
    batch = store.lease(W2, max_batch=2, lease_seconds=LEASE, models={A})
    assert ids(batch) == [a1.id, a2.id] and all(job.state is JobState.RUNNING for job in batch)
    assert store.get(a3.id).state is JobState.QUEUED


def test_any_model_takes_the_oldest_job_of_all(store, make_job):
    b, a = store.enqueue(make_job(model=B)), store.enqueue(make_job(model=A))
    assert ids(store.lease(W1, max_batch=4, lease_seconds=LEASE, models=None)) == [b.id]
    assert ids(store.lease(W1, max_batch=4, lease_seconds=LEASE)) == [a.id]


def test_a_worker_for_several_models_takes_the_oldest_of_them(store, make_job):
    c, b, a = (store.enqueue(make_job(model=m)) for m in (C, B, A))
    assert ids(store.lease(W1, max_batch=4, lease_seconds=LEASE, models=(A, B))) == [b.id]
    assert ids(store.lease(W1, max_batch=4, lease_seconds=LEASE, models=(A, B))) == [a.id]
    assert ids(store.lease(W1, max_batch=4, lease_seconds=LEASE, models=(A, B, C))) == [c.id]


def test_a_batch_holds_only_jobs_of_the_first_jobs_model(store, make_job):
    jobs = [store.enqueue(make_job(model=m, width=512)) for m in (A, B, A, B)]
    assert ids(store.lease(W1, max_batch=4, lease_seconds=LEASE, models=(A, B))) == ids(jobs[0::2])
    assert ids(store.lease(W1, max_batch=4, lease_seconds=LEASE, models=(A, B))) == ids(jobs[1::2])


def test_a_job_given_back_is_found_again_by_its_models_workers(store, make_job, clock):
    a = store.enqueue(make_job(model=A))
    store.enqueue(make_job(model=B))
    assert ids(store.lease(W1, max_batch=1, lease_seconds=10, models=[A])) == [a.id]
    assert store.release(a.id, W1)
    assert ids(store.lease(W2, max_batch=1, lease_seconds=10, models=[A])) == [a.id]
    clock.advance(11)
    assert ids(store.reclaim(max_attempts=3)) == [a.id]
    assert ids(store.lease(W1, max_batch=1, lease_seconds=10, models=[A])) == [a.id]


def test_a_job_without_a_model_id_goes_only_to_a_worker_for_any_model(store, make_job):
    unnamed = store.enqueue(make_job())
    assert unnamed.request.model is None
    assert store.lease(W1, max_batch=1, lease_seconds=LEASE, models=[A]) == []
    assert ids(store.lease(W1, max_batch=1, lease_seconds=LEASE)) == [unnamed.id]


def test_redis_jobs_stored_before_models_were_indexed_are_found_once_a_store_opens(redis_server, make_job):
    name = f"test-{uuid.uuid4().hex[:12]}"
    store = RedisJobStore(redis_server.url, prefix=name)
    running, queued = store.enqueue(make_job(model=A, width=512)), store.enqueue(make_job(model=A, width=768))
    other = store.enqueue(make_job(model=B))
    assert ids(store.lease(W1, max_batch=1, lease_seconds=LEASE, models=[A])) == [running.id]
    # as an earlier version stored them: no `model` field, no p:modelq
    raw = redis.Redis.from_url(redis_server.url, decode_responses=True)
    for job in (queued, running, other):
        raw.hdel(f"{name}:job:{job.id}", "model")
    raw.delete(*raw.keys(f"{name}:modelq:*"))
    assert store.lease(W2, max_batch=1, lease_seconds=LEASE, models=[A]) == []  # not found: not indexed

    store.close()
    store = RedisJobStore(redis_server.url, prefix=name)  # indexes them
    assert raw.hget(f"{name}:job:{running.id}", "model") == A
    assert ids(store.lease(W2, max_batch=1, lease_seconds=LEASE, models=[A])) == [queued.id]
    assert ids(store.lease(W2, max_batch=1, lease_seconds=LEASE, models=[B])) == [other.id]
    assert store.release(running.id, W1)  # the running one, back in the queue, is in its model's queue
    assert ids(store.lease(W2, max_batch=1, lease_seconds=LEASE, models=[A])) == [running.id]
    raw.close()
    store.close()
