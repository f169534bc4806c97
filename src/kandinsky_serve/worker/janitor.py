"""Periodic upkeep for the store: give dead workers' jobs back, remove data (and uploads) past retention."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import timedelta

from kandinsky_serve.blobs.protocol import BlobStore
from kandinsky_serve.domain.job import utcnow
from kandinsky_serve.files.service import FileService
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.protocol import JobStore

log = logging.getLogger(__name__)


class Janitor:
    def __init__(
        self,
        settings: Settings,
        store: JobStore,
        blobs: BlobStore,
        on_jobs_changed: Callable[[tuple[str, ...]], None],
        on_requeued: Callable[[], None],
        files: FileService | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.blobs = blobs
        self.on_jobs_changed = on_jobs_changed
        self.on_requeued = on_requeued
        self.files = files
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="janitor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _loop(self) -> None:
        interval = min(max(self.settings.lease_seconds / 3, 0.5), 10.0)
        while not self._stop.wait(interval):
            try:
                self.tick()
            except Exception:  # upkeep must outlive a busy database
                log.exception("janitor tick failed")

    def tick(self) -> None:
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
