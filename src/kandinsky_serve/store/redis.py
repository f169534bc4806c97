"""RedisJobStore: the JobStore that API nodes and GPU workers on several machines share.

Each job is a hash (layout in redis_scripts.py, records in redis_records.py): its JSON as enqueued,
in the codec format SQLite uses too, and beside it the fields its life changes (state, attempts,
times, outputs, error, flags, lease holder). Reading a job overlays those fields on the JSON. Its
request is apart, without input images; the images are in a key of their own that only lease reads.

Atomicity comes in two kinds. Choosing work (lease) and admitting it (enqueue) are Lua scripts that
decide and write in one step. Every other change is decided in Python, with the same code as SQLite
(JobState.advance, the same messages), from a read of the job and its version, and written by one
script, APPLY, only if the version is still the one read; otherwise the change is decided again.
Every write to a job bumps its version, so no decision is ever made on stale facts: a worker whose
job was reclaimed cannot finish it, and a reclaim cannot take a job whose lease was just extended.

Times in scores and fields are integer microseconds since the epoch (exact in a double up to 2**53,
about the year 2255), taken from the store's clock: the machines must keep their clocks in sync
(NTP), as leases compare one machine's time with another's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

import redis

from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.domain.job import Job, JobEvent, JobState, Output, utcnow
from kandinsky_serve.store import redis_scripts as scripts
from kandinsky_serve.store.codec import job_json, split_request, strip_request
from kandinsky_serve.store.protocol import (
    Admission,
    Heartbeat,
    JobPage,
    insufficient_credits,
    queue_full,
    too_many_in_flight,
)
from kandinsky_serve.store.redis_records import live_fields, micros, pairs, read_job, whole_job

logger = logging.getLogger(__name__)

# No command the stores send blocks on the server, so a reply slower than this means a lost server.
SOCKET_TIMEOUT = 10.0
CONNECT_TIMEOUT = 5.0
_CAS_TRIES = 100  # a job changes a handful of times in its life; more conflicts than this is a bug
_EXPIRE_CHUNK = 100


def connect(url: str, *, decode_responses: bool) -> redis.Redis:
    return redis.Redis.from_url(
        url,
        decode_responses=decode_responses,
        socket_timeout=SOCKET_TIMEOUT,
        socket_connect_timeout=CONNECT_TIMEOUT,
        health_check_interval=30,
    )


def check_server(client: redis.Redis) -> None:
    """Refuses a server that may evict keys (a queue that loses keys loses jobs), and warns when it
    does not log writes to disk (AOF), as a restart would then lose acknowledged jobs."""
    try:
        config = {_text(k): _text(v) for k, v in _any(client.config_get("maxmemory-policy")).items()}
        config |= {_text(k): _text(v) for k, v in _any(client.config_get("appendonly")).items()}
    except redis.ResponseError as exc:  # managed services often disable CONFIG
        logger.warning(
            "Cannot read the Redis server's settings (%s); make sure maxmemory-policy is noeviction "
            "and appendonly is yes.",
            exc,
        )
        return
    policy = config.get("maxmemory-policy", "")
    if policy != "noeviction":
        raise RuntimeError(
            f"The Redis server's maxmemory-policy is {policy!r}, so it may evict queued jobs; "
            "set it to noeviction (CONFIG SET maxmemory-policy noeviction, and in redis.conf)."
        )
    if config.get("appendonly") != "yes":
        logger.warning(
            "The Redis server does not write an append-only file, so a restart loses the jobs of the "
            "last few minutes; set appendonly yes (and appendfsync everysec or always)."
        )


@dataclass(frozen=True)
class _Record:
    job: Job  # with a placeholder request unless it was read
    version: str
    worker: str
    lease: str
    request: str  # the request JSON as stored; '' unless it was read


@dataclass(frozen=True)
class _Change:
    job: Job
    worker: str = ""
    lease: str = ""
    request: str = ""  # a new request JSON; '' leaves it unchanged


class RedisJobStore:
    """A JobStore in Redis, under keys that start with `prefix:`; open one per process."""

    def __init__(self, url: str, *, prefix: str = "ks", clock: Callable[[], datetime] = utcnow) -> None:
        self._redis = connect(url, decode_responses=True)
        self._p = f"{prefix}:"
        self._clock = clock
        self._enqueue = self._redis.register_script(scripts.ENQUEUE)
        self._lease = self._redis.register_script(scripts.LEASE)
        self._apply = self._redis.register_script(scripts.APPLY)
        self._heartbeat = self._redis.register_script(scripts.HEARTBEAT)
        self._list = self._redis.register_script(scripts.LIST)
        self._add_events = self._redis.register_script(scripts.ADD_EVENTS)
        try:
            self.check_server()
        except BaseException:
            self.close()
            raise

    def check_server(self) -> None:
        check_server(self._redis)

    # -- the JobStore protocol ------------------------------------------------------------------

    def enqueue(self, job: Job, admission: Admission | None = None) -> Job:
        """Stores the job as given. Enqueueing an id that exists changes nothing and returns the stored
        job (as get() does, without its input images), so a retried enqueue is harmless."""
        if job.state is JobState.RUNNING:
            raise ValueError("a job cannot be enqueued as running: no worker holds a lease on it")
        limits = admission or Admission()
        request, inputs = split_request(job.request)
        fields = {
            "job": job_json(job),
            "owner": job.owner,
            "batch": job.batch_key,
            "created": str(micros(job.created_at)),
            "price": repr(job.price),
            **live_fields(job),
        }
        reply = _any(
            self._enqueue(
                args=[
                    self._p,
                    job.id,
                    job.state.value,
                    request,
                    inputs or "",
                    _limit(limits.budget),
                    _limit(limits.max_active),
                    _limit(limits.max_queued),
                    *(item for pair in fields.items() for item in pair),
                ]
            )
        )
        if reply[0] == "exists":
            stored = self.get(job.id)
            assert stored is not None  # jobs are never deleted
            return stored
        if reply[0] != "ok":
            raise _refusal(reply, job, limits)
        return job

    def spent(self, owner: str) -> float:
        return float(_any(self._redis.hget(f"{self._p}spent", owner)) or 0)

    def get(self, job_id: str) -> Job | None:
        """Without the request's input images, which only lease() reads."""
        record = self._record(job_id, with_request=True)
        return None if record is None else record.job

    def list_jobs(self, owner: str, *, limit: int = 100, cursor: str | None = None) -> JobPage:
        """The cursor is the id of the last job of the previous page; one that is not among the owner's
        jobs is refused with an invalid_input ServeError. Jobs as get() returns them."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        found = _any(self._list(args=[self._p, owner, limit, cursor or ""]))
        if found is None:
            raise invalid("cursor", "does not come from an earlier page of this list")
        pipe = self._redis.pipeline(transaction=True)
        for job_id in found[:limit]:
            pipe.hgetall(self._job_key(job_id))
            pipe.get(f"{self._p}req:{job_id}")
        replies = pipe.execute()
        jobs = [read_job(replies[i], replies[i + 1]) for i in range(0, len(replies), 2)]
        return JobPage(jobs=jobs, next_cursor=jobs[-1].id if len(found) > limit else None)

    def lease(self, worker: str, *, max_batch: int, lease_seconds: float) -> list[Job]:
        """The jobs with their input images: the one read that loads them."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        now = self._clock()
        expires = micros(now + timedelta(seconds=lease_seconds))
        reply = _any(self._lease(args=[self._p, worker, max_batch, micros(now), expires]))
        return [whole_job(pairs(reply[i]), reply[i + 1]) for i in range(0, len(reply), 2)]

    def heartbeat(self, worker: str, job_ids: Sequence[str], lease_seconds: float) -> Heartbeat:
        """A worker holds a job while it is RUNNING under its name, even past its lease until reclaim()
        takes it back, so a late heartbeat still saves a job nobody has taken."""
        if not job_ids:
            return Heartbeat()
        expires = micros(self._clock() + timedelta(seconds=lease_seconds))
        held, cancel = _any(self._heartbeat(args=[self._p, worker, expires, *job_ids]))
        return Heartbeat(held=set(held), cancel_requested=set(cancel))

    def complete(self, job_id: str, worker: str, outputs: Sequence[Output]) -> bool:
        return self._finish(job_id, worker, JobState.SUCCEEDED, {"outputs": list(outputs)})

    def fail(self, job_id: str, worker: str, code: ErrorCode, message: str) -> bool:
        return self._finish(job_id, worker, JobState.FAILED, {"error_code": code, "error_message": message})

    def finish_canceled(self, job_id: str, worker: str) -> bool:
        return self._finish(job_id, worker, JobState.CANCELED, {})

    def release(self, job_id: str, worker: str) -> bool:
        """A released job whose cancel was requested becomes CANCELED instead of running again."""

        def decide(record: _Record) -> _Change | None:
            job = record.job
            if job.state is not JobState.RUNNING or record.worker != worker:
                return None
            if job.cancel_requested:
                return _Change(self._ended(job, JobState.CANCELED))
            attempts = max(job.attempts - 1, 0)
            # with no attempt left on the books the job never started, as far as queue_time is concerned
            started_at = job.started_at if attempts else None
            update = {"state": job.state.advance(JobState.QUEUED), "attempts": attempts, "started_at": started_at}
            return _Change(job.model_copy(update=update))

        return self._change(job_id, decide) is not None

    def cancel(self, job_id: str) -> Job | None:
        def decide(record: _Record) -> _Change | None:
            job = record.job
            if job.state is JobState.QUEUED:
                return _Change(self._ended(job, JobState.CANCELED))
            if job.state is JobState.RUNNING and not job.cancel_requested:
                return _Change(job.model_copy(update={"cancel_requested": True}), record.worker, record.lease)
            return None

        changed = self._change(job_id, decide, with_request=True)
        # unchanged (terminal, cancel already requested, or no such job): the job as it is
        return changed if changed is not None else self.get(job_id)

    def add_events(self, job_id: str, events: Sequence[JobEvent]) -> None:
        """Events for a job that does not exist are dropped: a progress report must never fail a run."""
        if events:
            self._add_events(args=[self._p, job_id, *(event.model_dump_json() for event in events)])

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        texts = _any(self._redis.lrange(f"{self._p}ev:{job_id}", max(after, 0), -1))
        return [
            JobEvent.model_validate_json(text).model_copy(update={"seq": seq})
            for seq, text in enumerate(texts, start=max(after, 0) + 1)
        ]

    def reclaim(self, *, max_attempts: int) -> list[Job]:
        """A job whose cancel was requested becomes CANCELED rather than running again."""
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        now = micros(self._clock())

        def decide(record: _Record) -> _Change | None:
            job = record.job
            if job.state is not JobState.RUNNING or not record.lease or int(record.lease) >= now:
                return None  # finished, released or extended since the scan
            if job.cancel_requested:
                return _Change(self._ended(job, JobState.CANCELED))
            if job.attempts >= max_attempts:
                times = "once" if job.attempts == 1 else f"{job.attempts} times"
                message = f"the worker running this job stopped {times} before finishing it, so it was not retried"
                return _Change(
                    self._ended(job, JobState.FAILED, error_code=ErrorCode.WORKER_LOST, error_message=message)
                )
            return _Change(job.model_copy(update={"state": job.state.advance(JobState.QUEUED)}))

        changed: list[Job] = []
        while True:
            # every id of a chunk leaves the expired range (changed, or no longer expired), so the next
            # chunk is new work
            chunk = _any(self._redis.zrangebyscore(f"{self._p}leases", "-inf", f"({now}", start=0, num=_EXPIRE_CHUNK))
            for job_id in chunk:
                if (job := self._change(job_id, decide, with_request=True)) is not None:
                    changed.append(job)
            if len(chunk) < _EXPIRE_CHUNK:
                return sorted(changed, key=lambda job: (micros(job.created_at), job.id))

    def expire(self, completed_before: datetime) -> list[str]:
        cutoff = micros(completed_before)
        keys: list[str] = []
        removed: list[Output] = []  # the outputs of the job being stripped, as last read

        def decide(record: _Record) -> _Change | None:
            job = record.job
            if not job.state.terminal or job.data_removed:
                return None
            removed[:] = job.outputs
            stripped = job.model_copy(update={"outputs": [], "data_removed": True})
            # APPLY deletes the inputs of a job whose data is removed; p:req is rewritten for a record
            # stored whole before p:inp existed
            return _Change(stripped, request=strip_request(record.request))

        while True:
            chunk = _any(self._redis.zrangebyscore(f"{self._p}done", "-inf", f"({cutoff}", start=0, num=_EXPIRE_CHUNK))
            for job_id in chunk:
                if self._change(job_id, decide, raw_request=True) is not None:
                    keys.extend(output.key for output in removed)
            if len(chunk) < _EXPIRE_CHUNK:
                return keys

    def counts(self) -> dict[JobState, int]:
        found = _any(self._redis.hgetall(f"{self._p}counts"))
        return {state: int(found.get(state.value, 0)) for state in JobState}

    def close(self) -> None:
        self._redis.close()

    # -- transitions ----------------------------------------------------------------------------

    def _finish(self, job_id: str, worker: str, to: JobState, update: dict[str, Any]) -> bool:
        def decide(record: _Record) -> _Change | None:
            if record.job.state is not JobState.RUNNING or record.worker != worker:
                return None
            return _Change(self._ended(record.job, to, **update))

        return self._change(job_id, decide) is not None

    def _ended(self, job: Job, to: JobState, **update: Any) -> Job:
        return job.model_copy(update={"state": job.state.advance(to), "completed_at": self._clock(), **update})

    def _change(
        self,
        job_id: str,
        decide: Callable[[_Record], _Change | None],
        *,
        with_request: bool = False,
        raw_request: bool = False,
    ) -> Job | None:
        """Decides a change on a fresh read and applies it if nothing changed the job meanwhile. The job
        as changed, or None when `decide` wants no change (or there is no such job)."""
        for _ in range(_CAS_TRIES):
            record = self._record(job_id, with_request=with_request or raw_request, parse_request=with_request)
            if record is None or (change := decide(record)) is None:
                return None
            job = change.job
            args = [self._p, job_id, record.version, job.state.value, change.worker, change.lease, change.request]
            fields = [item for pair in live_fields(job).items() for item in pair]
            if _any(self._apply(args=[*args, *fields])) == 1:
                return job
        raise RuntimeError(f"job {job_id} kept changing while the store tried to change it")

    def _record(self, job_id: str, *, with_request: bool, parse_request: bool = True) -> _Record | None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(self._job_key(job_id))
        if with_request:
            pipe.get(f"{self._p}req:{job_id}")
        fields, *request = pipe.execute()
        if not fields:
            return None
        text = request[0] if request else ""
        job = read_job(fields, text if parse_request else None)
        return _Record(job, fields["v"], fields.get("worker", ""), fields.get("lease", ""), text)

    def _job_key(self, job_id: str) -> str:
        return f"{self._p}job:{job_id}"


def _refusal(reply: list[str], job: Job, admission: Admission) -> ServeError:
    """The refusal the enqueue script answered, as every backend words it (store.protocol)."""
    if reply[0] == "overloaded":
        return queue_full()
    if reply[0] == "rate_limited":
        return too_many_in_flight(admission.max_active)
    return insufficient_credits(job.price, (admission.budget or 0.0) - float(reply[1]))


def _limit(value: float | None) -> str:
    return "" if value is None else repr(value)


def _any(reply: Any) -> Any:
    """redis-py types replies as `Awaitable | Any` for its sync and async clients alike; ours are sync."""
    return cast(Any, reply)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value
