"""JobService: what every dialect asks of the server, in canonical terms.

Submit (validate against the served model the request names, fix the seed, refuse when the queue is
full; a retry with the same Idempotency-Key gets the job the key made), get, list, cancel, and wait
for a job to finish without polling the database in a loop. Run a job synchronously for a caller who
can only receive it in the answer (canceled if it leaves).
"""

from __future__ import annotations

import hashlib
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from functools import partial
from typing import Protocol

import anyio

from kandinsky_serve.auth.caller import Caller
from kandinsky_serve.auth.keys import RateLimiter
from kandinsky_serve.auth.pricing import price
from kandinsky_serve.blobs.protocol import Blob, BlobStore
from kandinsky_serve.domain import catalogue
from kandinsky_serve.domain.catalogue import Family, ModelEntry
from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.domain.events import ProgressEvent
from kandinsky_serve.domain.job import Job, JobEvent, JobState, Webhook, idempotent_job_id, new_job_id
from kandinsky_serve.domain.meta import JobMeta, NativeMeta
from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.notify import Notifier, Watch
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.protocol import Admission, JobPage, JobStore
from kandinsky_serve.worker.messages import Cancel, ToWorker, Wake

# named in errors: a client's retry logic, not its generation parameters, is what to fix
IDEMPOTENCY_HEADER = "Idempotency-Key"

# (here, not in annotations inside JobService, whose `list` method shadows the builtin there)
LogLines = list[str]
Images = list[Blob]


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
        # private: dialects ask the service (logs, images, progress...), never the store, blobs or notifier
        self._store = store
        self._blobs = blobs
        self._reader = _ReadOnly(blobs)
        self._notifier = notifier
        self.workers = workers
        # counts submissions, not status polls: SDKs poll once a second, and the GPUs are guarded by
        # the jobs-in-flight limit anyway (Replicate, too, limits creating predictions apart)
        self.limiter = limiter
        self.models = catalogue.served(settings.served_models)
        self.model = self.models[0]  # the default, for requests that name no model
        # each served model by its id, its aliases and the name it was configured by
        by_id = {entry.id: entry for entry in self.models}
        self._by_name = {name.lower(): entry for entry in self.models for name in entry.names} | {
            configured.lower(): by_id[catalogue.resolve(configured).id] for configured in settings.served_models
        }

    def submit(
        self,
        request: GenerationRequest,
        caller: Caller,
        meta: JobMeta | None = None,
        idempotency_key: str | None = None,
        *,
        cancel_at: datetime | None = None,
        webhooks: Sequence[Webhook] = (),
    ) -> Job:
        """Queues the request for the caller, if its rate, credits, jobs in flight and the queue allow.
        `cancel_at`: the janitor cancels the job if it is not finished by then; `webhooks`: told of
        its progress through the store's outbox (both outlive this process).

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
            meta=meta or NativeMeta(),
            fingerprint=fingerprint,
            cancel_at=cancel_at,
            webhooks=tuple(webhooks),
        )
        stored = self._store.enqueue(job, admission)
        if stored is not job:  # a concurrent twin enqueued it first (the store admitted only that one)
            return _same_request(stored, caller.owner, fingerprint)
        if self.workers is not None:
            self.workers.broadcast(Wake())
        return job

    def _earlier(self, job_id: str, owner: str, fingerprint: str | None) -> Job | None:
        """The job an idempotency key made before, or None; an error if it was made for another request."""
        job = self._store.get(job_id)
        return None if job is None else _same_request(job, owner, fingerprint)

    def served(self, request: GenerationRequest) -> GenerationRequest:
        """The request on the served model it names (the default when none), checked against that
        model's family; seeded() then fixes its seed."""
        entry = self.model if request.model is None else self.named(request.model)
        entry.check(request)
        return request.model_copy(update={"model": entry.id})

    @property
    def served_ids(self) -> str:
        return ", ".join(entry.id for entry in self.models)

    def model_status(self, workers: list[dict[str, object]] | None = None) -> list[dict[str, object]]:
        """Each served model (the default first) and how many of its workers are up (ready or busy),
        from `workers` (their status, as the caller just read it) or asked of the workers now."""
        if workers is None:
            workers = self.workers.status() if self.workers is not None else []
        up: dict[str, int] = {}
        for worker in workers:
            if worker.get("state") in ("ready", "busy"):
                # a worker from before several models names none: it ran the one model, the default
                model = str(worker.get("model") or self.model.id)
                up[model] = up.get(model, 0) + 1
        return [
            {
                "id": entry.id,
                "family": entry.family.value,
                "default": entry is self.model,
                "ready": up.get(entry.id, 0) > 0,
                "workers": up.get(entry.id, 0),
            }
            for entry in self.models
        ]

    def serves(self, name: str) -> bool:
        return name.lower() in self._by_name

    def named(self, name: str) -> ModelEntry:
        """The served model a name means; NOT_FOUND for a model of the catalogue not served here,
        invalid_input (naming `model`) for a name that is no model at all."""
        entry = self._by_name.get(name.lower())
        if entry is not None:
            return entry
        if catalogue.find(name) is not None:
            raise ServeError(
                ErrorCode.NOT_FOUND,
                f"Model {name} is not served here; this server serves {self.served_ids}.",
                field="model",
            )
        raise invalid("model", f"unknown model {name!r}; this server serves {self.served_ids}")

    def for_family(self, family: Family, asked: str) -> ModelEntry:
        """The served model of a family (the first listed), for dialects whose model names name a
        family (Segmind slugs, Replicate and Eachlabs models); NOT_FOUND naming `asked` otherwise."""
        entry = self.serving(family)
        if entry is None:
            raise ServeError(
                ErrorCode.NOT_FOUND, f"{asked} is not served here; this server serves {self.served_ids}.", field="model"
            )
        return entry

    def serving(self, family: Family) -> ModelEntry | None:
        return next((entry for entry in self.models if entry.family is family), None)

    def family_of(self, model_id: str | None) -> Family:
        """The family of a job's model, also one no longer served (the default's, if unknown)."""
        if model_id is None:
            return self.model.family
        entry = self._by_name.get(model_id.lower()) or catalogue.find(model_id)
        return entry.family if entry is not None else self.model.family

    def seeded(self, request: GenerationRequest) -> GenerationRequest:
        """With a fixed seed, so that a job retried after a crash makes the same images."""
        seed = request.seed if request.seed is not None else random.randrange(2**32)  # noqa: S311
        return request.model_copy(update={"seed": seed})

    def remaining_credits(self, caller: Caller) -> float | None:
        if caller.key is None or caller.key.credits is None:
            return None
        return max(caller.key.credits - self._store.spent(caller.owner), 0.0)

    def get(self, job_id: str, owner: str) -> Job:
        job = self._store.get(job_id)
        if job is None or job.owner != owner:  # another key's job does not exist, as far as you know
            raise ServeError(ErrorCode.NOT_FOUND, f"Job {job_id} not found.")
        return job

    def list(self, owner: str, limit: int = 100, cursor: str | None = None) -> JobPage:
        return self._store.list_jobs(owner, limit=limit, cursor=cursor)

    def cancel(self, job_id: str, owner: str) -> Job:
        self.get(job_id, owner)
        job = self._store.cancel(job_id)
        if job is None:
            raise ServeError(ErrorCode.NOT_FOUND, f"Job {job_id} not found.")
        if job.cancel_requested and not job.state.terminal and self.workers is not None:
            self.workers.broadcast(Cancel(job_id))
        self._notifier.publish([job_id])
        return job

    # --- what dialects render besides the record: logs, images, files, progress, counts

    def logs(self, job_id: str) -> LogLines:
        """The job's log lines (batching, progress in tqdm style), oldest first."""
        return [event.message for event in self._store.events(job_id) if event.message]

    def images(self, job: Job) -> Images | None:
        """The job's outputs' bytes, in order; None once retention removed any of them."""
        found = [self._blobs.get(output.key) for output in job.outputs]
        images = [blob for blob in found if blob is not None]
        return images if len(images) == len(found) else None

    @property
    def reader(self) -> BlobReader:
        """Stored files by key (outputs behind signed links, and what a dialect reads them by): read
        only, since only workers and the files service write them."""
        return self._reader

    def progress(self, job_id: str) -> ProgressEvent | None:
        """The running job's latest step, as this process last heard it (None: none heard)."""
        return self._notifier.progress(job_id)

    def counts(self) -> dict[JobState, int]:
        """Jobs by state (readiness, metrics); raises when the store does not answer."""
        return self._store.counts()

    def watch(self, job_id: str, steps: bool = False) -> AbstractContextManager[Watch]:
        """Updates about the job from now on (its record's changes; with steps, every step): the live
        event stream. The caller has checked the job is the caller's."""
        return self._notifier.watch(job_id, steps)

    async def wait(self, job_id: str, owner: str, timeout: float) -> Job:
        """The job once it is terminal, or as it is when timeout seconds have passed. Reads the store
        once, then once per change of the job's record (not at every step)."""
        deadline = time.monotonic() + timeout
        # watching from before the first read: a change between a read and the wait is not missed
        with self._notifier.watch(job_id) as watch:
            while True:
                job = await anyio.to_thread.run_sync(self.get, job_id, owner)
                left = deadline - time.monotonic()
                if job.state.terminal or left <= 0:
                    return job
                # a worker's report wakes us at once; the periodic look covers reclaims and lost messages
                await watch.changed(min(left, 5.0))

    async def run_sync(
        self,
        request: GenerationRequest,
        caller: Caller,
        meta: JobMeta,
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
        self._store.add_events(job_id, [note])
        self.cancel(job_id, owner)


class BlobReader(Protocol):
    def get(self, key: str) -> Blob | None: ...


class _ReadOnly:
    def __init__(self, blobs: BlobStore) -> None:
        self._blobs = blobs

    def get(self, key: str) -> Blob | None:
        return self._blobs.get(key)


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
