"""JobStore: every durable fact about jobs. One contract, one test suite, several backends.

Leases: a worker that takes jobs holds them until `lease_expires`; it extends the lease with
`heartbeat` while it works, so a long job is never taken from a live worker, and `reclaim` gives
the jobs of a dead worker back to the queue (or fails them after `max_attempts`). Only the worker
that holds a lease can finish the job, so a job is finished once even when two workers ran it.

Input images: only `lease` returns a job's request whole. Every other read (get, list_jobs, cancel,
reclaim, the job an enqueue of an existing id returns) gives it without its images (image, mask,
hint None; a fuse item that was an image has neither prompt nor image, as after expiry), and never
loads them, so a status read of a job with an 18 MiB input costs what a text job's does.

Deadlines and webhooks are data here, not timers of the process that accepted a job: `overdue`
finds the jobs whose `cancel_at` has passed (the janitor cancels them), and every change of a job
with webhooks writes the deliveries it calls for to the store's outbox (store/outbox.py) in the same
transaction, for any API node to send.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.domain.job import Job, JobEvent, JobState, Output
from kandinsky_serve.store.outbox import Outbox


@dataclass(frozen=True)
class JobPage:
    jobs: list[Job]
    next_cursor: str | None  # pass as `cursor` for the next (older) page; None on the last page


@dataclass(frozen=True)
class Admission:
    """Limits an enqueue must fit, checked in the same transaction as the enqueue itself."""

    budget: float | None = None  # the owner's credits: spent() + the job's price must not exceed it
    max_active: int | None = None  # the owner's queued + running jobs, this one included
    max_queued: int | None = None  # all queued jobs, this one included


def queue_full() -> ServeError:
    return ServeError(ErrorCode.OVERLOADED, "The server is busy (its queue is full); try again shortly.", retry_after=5)


def too_many_in_flight(max_active: int | None) -> ServeError:
    return ServeError(
        ErrorCode.RATE_LIMITED,
        f"Too many jobs in flight: this key may have {max_active} queued or running at once.",
        retry_after=2,
    )


def insufficient_credits(price: float, remaining: float) -> ServeError:
    return ServeError(
        ErrorCode.INSUFFICIENT_CREDITS,
        f"Insufficient credits: this job costs {price:g} and {max(remaining, 0):g} remain.",
    )


@dataclass(frozen=True)
class Heartbeat:
    held: set[str] = field(default_factory=set)  # of the ids sent, those this worker still holds
    cancel_requested: set[str] = field(default_factory=set)  # of those, the ones to stop


class JobStore(Outbox, Protocol):
    def enqueue(self, job: Job, admission: Admission | None = None) -> Job:
        """Stores a new QUEUED job (created_at, state and attempts as given) and returns it. With an
        admission, refuses with ServeError insufficient_credits, rate_limited (too many active jobs of
        the owner) or overloaded (queue full) instead, atomically with the insert. An id that exists
        changes nothing: the stored job is returned, as get() returns it."""
        ...

    def spent(self, owner: str) -> float:
        """The sum of the prices of the owner's queued, running and succeeded jobs: a job that fails or
        is canceled costs nothing."""
        ...

    def get(self, job_id: str) -> Job | None:
        """The job, its request without input images."""
        ...

    def list_jobs(self, owner: str, *, limit: int = 100, cursor: str | None = None) -> JobPage:
        """The owner's jobs, newest first, `limit` at a time, as get() returns them."""
        ...

    def lease(
        self, worker: str, *, max_batch: int, lease_seconds: float, models: Collection[str] | None = None
    ) -> list[Job]:
        """Claims the oldest QUEUED job and up to max_batch - 1 more QUEUED jobs with the same batch_key
        (oldest first) for `worker`: RUNNING, attempts + 1, started_at set if unset, leased until now +
        lease_seconds. Atomic: no job is handed to two workers. [] when nothing is queued. The one read
        that returns the requests whole, input images included.

        With `models`, only jobs whose request.model is one of them: the oldest QUEUED job of those
        models, then its batch_key mates (a batch key names the model, so they are of the same model).
        None takes a job of any model; an empty collection takes nothing; a job without a model id is
        taken only by a lease for any model."""
        ...

    def heartbeat(self, worker: str, job_ids: Sequence[str], lease_seconds: float) -> Heartbeat:
        """Extends to now + lease_seconds the leases `worker` still holds among job_ids."""
        ...

    def complete(self, job_id: str, worker: str, outputs: Sequence[Output]) -> bool:
        """RUNNING -> SUCCEEDED with its outputs, if `worker` holds the lease; else False and no change."""
        ...

    def fail(self, job_id: str, worker: str, code: ErrorCode, message: str) -> bool:
        """RUNNING -> FAILED, if `worker` holds the lease; else False and no change."""
        ...

    def finish_canceled(self, job_id: str, worker: str) -> bool:
        """RUNNING -> CANCELED once the worker has stopped it, if `worker` holds the lease."""
        ...

    def release(self, job_id: str, worker: str) -> bool:
        """RUNNING -> QUEUED without counting the attempt (a draining worker gives work back)."""
        ...

    def cancel(self, job_id: str) -> Job | None:
        """QUEUED -> CANCELED at once; RUNNING: cancel_requested set, the worker stops it at its next
        step; terminal: unchanged. The job after the change, as get() returns it; None if there is
        no such job."""
        ...

    def add_events(self, job_id: str, events: Sequence[JobEvent]) -> None:
        """Appends progress events and log lines; the store numbers them (seq 1, 2, ... per job)."""
        ...

    def events(self, job_id: str, after: int = 0) -> list[JobEvent]:
        """The job's events with seq > after, in order."""
        ...

    def reclaim(self, *, max_attempts: int) -> list[Job]:
        """RUNNING jobs whose lease has expired go back to QUEUED, or become FAILED with worker_lost
        once attempts >= max_attempts. Returns the jobs changed, as they are now."""
        ...

    def expire(self, completed_before: datetime) -> list[str]:
        """Terminal jobs completed before the time whose data is still kept: input images are deleted
        (lease could not return them any more), outputs cleared, data_removed set. Returns the blob
        keys to delete."""
        ...

    def overdue(self) -> list[str]:
        """The ids of up to 100 jobs past their deadline (cancel_at before now) that a cancel would still
        change (not terminal, no cancel requested), oldest deadline first: the janitor cancels them."""
        ...

    def counts(self) -> dict[JobState, int]:
        """How many jobs are in each state (queue depth = counts()[QUEUED])."""
        ...

    def close(self) -> None: ...
