"""JobService: what every dialect asks of the server, in canonical terms.

Submit (validate against the served model, fix the seed, refuse when the queue is full), get,
list, cancel, and wait for a job to finish without polling the database in a loop.
"""

from __future__ import annotations

import random
import time
from typing import Protocol

import anyio

from kandinsky_serve.blobs.protocol import BlobStore
from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.domain.job import Job, JobState
from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.engine.registry import ModelSpec, resolve_model
from kandinsky_serve.notify import Notifier
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.protocol import JobPage, JobStore
from kandinsky_serve.worker.messages import Cancel, ToWorker, Wake


class WorkerLink(Protocol):
    """How the service reaches the workers (the supervisor, or nothing when workers run elsewhere)."""

    def broadcast(self, message: ToWorker) -> None: ...


class JobService:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        blobs: BlobStore,
        notifier: Notifier,
        workers: WorkerLink | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.notifier = notifier
        self.workers = workers
        self.model: ModelSpec = resolve_model(settings.model)

    def submit(self, request: GenerationRequest, owner: str, meta: dict[str, object] | None = None) -> Job:
        request = self.canonical(request)
        if self.store.counts()[JobState.QUEUED] >= self.settings.max_queue:
            raise ServeError(ErrorCode.OVERLOADED, "The server is busy (its queue is full); try again shortly.")
        job = self.store.enqueue(Job(owner=owner, request=request, meta=dict(meta or {})))
        if self.workers is not None:
            self.workers.broadcast(Wake())
        return job

    def canonical(self, request: GenerationRequest) -> GenerationRequest:
        """The request as the workers will run it: on this server's model, with a fixed seed (so a
        job retried after a crash makes the same images)."""
        if request.model not in (None, self.model.id, self.settings.model):
            raise invalid("model", f"{request.model!r} is not served here; this server runs {self.model.id}")
        self.model.check(request)
        seed = request.seed if request.seed is not None else random.randrange(2**32)  # noqa: S311
        return request.model_copy(update={"model": self.model.id, "seed": seed})

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
