"""Periodic upkeep for the store: cancel jobs past their deadline, give dead workers' jobs back, remove
data (and uploads) past retention.

Every API process runs one (`serve` on its own data, each `api` node on the shared Redis): what they
do is decided in the store, so two janitors at once change each job once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from kandinsky_serve.blobs.protocol import BlobStore
from kandinsky_serve.domain.job import JobEvent, JobState, utcnow
from kandinsky_serve.files.service import FileService
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.protocol import JobStore

log = logging.getLogger(__name__)

DEADLINE_NOTE = "canceled: Cancel-After deadline"
_DEADLINE_EVERY = 1.0  # seconds between looks for jobs past their deadline (one indexed range read)


class Janitor:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        blobs: BlobStore,
        on_jobs_changed: Callable[[tuple[str, ...]], None],
        on_requeued: Callable[[], None],
        files: FileService | None = None,
        on_stop_running: Callable[[str], None] | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.on_jobs_changed = on_jobs_changed
        self.on_requeued = on_requeued
        self.files = files
        # tells the workers to stop a running job now, not at their next heartbeat
        self.on_stop_running = on_stop_running
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="janitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = min(max(self.settings.lease_seconds / 3, 0.5), 10.0)
        last = time.monotonic()
        # deadlines are looked at every second, so a 5 s Cancel-After is kept to about a second
        while not self._stop.wait(min(interval, _DEADLINE_EVERY)):
            try:
                self.cancel_overdue()
                if time.monotonic() - last >= interval:
                    last = time.monotonic()
                    self.tick()
            except Exception:  # upkeep must outlive a busy database
                log.exception("janitor tick failed")

    def cancel_overdue(self) -> list[str]:
        """Cancels the jobs past their deadline as a caller's cancel would: a queued one at once, a
        running one at its worker's next step (told at once through on_stop_running; a worker that
        misses it sees the request at its next heartbeat). The reason goes to the job's log. Returns
        the ids of the jobs changed."""
        changed = []
        for job_id in self.store.overdue():
            job = self.store.cancel(job_id)
            # another janitor may have canceled it since the look: then both note it, harmlessly
            if job is not None and (job.cancel_requested or job.state is JobState.CANCELED):
                self.store.add_events(job_id, [JobEvent(message=DEADLINE_NOTE)])
                changed.append(job_id)
                if job.state is JobState.RUNNING and self.on_stop_running is not None:
                    self.on_stop_running(job_id)
        if changed:
            log.info("canceled %d job(s) past their Cancel-After deadline", len(changed), extra={"job_ids": changed})
            self.on_jobs_changed(tuple(changed))
        return changed

    def tick(self) -> None:
        """Gives lost workers' jobs back and removes data past retention (deadlines: cancel_overdue)."""
        reclaimed = self.store.reclaim(max_attempts=self.settings.max_attempts)
        if reclaimed:
            log.warning("reclaimed %d job(s) from lost workers", len(reclaimed))
            self.on_jobs_changed(tuple(job.id for job in reclaimed))
            self.on_requeued()
        keys = self.store.expire(utcnow() - timedelta(seconds=self.settings.retention_seconds))
        if keys:
            self.blobs.delete(keys)
            log.info("retention: removed %d file(s)", len(keys))
        if self.files is not None and (uploads := self.files.expire()):
            log.info("retention: removed %d uploaded file(s)", uploads)
