"""JobService: what every dialect asks of the server, in canonical terms.

Submit (validate against the served model, fix the seed, refuse when the queue is full; a retry
with the same Idempotency-Key gets the job the key made), get, list, cancel, and wait for a job to
finish without polling the database in a loop. Run a job synchronously for a caller who can only
receive it in the answer (canceled if it leaves).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Awaitable, Callable
from functools import partial
from typing import TYPE_CHECKING, Protocol

import anyio

from kandinsky_serve.auth.keys import RateLimiter
from kandinsky_serve.auth.pricing import price
from kandinsky_serve.blobs.protocol import BlobStore
from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.domain.job import Job, JobEvent, idempotent_job_id, new_job_id
from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.engine.registry import ModelSpec, resolve_model
from kandinsky_serve.notify import Notifier
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.protocol import Admission, JobPage, JobStore
from kandinsky_serve.worker.messages import Cancel, ToWorker, Wake

if TYPE_CHECKING:
    from kandinsky_serve.api.auth import Caller


# named in errors: a client's retry logic, not its generation parameters, is what to fix
IDEMPOTENCY_HEADER = "Idempotency-Key"


class WorkerPool(Protocol):
    """The workers as an API process sees them: its own supervised children (`serve`), or workers on
    other machines reached over the Redis bus (`api`)."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def broadcast(self, message: ToWorker) -> None: ...

    def status(self) -> list[dict[str, object]]: ...


class JobService:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        blobs: BlobStore,
        notifier: Notifier,
        workers: WorkerPool | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.notifier = notifier
        self.workers = workers
        # counts submissions, not status polls: SDKs poll once a second, and the GPUs are guarded by
        # the jobs-in-flight limit anyway (Replicate, too, limits creating predictions apart)
        self.limiter = limiter
        self.model: ModelSpec = resolve_model(settings.model)

    def submit(
        self,
        request: GenerationRequest,
        caller: Caller,
        meta: dict[str, object] | None = None,
        idempotency_key: str | None = None,
    ) -> Job:
        """Queues the request for the caller, if its rate, credits, jobs in flight and the queue allow.

        With an idempotency key (the caller's, Stripe's semantics), a retry gets the job the key made
        before, spending no rate, credits or jobs-in-flight slot again, if the request is the same
        (else an invalid_input error naming Idempotency-Key). The job id is derived from owner and
        key, and a store enqueues an existing id as a no-op, so concurrent retries make one job. A
        key never expires: job records outlive retention (only their inputs and outputs go)."""
        request = self.served(request)
        job_id, fingerprint = None, None
        if idempotency_key is not None:
            job_id, fingerprint = idempotent_job_id(caller.owner, idempotency_key), request_fingerprint(request)
            if (earlier := self._earlier(job_id, caller.owner, fingerprint)) is not None:
                return earlier
        request = self.seeded(request)
        key = caller.key  # its own limits, where it has them, replace the server's
        if self.limiter is not None:
            try:
                self.limiter.check(caller.owner, key.rate_limit if key else None)
            except ServeError as refusal:
                # a concurrent twin may have made the job since we looked: then this is a retry
                if refusal.code is not ErrorCode.RATE_LIMITED or job_id is None:
                    raise
                if (earlier := self._earlier(job_id, caller.owner, fingerprint)) is None:
                    raise
                return earlier
        cost = price(request, self.settings.credits_per_unit)
        admission = Admission(
            budget=key.credits if key else None,
            max_active=key.max_jobs if key and key.max_jobs is not None else self.settings.max_jobs_per_key,
            max_queued=self.settings.max_queue,
        )
        job = Job(
            id=job_id or new_job_id(),
            owner=caller.owner,
            request=request,
            price=cost,
            meta=dict(meta or {}),
            fingerprint=fingerprint,
        )
        stored = self.store.enqueue(job, admission)
        if stored is not job:  # a concurrent twin enqueued it first (the store admitted only that one)
            return _same_request(stored, caller.owner, fingerprint)
        if self.workers is not None:
            self.workers.broadcast(Wake())
        return job

    def _earlier(self, job_id: str, owner: str, fingerprint: str | None) -> Job | None:
        """The job an idempotency key made before, or None; an error if it was made for another request."""
        job = self.store.get(job_id)
        return None if job is None else _same_request(job, owner, fingerprint)

    def served(self, request: GenerationRequest) -> GenerationRequest:
        """The request on this server's model, checked against it (seeded() then fixes its seed)."""
        if request.model not in (None, self.model.id, self.settings.model):
            raise invalid("model", f"{request.model!r} is not served here; this server runs {self.model.id}")
        self.model.check(request)
        return request.model_copy(update={"model": self.model.id})

    def seeded(self, request: GenerationRequest) -> GenerationRequest:
        """With a fixed seed, so that a job retried after a crash makes the same images."""
        seed = request.seed if request.seed is not None else random.randrange(2**32)  # noqa: S311
        return request.model_copy(update={"seed": seed})

    def remaining_credits(self, caller: Caller) -> float | None:
        if caller.key is None or caller.key.credits is None:
            return None
        return max(caller.key.credits - self.store.spent(caller.owner), 0.0)

    def get(self, job_id: str, owner: str) -> Job:
        job = self.store.get(job_id)
        if job is None or job.owner != owner:  # another key's job does not exist, as far as you know
            raise ServeError(ErrorCode.NOT_FOUND, f"Job {job_id} not found.")
        return job

    def list(self, owner: str, limit: int = 100, cursor: str | None = None) -> JobPage:
        return self.store.list_jobs(owner, limit=limit, cursor=cursor)

    def cancel(self, job_id: str, owner: str) -> Job:
        self.get(job_id, owner)
        job = self.store.cancel(job_id)
        if job is None:
            raise ServeError(ErrorCode.NOT_FOUND, f"Job {job_id} not found.")
        if job.cancel_requested and not job.state.terminal and self.workers is not None:
            self.workers.broadcast(Cancel(job_id))
        self.notifier.publish([job_id])
        return job

    async def wait(self, job_id: str, owner: str, timeout: float) -> Job:
        """The job once it is terminal, or as it is when timeout seconds have passed."""
        deadline = time.monotonic() + timeout
        while True:
            job = await anyio.to_thread.run_sync(self.get, job_id, owner)
            left = deadline - time.monotonic()
            if job.state.terminal or left <= 0:
                return job
            # a worker's report wakes us at once; the periodic look covers reclaims and lost messages
            await self.notifier.wait(job_id, min(left, 5.0))

    async def run_sync(
        self,
        request: GenerationRequest,
        caller: Caller,
        meta: dict[str, object],
        timeout: float,
        abandoned: Callable[[], Awaitable[None]] | None = None,
    ) -> Job:
        """Submits and waits, for a call whose answer is the only way to the job (Segmind v1, OpenAI
        Images: no id to fetch later). So the job is canceled when `abandoned` returns (the client
        went away) or timeout seconds pass, rather than keep a GPU busy for nobody. Returns the
        terminal job; raises TIMEOUT, or CANCELED for a client that is gone."""
        job = await anyio.to_thread.run_sync(partial(self.submit, request, caller, meta))
        finished: Job | None = None
        try:
            async with anyio.create_task_group() as group:
                if abandoned is not None:
                    group.start_soon(_cancel_when, abandoned, group.cancel_scope)
                finished = await self.wait(job.id, caller.owner, timeout)
                group.cancel_scope.cancel()
        finally:
            if finished is None or not finished.state.terminal:
                why = "the client went away" if finished is None else f"not finished within {timeout:g} s"
                # shielded: a request cancelled from outside (the server stopping) cancels its job too
                with anyio.CancelScope(shield=True):
                    await anyio.to_thread.run_sync(self._abandon, job.id, caller.owner, why)
        if finished is None:
            raise ServeError(ErrorCode.CANCELED, f"Job {job.id} was canceled: the client went away.")
        if not finished.state.terminal:
            raise ServeError(ErrorCode.TIMEOUT, f"Job {job.id} did not finish within {timeout:g} s; it was canceled.")
        return finished

    def _abandon(self, job_id: str, owner: str, why: str) -> None:
        # in the job's log, so that a canceled job nobody canceled by hand explains itself
        note = JobEvent(message=f"canceled: {why}, and the answer was the only way to this job")
        self.store.add_events(job_id, [note])
        self.cancel(job_id, owner)


def request_fingerprint(request: GenerationRequest) -> str:
    """What an idempotent retry must repeat: every generation parameter, input images included, as
    the caller sent them (no server-drawn seed). Delivery options (webhooks, waiting) are not in it."""
    return hashlib.sha256(request.model_dump_json().encode()).hexdigest()


def _same_request(job: Job, owner: str, fingerprint: str | None) -> Job:
    if job.owner == owner and job.fingerprint is not None and job.fingerprint == fingerprint:
        return job
    # another owner's job cannot have this id (the id hashes the owner); if one did, it stays unnamed
    which = f" (job {job.id})" if job.owner == owner else ""
    raise invalid(
        IDEMPOTENCY_HEADER,
        f"this key was already used for a different request{which}; "
        "send a new key for a new request, or repeat that request exactly to get its job",
    )


async def _cancel_when(event: Callable[[], Awaitable[None]], scope: anyio.CancelScope) -> None:
    await event()
    scope.cancel()
