"""The JobStore contract on leases: who gets which job, for how long, and what happens when a worker is lost."""

from __future__ import annotations

import multiprocessing
import queue
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kandinsky_serve.domain.errors import ErrorCode
from kandinsky_serve.domain.job import JobState

from . import LEASE, W1, W2, ids, lease_one, open_job_store, output

# -- lease ------------------------------------------------------------------------------------


def test_lease_takes_the_oldest_job_first(store, make_job, clock):
    older, newer = make_job(), make_job()
    store.enqueue(newer)
    store.enqueue(older)
    job = lease_one(store)
    assert job.id == older.id
    assert job.state is JobState.RUNNING and job.attempts == 1 and job.started_at == clock.now
    assert store.get(job.id) == job
    assert lease_one(store).id == newer.id
    assert store.lease(W1, max_batch=4, lease_seconds=LEASE) == []


def test_lease_batches_only_jobs_with_the_same_batch_key(store, make_job):
    small = [make_job(width=512) for _ in range(2)]
    large = make_job(width=768)
    later_small = [make_job(width=512) for _ in range(3)]
    for job in [*small, large, *later_small]:
        store.enqueue(job)

    batch = store.lease(W1, max_batch=4, lease_seconds=LEASE)
    assert ids(batch) == ids([*small, *later_small[:2]])
    assert all(job.state is JobState.RUNNING for job in batch)
    assert store.get(large.id).state is JobState.QUEUED
    assert ids(store.lease(W2, max_batch=4, lease_seconds=LEASE)) == [large.id]
    assert ids(store.lease(W2, max_batch=4, lease_seconds=LEASE)) == [later_small[2].id]


def _lease_until_empty(backend: str, location: str, worker: str, start, results) -> None:
    """One leaser in a process of its own: leases and completes until the queue is empty."""
    try:
        store = open_job_store(backend, location)
        start.wait(60)  # every leaser has its store open: they start together
        got = []
        while batch := store.lease(worker, max_batch=2, lease_seconds=LEASE):
            time.sleep(0.005)  # the work: the other leasers take the write lock meanwhile
            for job in batch:
                got.append(job.id)
                assert store.complete(job.id, worker, [output(job.id)])
        store.close()
        results.put((worker, got))
    except BaseException as exc:
        results.put((worker, repr(exc)))
        raise


def _queue_forty(store, make_job) -> list[str]:
    return [store.enqueue(make_job(width=512 if i % 3 else 768)).id for i in range(40)]


def test_leasers_in_threads_never_share_a_job(store, make_job):
    queued = _queue_forty(store, make_job)
    start = threading.Barrier(4)

    def leaser(worker: str) -> list[str]:
        start.wait()
        got = []
        while batch := store.lease(worker, max_batch=3, lease_seconds=LEASE):
            got += ids(batch)
            time.sleep(0.002)
            for job in batch:
                assert store.complete(job.id, worker, [])
        return got

    with ThreadPoolExecutor(4) as pool:
        leased = [future.result() for future in [pool.submit(leaser, f"w{i}") for i in range(4)]]
    every = [job_id for got in leased for job_id in got]
    assert sorted(every) == sorted(queued)  # each job exactly once
    assert sum(1 for got in leased if got) >= 2, "the leasers did not run side by side"
    assert store.counts()[JobState.SUCCEEDED] == 40


def test_leasers_in_separate_processes_never_share_a_job(store, make_job, job_backend):
    queued = _queue_forty(store, make_job)
    context = multiprocessing.get_context("spawn")
    workers = [f"process-{i}" for i in range(3)]
    start, results = context.Barrier(len(workers)), context.Queue()
    processes = [
        context.Process(target=_lease_until_empty, args=(job_backend.backend, job_backend.location, w, start, results))
        for w in workers
    ]
    for process in processes:
        process.start()
    try:
        leased = dict(results.get(timeout=60) for _ in workers)
    except queue.Empty:
        pytest.fail("a leasing process reported nothing")
    finally:
        for process in processes:
            process.join(30)
    assert all(isinstance(got, list) for got in leased.values()), leased
    every = [job_id for got in leased.values() for job_id in got]
    assert sum(1 for got in leased.values() if got) >= 2, "the leasers did not run side by side"
    assert sorted(every) == sorted(queued)
    assert store.counts()[JobState.SUCCEEDED] == 40
    assert all(job.outputs == [output(job.id)] for job in store.list_jobs("alice").jobs)


# -- heartbeat and reclaim --------------------------------------------------------------------


def test_heartbeat_extends_only_leases_the_worker_holds(store, make_job, clock):
    mine, theirs, done = (store.enqueue(make_job(width=w)) for w in (512, 768, 1024))
    lease_one(store, W1, lease_seconds=60)
    lease_one(store, W2, lease_seconds=60)
    lease_one(store, W1, lease_seconds=60)
    assert store.complete(done.id, W1, [])

    clock.advance(50)
    beat = store.heartbeat(W1, [mine.id, theirs.id, done.id, "nope"], lease_seconds=60)
    assert beat.held == {mine.id} and beat.cancel_requested == set()
    clock.advance(30)  # W2's lease ended 20 s ago; W1's runs for 30 s more
    assert ids(store.reclaim(max_attempts=3)) == [theirs.id]
    assert store.get(mine.id).state is JobState.RUNNING
    assert store.heartbeat(W1, [], lease_seconds=60).held == set()


def test_heartbeat_reports_cancel_requests(store, make_job):
    first, second = store.enqueue(make_job()), store.enqueue(make_job())
    store.lease(W1, max_batch=2, lease_seconds=LEASE)
    store.cancel(second.id)
    beat = store.heartbeat(W1, [first.id, second.id], lease_seconds=LEASE)
    assert beat.held == {first.id, second.id} and beat.cancel_requested == {second.id}


def test_a_reclaimed_job_cannot_be_finished_by_its_old_worker(store, make_job, clock):
    job = store.enqueue(make_job())
    first = lease_one(store, W1, lease_seconds=10)
    clock.advance(9)
    assert store.reclaim(max_attempts=3) == []  # not expired yet
    clock.advance(2)
    (back,) = store.reclaim(max_attempts=3)
    assert back.id == job.id and back.state is JobState.QUEUED and back.attempts == 1
    assert store.get(job.id) == back

    second = lease_one(store, W2)
    assert second.attempts == 2 and second.started_at == first.started_at
    assert not store.complete(job.id, W1, [output(job.id)])
    assert not store.fail(job.id, W1, ErrorCode.INTERNAL, "late")
    assert store.heartbeat(W1, [job.id], LEASE).held == set()
    assert store.complete(job.id, W2, [output(job.id, 1)])
    done = store.get(job.id)
    assert done.state is JobState.SUCCEEDED and done.outputs == [output(job.id, 1)]


def test_a_job_whose_worker_keeps_stopping_fails_as_worker_lost(store, make_job, clock):
    job = store.enqueue(make_job())
    for attempt in (1, 2, 3):
        assert lease_one(store, f"w{attempt}", lease_seconds=10).attempts == attempt
        clock.advance(11)
        (changed,) = store.reclaim(max_attempts=3)
    assert changed.state is JobState.FAILED and changed.error_code is ErrorCode.WORKER_LOST
    assert "3 times" in changed.error_message and changed.error_message.count(".") <= 1
    assert changed.completed_at == clock.now
    assert store.get(job.id) == changed
    assert store.lease(W1, max_batch=1, lease_seconds=LEASE) == []


def test_an_expired_job_whose_cancel_was_requested_is_canceled_not_retried(store, make_job, clock):
    job = store.enqueue(make_job())
    lease_one(store, W1, lease_seconds=10)
    store.cancel(job.id)
    clock.advance(11)
    (changed,) = store.reclaim(max_attempts=3)
    assert changed.state is JobState.CANCELED and store.lease(W2, max_batch=1, lease_seconds=LEASE) == []
