"""What the Redis backends guarantee beyond the contract: the server check, restarts, namespaces, TTLs,
atomic admission across clients, and indexes that stay in step with the jobs."""

from __future__ import annotations

import logging
import random
import signal
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
import redis

from kandinsky_serve.blobs.redis import RedisBlobStore
from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.domain.job import JobEvent, JobState
from kandinsky_serve.store import Admission
from kandinsky_serve.store.redis import RedisJobStore
from tests.redis_server import RedisServer

from . import LEASE, W1, lease_one, output


def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def own_server(tmp_path):
    """A redis-server of the test's own, for settings and restarts the shared one must not see."""
    servers: list[RedisServer] = []

    def start(*extra: str) -> RedisServer:
        server = RedisServer(tmp_path / f"redis-{len(servers)}", extra=extra).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def test_a_server_that_may_evict_keys_is_refused(own_server):
    server = own_server("--maxmemory-policy", "allkeys-lru")
    with pytest.raises(RuntimeError, match="noeviction"):
        RedisJobStore(server.url, prefix=prefix())
    with pytest.raises(RuntimeError, match="noeviction"):
        RedisBlobStore(server.url, prefix=prefix())


def test_a_server_without_aof_is_used_with_a_warning(own_server, caplog, make_job):
    server = own_server("--appendonly", "no")
    with caplog.at_level(logging.WARNING, logger="kandinsky_serve.store.redis"):
        store = RedisJobStore(server.url, prefix=prefix())
    assert any("appendonly yes" in record.getMessage() for record in caplog.records)
    job = store.enqueue(make_job())
    assert store.get(job.id) == job
    store.close()


def test_the_default_server_settings_pass_the_check_quietly(redis_server, caplog):
    with caplog.at_level(logging.WARNING, logger="kandinsky_serve.store.redis"):
        RedisJobStore(redis_server.url, prefix=prefix()).close()
    assert caplog.records == []


def test_jobs_survive_a_redis_crash_with_aof(own_server, make_job, clock):
    # appendfsync always: every acknowledged write is on disk, so even SIGKILL loses nothing
    server = own_server("--appendfsync", "always")
    store = RedisJobStore(server.url, prefix=prefix(), clock=clock)
    running = store.enqueue(make_job(width=512).model_copy(update={"price": 1.5}))
    queued = [store.enqueue(make_job(width=768).model_copy(update={"price": 1.0})) for _ in range(2)]
    assert lease_one(store, W1).id == running.id
    store.add_events(running.id, [JobEvent(message="step 1")])
    before = {job.id: store.get(job.id) for job in (running, *queued)}
    counts = store.counts()

    server.stop(signal.SIGKILL)
    server.start()  # same directory and port: the AOF is replayed, the scripts are gone

    # the same store, without a restart of its own: it reconnects and loads its scripts again
    assert {job_id: store.get(job_id) for job_id in before} == before
    assert store.counts() == counts and store.spent("alice") == 3.5
    assert [event.message for event in store.events(running.id)] == ["step 1"]
    assert store.complete(running.id, W1, [output(running.id)])  # the lease survived
    assert [job.id for job in store.lease(W1, max_batch=4, lease_seconds=LEASE)] == [job.id for job in queued]
    store.close()


def test_prefixes_keep_stores_on_one_server_apart(redis_server, make_job):
    first = RedisJobStore(redis_server.url, prefix=prefix())
    second = RedisJobStore(redis_server.url, prefix=prefix())
    job = first.enqueue(make_job())
    assert second.get(job.id) is None
    assert second.counts()[JobState.QUEUED] == 0
    assert second.lease(W1, max_batch=1, lease_seconds=LEASE) == []
    assert first.counts()[JobState.QUEUED] == 1
    first.close()
    second.close()


def test_blobs_expire_with_the_retention_given(redis_server):
    name = prefix()
    raw = redis.Redis.from_url(redis_server.url)
    kept = RedisBlobStore(redis_server.url, prefix=name, ttl_seconds=3600)
    kept.put("outputs/j/0.webp", b"img", "image/webp")
    assert 3_500_000 < raw.pttl(f"{name}:blob:outputs/j/0.webp") <= 3_600_000
    forever = RedisBlobStore(redis_server.url, prefix=name)
    forever.put("outputs/j/0.webp", b"img", "image/webp")  # rewritten without a TTL: kept for good
    assert raw.pttl(f"{name}:blob:outputs/j/0.webp") == -1
    for store in (kept, forever):
        store.close()
    raw.close()
    with pytest.raises(ValueError, match="positive"):
        RedisBlobStore(redis_server.url, ttl_seconds=0)


def test_clients_racing_for_the_last_credits_get_no_more_than_the_budget(redis_server, make_job):
    name = prefix()
    jobs = [make_job(owner="bob").model_copy(update={"price": 1.0}) for _ in range(40)]
    start = threading.Barrier(8)

    def enqueue(chunk: int) -> list[bool]:
        store = RedisJobStore(redis_server.url, prefix=name)  # a client each, as API nodes have
        start.wait()
        admitted = []
        for job in jobs[chunk::8]:
            try:
                store.enqueue(job, Admission(budget=7, max_active=30))
                admitted.append(True)
            except ServeError as exc:
                assert exc.code is ErrorCode.INSUFFICIENT_CREDITS
                admitted.append(False)
        store.close()
        return admitted

    with ThreadPoolExecutor(8) as pool:
        results = [ok for chunk in pool.map(enqueue, range(8)) for ok in chunk]
    store = RedisJobStore(redis_server.url, prefix=name)
    assert results.count(True) == 7 and store.spent("bob") == 7.0
    assert store.counts()[JobState.QUEUED] == 7
    store.close()


def test_counters_match_the_jobs_after_a_random_workload(redis_server, make_job, clock):
    """counts(), spent() and the admission counters are kept by the scripts; here they are checked
    against the jobs themselves after a few hundred random operations."""
    store = RedisJobStore(redis_server.url, prefix=prefix(), clock=clock)
    rng = random.Random(7)
    owners = ["alice", "bob", "carol"]
    jobs: list[str] = []
    for _ in range(300):
        action = rng.choice(["enqueue", "enqueue", "lease", "finish", "cancel", "release", "reclaim"])
        if action == "enqueue":
            job = make_job(rng.choice(owners), width=rng.choice([512, 768])).model_copy(
                update={"price": rng.choice([0.0, 0.5, 1.0])}
            )
            jobs.append(store.enqueue(job).id)
        elif action == "lease":
            store.lease(rng.choice(["w1", "w2"]), max_batch=rng.randint(1, 3), lease_seconds=10)
        elif action == "reclaim":
            clock.advance(rng.choice([1, 11]))
            store.reclaim(max_attempts=2)
        elif jobs:
            job_id = rng.choice(jobs)
            worker = rng.choice(["w1", "w2"])
            if action == "finish":
                how = rng.choice(["complete", "fail", "cancel"])
                if how == "complete":
                    store.complete(job_id, worker, [output(job_id)])
                elif how == "fail":
                    store.fail(job_id, worker, ErrorCode.INTERNAL, "broken")
                else:
                    store.finish_canceled(job_id, worker)
            elif action == "cancel":
                store.cancel(job_id)
            else:
                store.release(job_id, worker)

    every = [store.get(job_id) for job_id in jobs]
    assert store.counts() == {state: sum(job.state is state for job in every) for state in JobState}
    charged = (JobState.QUEUED, JobState.RUNNING, JobState.SUCCEEDED)
    for owner in owners:
        mine = [job for job in every if job.owner == owner]
        assert store.spent(owner) == pytest.approx(sum(job.price for job in mine if job.state in charged))
        active = sum(job.state in (JobState.QUEUED, JobState.RUNNING) for job in mine)
        if active:
            with pytest.raises(ServeError) as info:
                store.enqueue(make_job(owner), Admission(max_active=active))
            assert info.value.code is ErrorCode.RATE_LIMITED
        store.enqueue(make_job(owner), Admission(max_active=active + 1))
    assert {job.state for job in every} >= {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED}
    store.close()
