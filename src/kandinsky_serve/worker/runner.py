"""The work loop inside a worker process: lease a batch, run it, store the outputs, report.

A job is finished only by the worker that holds its lease (the store refuses anyone else), and
outputs are written under keys fixed by the job id before the job is marked done, so a job run
twice after a crash is finished once and leaves one set of outputs.

The work loop finishes a batch (encodes its images, stores them, marks its jobs done) on a thread of
its own while the next batch generates, so the GPU does not wait for the CPU's share; a batch's
images are encoded in parallel.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol

from kandinsky_serve.blobs.protocol import BlobStore
from kandinsky_serve.domain.errors import Canceled, ErrorCode, ServeError
from kandinsky_serve.domain.events import ProgressEvent
from kandinsky_serve.domain.job import Job, JobEvent, Output, utcnow
from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.imaging import encode_image
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.protocol import JobStore
from kandinsky_serve.worker.messages import (
    BatchDone,
    JobsChanged,
    Progress,
    StateChanged,
    ToSupervisor,
    WorkerState,
)

if TYPE_CHECKING:  # the API process imports this module too, and must not load torch
    from kandinsky_serve.engine.result import GenerationResult

log = logging.getLogger(__name__)

_EVENT_INTERVAL = 0.5  # seconds between progress events written to the store (every step goes to the pipe)


def peak_memory() -> int:
    """The GPU memory high-water mark since the last call (0 without a GPU), then reset."""
    import torch

    if not torch.cuda.is_available():
        return 0
    peak = int(torch.cuda.max_memory_allocated())
    torch.cuda.reset_peak_memory_stats()
    return peak


class BatchEngine(Protocol):
    def run_batch(
        self,
        requests: Sequence[GenerationRequest],
        on_progress: Callable[[ProgressEvent], None] | None = None,
        cancels: Sequence[Callable[[], bool] | None] | None = None,
        previews: int = 0,
    ) -> list[GenerationResult | None]: ...


@dataclass
class _Batch:
    """One leased batch and what happened to its jobs while it ran."""

    jobs: list[Job]
    stop: set[str]  # jobs to stop at their next step
    lost: set[str] = field(default_factory=set)  # jobs whose lease another worker now holds
    release: set[str] = field(default_factory=set)  # jobs to give back to the queue (drain timeout)
    started: float = field(default_factory=time.monotonic)

    @property
    def ids(self) -> list[str]:
        return [job.id for job in self.jobs]


class Runner:
    def __init__(
        self,
        worker_id: str,
        settings: Settings,
        store: JobStore,
        blobs: BlobStore,
        engine: BatchEngine,
        emit: Callable[[ToSupervisor], None],
        device: str = "cpu",
        models: Collection[str] | None = None,
    ) -> None:
        self.worker_id = worker_id
        self.device = device
        self.models = models  # the model ids whose jobs this worker leases (its engine's); None: any
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.engine = engine
        self.emit = emit
        self._woken = threading.Event()
        self._draining = threading.Event()
        self._batch: _Batch | None = None  # the batch generating now
        self._lock = threading.Lock()
        self._finisher = ThreadPoolExecutor(1, thread_name_prefix="finish")
        self._encoders = ThreadPoolExecutor(min(4, os.cpu_count() or 1), thread_name_prefix="encode")
        self._finishing: Future[None] | None = None

    # --- called from the pipe reader and signal handlers -----------------------------------

    def wake(self) -> None:
        self._woken.set()

    def cancel(self, job_id: str) -> None:
        with self._lock:
            if self._batch is not None and job_id in self._batch.ids:
                self._batch.stop.add(job_id)

    def drain(self) -> None:
        """Takes no more work; the running batch may finish for drain_seconds, then goes back to the queue."""
        if self._draining.is_set():
            return
        self._draining.set()
        self._woken.set()
        self.emit(StateChanged(WorkerState.DRAINING))
        timer = threading.Timer(self.settings.drain_seconds, self._release_active)
        timer.daemon = True
        timer.start()

    def _release_active(self) -> None:
        with self._lock:
            if self._batch is not None:
                self._batch.release.update(self._batch.ids)
                self._batch.stop.update(self._batch.ids)

    # --- the loop ----------------------------------------------------------------------------

    def run_forever(self, poll_seconds: float = 1.0, max_backoff: float = 30.0) -> None:
        self.emit(StateChanged(WorkerState.READY))
        failures = 0
        while not self._draining.is_set():
            try:
                worked = self.run_once(pipelined=True)
                failures = 0
            except Exception:
                # the store is unreachable (a Redis restart, a locked database): a worker outlives it,
                # as nothing restarts a standalone worker; a job it held is reclaimed after its lease
                failures += 1
                log.exception("the work loop failed; retrying")
                self._draining.wait(min(2.0**failures, max_backoff))
                continue
            if not worked:
                woken = self._woken.wait(timeout=poll_seconds)
                self._woken.clear()
                if woken and self.settings.batch_window_ms and not self._draining.is_set():
                    time.sleep(self.settings.batch_window_ms / 1000)  # let a batch gather
        self._settle()

    def run_once(self, *, pipelined: bool = False) -> bool:
        """Leases and runs one batch; False when there was nothing to do. Pipelined, the batch's
        finishing goes on behind the next one (at most one batch finishing at a time); otherwise its
        jobs are finished when this returns."""
        jobs = self.store.lease(
            self.worker_id,
            max_batch=self.settings.max_batch,
            lease_seconds=self.settings.lease_seconds,
            models=self.models,
        )
        if not jobs:
            self._settle()
            return False
        self.emit(StateChanged(WorkerState.BUSY))
        try:
            self._run(_Batch(jobs, stop={job.id for job in jobs if job.cancel_requested}), pipelined)
        finally:
            if not self._draining.is_set():
                self.emit(StateChanged(WorkerState.READY))
        return True

    def _run(self, batch: _Batch, pipelined: bool) -> None:
        ids = batch.ids
        log.info("batch of %d: %s", len(ids), ", ".join(ids), extra={"job_ids": ids})
        with self._lock:
            self._batch = batch
        beating = threading.Event()
        heart = threading.Thread(target=self._heartbeat, args=(batch, beating), daemon=True)
        try:
            for job in batch.jobs:
                line = f"running in a batch of {len(ids)} on worker {self.worker_id} (attempt {job.attempts})"
                self.store.add_events(job.id, [JobEvent(message=line)])
            self.emit(JobsChanged(tuple(ids)))
            heart.start()
            results = self._generate(batch)
        except BaseException:
            self._end(batch, beating, heart)
            raise
        with self._lock:
            self._batch = None
        self._settle()  # the batch before, if it is still finishing: one at a time, in order
        if pipelined:
            self._finishing = self._finisher.submit(self._finish_batch, batch, results, beating, heart)
        else:
            self._finish_batch(batch, results, beating, heart)

    def _settle(self) -> None:
        """Waits until the batch finishing behind this one is done."""
        finishing, self._finishing = self._finishing, None
        if finishing is None:
            return
        try:
            finishing.result()
        except Exception:
            # its heartbeat has stopped: the jobs it could not finish go back to the queue when their
            # leases run out, and run again; the batch in hand is not held back by it
            log.exception("finishing a batch failed")

    def _finish_batch(
        self,
        batch: _Batch,
        results: Sequence[GenerationResult | ServeError | None],
        beating: threading.Event,
        heart: threading.Thread,
    ) -> None:
        try:
            for job, result in zip(batch.jobs, results, strict=True):
                self._finish(batch, job, result)
            self.emit(self._batch_done(batch.jobs, results, time.monotonic() - batch.started))
        finally:
            self._end(batch, beating, heart)

    def _end(self, batch: _Batch, beating: threading.Event, heart: threading.Thread) -> None:
        beating.set()
        if heart.is_alive():
            heart.join()
        with self._lock:
            if self._batch is batch:
                self._batch = None
        self.emit(JobsChanged(tuple(batch.ids)))

    def _generate(self, batch: _Batch) -> Sequence[GenerationResult | ServeError | None]:
        """One outcome per job: its result, None when it was stopped, or the error that failed the batch."""
        jobs = batch.jobs
        progress = _ProgressWriter(self.store, batch.ids, self.emit)
        stops = [self._stopper(batch, job.id) for job in jobs]
        try:
            return self.engine.run_batch([job.request for job in jobs], progress, stops, self.settings.previews)
        except Canceled:
            return [None] * len(jobs)
        except ServeError as error:
            return [error] * len(jobs)
        except Exception as exc:
            log.exception("generation failed", extra={"job_ids": [job.id for job in jobs]})
            failed = ServeError(ErrorCode.GENERATION_FAILED, f"The generation failed: {type(exc).__name__}: {exc}")
            return [failed] * len(jobs)
        finally:
            progress.flush()

    def _batch_done(
        self, jobs: list[Job], results: Sequence[GenerationResult | ServeError | None], seconds: float
    ) -> BatchDone:
        images = sum(len(r.seeds) for r in results if r is not None and not isinstance(r, ServeError))
        outcome = "failed" if any(isinstance(r, ServeError) for r in results) else "succeeded" if images else "canceled"
        waited = tuple((utcnow() - job.created_at).total_seconds() for job in jobs)
        return BatchDone(len(jobs), images, seconds, outcome, self.device, peak_memory(), waited)

    @staticmethod
    def _stopper(batch: _Batch, job_id: str) -> Callable[[], bool]:
        return lambda: job_id in batch.stop

    def _finish(self, batch: _Batch, job: Job, result: GenerationResult | ServeError | None) -> None:
        if isinstance(result, list):  # pragma: no cover - zip hands single results
            raise TypeError(result)
        if job.id in batch.lost:
            log.warning("lease lost to another worker; leaving the job to them", extra={"job_ids": [job.id]})
        elif isinstance(result, ServeError):
            self.store.fail(job.id, self.worker_id, result.code, result.message)
        elif result is None and job.id in batch.release:
            self.store.release(job.id, self.worker_id)
        elif result is None:
            self.store.finish_canceled(job.id, self.worker_id)
        elif not self.store.complete(job.id, self.worker_id, self._save_outputs(job, result)):
            log.warning("finished after the lease was taken; the other run stands", extra={"job_ids": [job.id]})

    def _save_outputs(self, job: Job, result: GenerationResult) -> list[Output]:
        request = job.request
        if result.image_embeds is not None and result.negative_image_embeds is not None:
            key = f"outputs/{job.id}/embeddings.json"
            body = {
                "image_embeds": result.image_embeds.tolist(),
                "negative_image_embeds": result.negative_image_embeds.tolist(),
            }
            self.blobs.put(key, json.dumps(body).encode(), "application/json")
            return [Output(key=key, seed=seed, content_type="application/json") for seed in result.seeds]
        fmt = request.output_format
        # the encoders release the GIL: a batch's images encode side by side
        encoded = self._encoders.map(
            lambda image: encode_image(image, fmt.value, request.output_quality), result.images
        )
        outputs = []
        for index, (data, seed) in enumerate(zip(encoded, result.seeds, strict=True)):
            key = f"outputs/{job.id}/{index}.{fmt.value}"
            self.blobs.put(key, data, fmt.mime_type)
            outputs.append(Output(key=key, seed=seed, content_type=fmt.mime_type))
        return outputs

    def _heartbeat(self, batch: _Batch, done: threading.Event) -> None:
        interval = self.settings.lease_seconds / 3
        while not done.wait(interval):
            try:
                beat = self.store.heartbeat(self.worker_id, batch.ids, self.settings.lease_seconds)
            except Exception:  # a busy store must not kill the batch; the next beat retries
                log.exception("heartbeat failed")
                continue
            with self._lock:
                batch.stop |= beat.cancel_requested
                lost = set(batch.ids) - beat.held - batch.release
                batch.lost |= lost
                batch.stop |= lost


class _ProgressWriter:
    """Every step goes to the supervisor (live progress); the store gets one event per interval."""

    def __init__(self, store: JobStore, job_ids: list[str], emit: Callable[[ToSupervisor], None]) -> None:
        self.store = store
        self.job_ids = job_ids
        self.emit = emit
        self._pending: JobEvent | None = None
        self._last_write = 0.0
        self._last_step = 0.0

    def __call__(self, event: ProgressEvent) -> None:
        now = time.monotonic()
        seconds = now - self._last_step if event.step > 1 and self._last_step else 0.0
        self._last_step = now
        previews = tuple(
            (self.job_ids[index], "data:image/jpeg;base64," + base64.b64encode(jpeg).decode())
            for index, jpeg in event.previews
        )
        self.emit(Progress(tuple(self.job_ids), replace(event, previews=()), seconds, previews))
        self._pending = JobEvent.progress(event)
        if event.step == event.total or time.monotonic() - self._last_write >= _EVENT_INTERVAL:
            self.flush()

    def flush(self) -> None:
        if self._pending is None:
            return
        event, self._pending = self._pending, None
        self._last_write = time.monotonic()
        try:
            for job_id in self.job_ids:
                self.store.add_events(job_id, [event])
        except Exception:  # progress is a courtesy: a store outage must not fail the generation
            log.warning("could not record progress", exc_info=True)
