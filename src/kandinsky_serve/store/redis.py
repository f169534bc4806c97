"""RedisJobStore: the JobStore that API nodes and GPU workers on several machines share.

Each job is a hash (layout in redis_scripts.py, records in redis_records.py): its JSON as enqueued,
in the codec format SQLite uses too, and beside it the fields its life changes (state, attempts,
times, outputs, error, flags, lease holder). Reading a job overlays those fields on the JSON. Its
request is apart, without input images; the images are in a key of their own that only lease reads.

Admitting work (enqueue) is a Lua script that checks and writes in one step. Every change of a job
is decided in Python by the transitions SQLite uses too (domain/transitions.py), from a read of the
job and its version, and written by one script, APPLY, only if the version is still the one read;
otherwise the change is decided again. Every write to a job bumps its version, so no decision is
ever made on stale facts: a worker whose job was reclaimed cannot finish it, a reclaim cannot take a
job whose lease was just extended, and two workers cannot lease one job (a lease's jobs are chosen
by a script, PICK, and taken by APPLY, all of the batch or none).

APPLY also queues the webhook deliveries a change calls for, and keeps p:deadlines (the jobs a
Cancel-After may still cancel) in step; the outbox's own scripts are in redis_outbox.py.

Times in scores and fields are integer microseconds since the epoch (exact in a double up to 2**53,
about the year 2255), taken from the store's clock: the machines must keep their clocks in sync
(NTP), as leases compare one machine's time with another's.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection, Sequence
from datetime import datetime

from kandinsky_serve.domain import transitions
from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.domain.job import Job, JobEvent, JobState, Output, utcnow
from kandinsky_serve.domain.transitions import Record
from kandinsky_serve.redis_server import check_server, connect, untyped
from kandinsky_serve.store import redis_scripts as scripts
from kandinsky_serve.store.codec import job_json, micros, split_request, strip_request
from kandinsky_serve.store.protocol import (
    Admission,
    Heartbeat,
    JobPage,
    insufficient_credits,
    queue_full,
    too_many_in_flight,
)
from kandinsky_serve.store.redis_outbox import RedisOutbox
from kandinsky_serve.store.redis_records import (
    Change,
    Read,
    apply_args,
    live_fields,
    pairs,
    read_job,
    read_of,
    with_request,
)

logger = logging.getLogger(__name__)

_CAS_TRIES = 100  # a job changes a handful of times in its life; more conflicts than this is a bug
_EXPIRE_CHUNK = 100


class RedisJobStore(RedisOutbox):
    """A JobStore in Redis, under keys that start with `prefix:`; open one per process."""

    def __init__(self, url: str, *, prefix: str = "ks", clock: Callable[[], datetime] = utcnow) -> None:
        self._redis = connect(url, decode_responses=True)
        self._p = f"{prefix}:"
        self._clock = clock
        self._enqueue = self._redis.register_script(scripts.ENQUEUE)
        self._pick = self._redis.register_script(scripts.PICK)
        self._apply = self._redis.register_script(scripts.APPLY)
        self._list = self._redis.register_script(scripts.LIST)
        self._add_events = self._redis.register_script(scripts.ADD_EVENTS)
        self._open_outbox()
        try:
            self.check_server()
            self._index_models()
        except BaseException:
            self.close()
            raise

    def check_server(self) -> None:
        check_server(self._redis)

    # -- the JobStore protocol ------------------------------------------------------------------

    def enqueue(self, job: Job, admission: Admission | None = None) -> Job:
        """Stores the job as given. Enqueueing an id that exists changes nothing and returns the stored
        job (as get() does, without its input images), so a retried enqueue is harmless."""
        transitions.check_new(job)
        limits = admission or Admission()
        request, inputs = split_request(job.request)
        fields = {
            "job": job_json(job),
            "owner": job.owner,
            "batch": job.batch_key,
            "created": str(micros(job.created_at)),
            "price": repr(job.price),
            "model": job.request.model or "",
            "cancel_at": "" if job.cancel_at is None else str(micros(job.cancel_at)),
            **live_fields(job),
        }
        reply = untyped(
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
        return float(untyped(self._redis.hget(f"{self._p}spent", owner)) or 0)

    def get(self, job_id: str) -> Job | None:
        """Without the request's input images, which only lease() reads."""
        read = self._read(job_id, with_request=True)
        return None if read is None else read.record.job

    def list_jobs(self, owner: str, *, limit: int = 100, cursor: str | None = None) -> JobPage:
        """The cursor is the id of the last job of the previous page; one that is not among the owner's
        jobs is refused with an invalid_input ServeError. Jobs as get() returns them."""
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        found = untyped(self._list(args=[self._p, owner, limit, cursor or ""]))
        if found is None:
            raise invalid("cursor", "does not come from an earlier page of this list")
        pipe = self._redis.pipeline(transaction=True)
        for job_id in found[:limit]:
            pipe.hgetall(self._job_key(job_id))
            pipe.get(f"{self._p}req:{job_id}")
        replies = pipe.execute()
        jobs = [read_job(replies[i], replies[i + 1]) for i in range(0, len(replies), 2)]
        return JobPage(jobs=jobs, next_cursor=jobs[-1].id if len(found) > limit else None)

    def lease(
        self, worker: str, *, max_batch: int, lease_seconds: float, models: Collection[str] | None = None
    ) -> list[Job]:
        """The jobs with their input images: the one read that loads them. PICK chooses them, and APPLY
        takes them only if no other worker did meanwhile; else they are chosen again."""
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, not {max_batch}")
        served = ["any"] if models is None else ["only", *models]
        for _ in range(_CAS_TRIES):
            picked = [pairs(flat) for flat in untyped(self._pick(args=[self._p, max_batch, *served]))]
            if not picked:
                return []
            now = self._clock()
            reads = [read_of(fields) for fields in picked]
            changes = [(read, Change(transitions.lease(read.record.job, worker, now, lease_seconds))) for read in reads]
            if (requests := self._write(changes, whole=True)) is not None:
                jobs = [change.record.job for _, change in changes]
                return [with_request(job, text) for job, text in zip(jobs, requests, strict=True)]
        raise RuntimeError("other workers kept taking the jobs this lease chose")

    def heartbeat(self, worker: str, job_ids: Sequence[str], lease_seconds: float) -> Heartbeat:
        unique = list(dict.fromkeys(job_ids))  # APPLY would see a job given twice as changed by another
        for _ in range(_CAS_TRIES):
            if not unique:
                return Heartbeat()
            pipe = self._redis.pipeline(transaction=True)
            for job_id in unique:
                pipe.hgetall(self._job_key(job_id))
            now = self._clock()
            changes = []
            for fields in pipe.execute():
                if not fields:
                    continue
                read = read_of(fields)
                if (extended := transitions.heartbeat(read.record, worker, now, lease_seconds)) is not None:
                    changes.append((read, Change(extended)))
            if not changes or self._write(changes) is not None:
                held = {change.record.job.id: change.record.job.cancel_requested for _, change in changes}
                return Heartbeat(held=set(held), cancel_requested={job_id for job_id, cancel in held.items() if cancel})
        raise RuntimeError(f"the jobs {unique} kept changing while the store tried to extend their leases")

    def complete(self, job_id: str, worker: str, outputs: Sequence[Output]) -> bool:
        return self._change(job_id, lambda r, now: transitions.complete(r.record, worker, outputs, now)) is not None

    def fail(self, job_id: str, worker: str, code: ErrorCode, message: str) -> bool:
        return self._change(job_id, lambda r, now: transitions.fail(r.record, worker, code, message, now)) is not None

    def finish_canceled(self, job_id: str, worker: str) -> bool:
        return self._change(job_id, lambda r, now: transitions.finish_canceled(r.record, worker, now)) is not None

    def release(self, job_id: str, worker: str) -> bool:
        return self._change(job_id, lambda r, now: transitions.release(r.record, worker, now)) is not None

    def cancel(self, job_id: str) -> Job | None:
        changed = self._change(job_id, lambda read, now: transitions.cancel(read.record, now), with_request=True)
        # unchanged (terminal, cancel already requested, or no such job): the job as it is
        return changed if changed is not None else self.get(job_id)

    def add_events(self, job_id: str, events: Sequence[JobEvent]) -> None:
        """Events for a job that does not exist are dropped: a progress report must never fail a run."""
        if events:
            self._add_events(args=[self._p, job_id, *(event.model_dump_json() for event in events)])

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        texts = untyped(self._redis.lrange(f"{self._p}ev:{job_id}", max(after, 0), -1))
        return [
            JobEvent.model_validate_json(text).model_copy(update={"seq": seq})
            for seq, text in enumerate(texts, start=max(after, 0) + 1)
        ]

    def reclaim(self, *, max_attempts: int) -> list[Job]:
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {max_attempts}")
        now = self._clock()
        changed: list[Job] = []
        while True:
            # every id of a chunk leaves the expired range (changed, or no longer expired), so the next
            # chunk is new work
            chunk = untyped(
                self._redis.zrangebyscore(f"{self._p}leases", "-inf", f"({micros(now)}", start=0, num=_EXPIRE_CHUNK)
            )
            for job_id in chunk:
                decide = lambda read, _: transitions.reclaim(read.record, now, max_attempts)  # noqa: E731
                if (job := self._change(job_id, decide, with_request=True)) is not None:
                    changed.append(job)
            if len(chunk) < _EXPIRE_CHUNK:
                return sorted(changed, key=lambda job: (micros(job.created_at), job.id))

    def expire(self, completed_before: datetime) -> list[str]:
        cutoff = micros(completed_before)
        keys: list[str] = []
        removed: list[Output] = []  # the outputs of the job being stripped, as last read

        def decide(read: Read, _: datetime) -> Change | None:
            if (stripped := transitions.expire(read.record, completed_before)) is None:
                return None
            removed[:] = read.record.job.outputs
            # APPLY deletes the inputs of a job whose data is removed; p:req is rewritten for a record
            # stored whole before p:inp existed
            return Change(stripped, request=strip_request(read.request))

        while True:
            chunk = untyped(
                self._redis.zrangebyscore(f"{self._p}done", "-inf", f"({cutoff}", start=0, num=_EXPIRE_CHUNK)
            )
            for job_id in chunk:
                if self._change(job_id, decide, raw_request=True) is not None:
                    keys.extend(output.key for output in removed)
            if len(chunk) < _EXPIRE_CHUNK:
                return keys

    def counts(self) -> dict[JobState, int]:
        found = untyped(self._redis.hgetall(f"{self._p}counts"))
        return {state: int(found.get(state.value, 0)) for state in JobState}

    def close(self) -> None:
        self._redis.close()

    # -- transitions ----------------------------------------------------------------------------

    def _change(
        self,
        job_id: str,
        decide: Callable[[Read, datetime], Record | Change | None],
        *,
        with_request: bool = False,
        raw_request: bool = False,
    ) -> Job | None:
        """Reads the job and its version, asks `decide` (a transition, given the store's time) what it
        becomes, and writes that if nothing changed the job meanwhile; else decides again on a new read.
        The job as changed, or None when `decide` wants no change (or there is no such job)."""
        for _ in range(_CAS_TRIES):
            read = self._read(job_id, with_request=with_request or raw_request, parse_request=with_request)
            if read is None or (decided := decide(read, self._clock())) is None:
                return None
            change = decided if isinstance(decided, Change) else Change(decided)
            if self._write([(read, change)]) is not None:
                return change.record.job
        raise RuntimeError(f"job {job_id} kept changing while the store tried to change it")

    def _write(self, changes: Sequence[tuple[Read, Change]], *, whole: bool = False) -> list[str] | None:
        """Applies the changes, each decided on its read, all or none: None if a job changed since it
        was read. With whole, the jobs' whole requests (input images included), in order."""
        reply = untyped(self._apply(args=apply_args(self._p, changes, whole=whole, now=self._clock())))
        if reply == 0:
            return None
        return list(reply) if whole else []

    def _read(self, job_id: str, *, with_request: bool, parse_request: bool = True) -> Read | None:
        pipe = self._redis.pipeline(transaction=True)
        pipe.hgetall(self._job_key(job_id))
        if with_request:
            pipe.get(f"{self._p}req:{job_id}")
        fields, *request = pipe.execute()
        if not fields:
            return None
        return read_of(fields, request[0] if request else "", parse_request=parse_request)

    def _index_models(self) -> None:
        """Records the model of the queued and running jobs stored before jobs had a `model` field (and
        p:modelq its queue), so that a lease for some models finds them. Jobs that a node of an older
        version enqueues after this are found by leases for any model only, until a store opens again:
        upgrade every node together."""
        index = self._redis.register_script(scripts.INDEX_MODEL)
        for job_id in untyped(self._redis.register_script(scripts.UNINDEXED_MODELS)(args=[self._p])):
            request = untyped(self._redis.get(f"{self._p}req:{job_id}"))
            model = None if request is None else json.loads(request).get("model")
            index(args=[self._p, job_id, model or ""])

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
