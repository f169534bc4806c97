"""The job state machine's decisions, made once for every store.

Each function takes a job as a store holds it (a `Record`: the Job and its lease) and the inputs of
the event (who asks, the time, the limits) and answers the record as it must become, or None when
the event changes nothing. No I/O: a store chooses the rows, reads them, asks here and writes the
answer atomically (SQLite in one transaction, Redis by a compare-and-set on the job's version), so
the two backends cannot drift apart on what an event means. `JobState.advance` still asserts every
state change.

A lease (who runs a job, until when) exists only while the job is RUNNING; every record these
functions answer in another state has none. A worker holds a job while it is RUNNING under its
name, even past `lease_expires`, until `reclaim` takes it back: a late heartbeat or completion of a
job nobody has taken yet is still good.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from kandinsky_serve.domain.errors import ErrorCode
from kandinsky_serve.domain.job import Job, JobState, Output, WebhookEvent


@dataclass(frozen=True)
class Record:
    """A job and its lease, as a store keeps them."""

    job: Job
    worker: str | None = None  # the lease holder, while RUNNING
    lease_expires: datetime | None = None

    def held_by(self, worker: str) -> bool:
        return self.job.state is JobState.RUNNING and self.worker == worker


def check_new(job: Job) -> None:
    """What enqueue refuses: a job stored RUNNING would have no lease holder to finish it."""
    if job.state is JobState.RUNNING:
        raise ValueError("a job cannot be enqueued as running: no worker holds a lease on it")


def lease(job: Job, worker: str, now: datetime, lease_seconds: float) -> Record:
    """A QUEUED job taken by `worker`: the attempt counts, and its first start is kept."""
    running = job.model_copy(
        update={
            "state": job.state.advance(JobState.RUNNING),
            "attempts": job.attempts + 1,
            "started_at": job.started_at or now,
        }
    )
    return Record(running, worker, now + timedelta(seconds=lease_seconds))


def heartbeat(record: Record, worker: str, now: datetime, lease_seconds: float) -> Record | None:
    """The lease extended to now + lease_seconds, if `worker` holds it."""
    if not record.held_by(worker):
        return None
    return Record(record.job, worker, now + timedelta(seconds=lease_seconds))


def complete(record: Record, worker: str, outputs: Sequence[Output], now: datetime) -> Record | None:
    if not record.held_by(worker):
        return None
    return _ended(record.job, JobState.SUCCEEDED, now, outputs=list(outputs))


def fail(record: Record, worker: str, code: ErrorCode, message: str, now: datetime) -> Record | None:
    if not record.held_by(worker):
        return None
    return _ended(record.job, JobState.FAILED, now, error_code=code, error_message=message)


def finish_canceled(record: Record, worker: str, now: datetime) -> Record | None:
    if not record.held_by(worker):
        return None
    return _ended(record.job, JobState.CANCELED, now)


def release(record: Record, worker: str, now: datetime) -> Record | None:
    """A draining worker gives a job back without counting the attempt; one whose cancel was
    requested is canceled instead of running again."""
    if not record.held_by(worker):
        return None
    job = record.job
    if job.cancel_requested:
        return _ended(job, JobState.CANCELED, now)
    attempts = max(job.attempts - 1, 0)
    # with no attempt left on the books the job never started, as far as queue_time is concerned
    started_at = job.started_at if attempts else None
    return Record(
        job.model_copy(
            update={"state": job.state.advance(JobState.QUEUED), "attempts": attempts, "started_at": started_at}
        )
    )


def cancel(record: Record, now: datetime) -> Record | None:
    """QUEUED: canceled at once. RUNNING: cancel_requested, and the worker stops it at its next
    step (keeping its lease until then). Terminal, or a cancel already requested: no change."""
    job = record.job
    if job.state is JobState.QUEUED:
        return _ended(job, JobState.CANCELED, now)
    if job.state is JobState.RUNNING and not job.cancel_requested:
        return Record(job.model_copy(update={"cancel_requested": True}), record.worker, record.lease_expires)
    return None


def overdue(job: Job, now: datetime) -> bool:
    """Whether the janitor must cancel the job: its deadline (cancel_at) has passed, and a cancel
    would still change it (not terminal, no cancel requested yet)."""
    return (
        job.cancel_at is not None
        and not job.state.terminal
        and not job.cancel_requested
        and _utc(job.cancel_at) <= _utc(now)
    )


@dataclass(frozen=True)
class Delivery:
    """A webhook delivery a change queues in the outbox: tell `url` of `event` of the job. The body
    is the job as it is when it is sent, so one pending delivery per (job, event, url) is enough."""

    job_id: str
    event: WebhookEvent
    url: str

    @property
    def key(self) -> str:
        digest = hashlib.sha256(self.url.encode()).hexdigest()[:16]
        return f"{self.job_id}:{self.event.value}:{digest}"


def deliveries(before: Job, after: Job) -> list[Delivery]:
    """The webhook deliveries a change of a job from `before` to `after` queues (Replicate's events):
    `completed` once, when it becomes terminal (or `output`, for a webhook that wants outputs but
    not completion); `start` when it first starts; `logs` at every other change while it is not
    terminal (pending ones coalesce: one per webhook)."""
    if not after.webhooks or before.state.terminal:
        return []
    if before.state is after.state and before.cancel_requested == after.cancel_requested:
        return []  # no news: a lease extended
    found: dict[str, Delivery] = {}

    def add(event: WebhookEvent, url: str) -> None:
        delivery = Delivery(after.id, event, url)
        found.setdefault(delivery.key, delivery)

    for hook in after.webhooks:
        if after.state.terminal:
            if WebhookEvent.COMPLETED in hook.events:
                add(WebhookEvent.COMPLETED, hook.url)
            elif WebhookEvent.OUTPUT in hook.events and after.outputs:
                add(WebhookEvent.OUTPUT, hook.url)
            continue
        if WebhookEvent.START in hook.events and before.started_at is None and after.started_at is not None:
            add(WebhookEvent.START, hook.url)
        if WebhookEvent.LOGS in hook.events:
            add(WebhookEvent.LOGS, hook.url)
    return list(found.values())


def reclaim(record: Record, now: datetime, max_attempts: int) -> Record | None:
    """A RUNNING job whose lease expired before `now` goes back to the queue; or fails as worker_lost
    once it has had max_attempts; or is canceled, if that was requested."""
    job = record.job
    if job.state is not JobState.RUNNING or record.lease_expires is None or _utc(record.lease_expires) >= _utc(now):
        return None
    if job.cancel_requested:
        return _ended(job, JobState.CANCELED, now)
    if job.attempts >= max_attempts:
        times = "once" if job.attempts == 1 else f"{job.attempts} times"
        message = f"the worker running this job stopped {times} before finishing it, so it was not retried"
        return _ended(job, JobState.FAILED, now, error_code=ErrorCode.WORKER_LOST, error_message=message)
    return Record(job.model_copy(update={"state": job.state.advance(JobState.QUEUED)}))


def expire(record: Record, completed_before: datetime) -> Record | None:
    """A terminal job completed before the cutoff whose data is still kept: its outputs are cleared
    and data_removed set (the store deletes the input images and the outputs' blobs)."""
    job = record.job
    if not job.state.terminal or job.data_removed or job.completed_at is None:
        return None
    if _utc(job.completed_at) >= _utc(completed_before):
        return None
    return Record(job.model_copy(update={"outputs": [], "data_removed": True}))


def _utc(moment: datetime) -> datetime:
    # naive times are UTC throughout kandinsky_serve; comparing one with an aware time would raise
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _ended(job: Job, to: JobState, now: datetime, **update: Any) -> Record:
    return Record(job.model_copy(update={"state": job.state.advance(to), "completed_at": now, **update}))
