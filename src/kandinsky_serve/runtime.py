"""The composition root: everything an API process runs on, built from one Settings.

`Blueprint(settings, run_workers)` is what to build (no I/O: `create_app` and the OpenAPI export hold
one); `Blueprint.running()` builds it in the running event loop (the notifier wakes waiters on that
loop), starts the workers and the janitor, and stops and closes everything when it exits. The HTTP
layer (api/app.py) only wires routes to the `Runtime` it gets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from kandinsky_serve.auth.factory import open_keys, open_limiter
from kandinsky_serve.auth.keys import KeyStore, RateLimiter
from kandinsky_serve.blobs.protocol import BlobStore
from kandinsky_serve.deliveries import Deliveries
from kandinsky_serve.files.service import FileService, open_files
from kandinsky_serve.metrics import Metrics
from kandinsky_serve.notify import LocalNotifier
from kandinsky_serve.service import JobService, WorkerPool
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.factory import open_blobs, open_store
from kandinsky_serve.store.protocol import JobStore
from kandinsky_serve.worker.janitor import Janitor
from kandinsky_serve.worker.messages import Cancel, Wake
from kandinsky_serve.worker.relay import Relay
from kandinsky_serve.worker.supervisor import Supervisor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    """What the server runs on while it runs. Routes reach it through `api.state` and use `service`
    (jobs), `deliveries` (webhooks), `files` (uploads), `keys` and `limiter` (auth) and `metrics`; store,
    blobs and notifier
    are here for the process that owns them (and tests that play a worker), not for dialects."""

    settings: Settings
    service: JobService
    deliveries: Deliveries
    keys: KeyStore
    limiter: RateLimiter
    metrics: Metrics
    files: FileService
    url_secret: bytes
    workers: WorkerPool | None
    janitor: Janitor
    notifier: LocalNotifier
    store: JobStore
    blobs: BlobStore


@dataclass(frozen=True)
class Blueprint:
    """What to build. run_workers: supervise one worker process per device (`serve`); without, on
    Redis (KS_STORE_URL), reach the workers on other machines over the bus (`api`), else none (tests)."""

    settings: Settings
    run_workers: bool = True

    @asynccontextmanager
    async def running(self) -> AsyncIterator[Runtime]:
        runtime = self._build()
        if runtime.workers is not None:
            runtime.workers.start()
        runtime.janitor.start()
        log.info("serving %s from %s", runtime.service.served_ids, self.settings.store_url or self.settings.data_dir)
        try:
            yield runtime
        finally:
            runtime.janitor.stop()
            if runtime.workers is not None:
                await asyncio.to_thread(runtime.workers.stop)
            runtime.files.close()
            runtime.store.close()

    def _build(self) -> Runtime:
        settings = self.settings
        notifier = LocalNotifier()
        notifier.bind(asyncio.get_running_loop())
        store, blobs = open_store(settings), open_blobs(settings)
        metrics = Metrics(store.counts)
        workers = _workers(settings, self.run_workers, notifier, metrics)
        keys, limiter = open_keys(settings), open_limiter(settings)
        service = JobService(settings, store, blobs, notifier, workers, limiter)

        def requeued() -> None:
            if workers is not None:
                workers.broadcast(Wake())

        def stop(job_id: str) -> None:
            if workers is not None:
                workers.broadcast(Cancel(job_id))

        files = open_files(settings, blobs)
        janitor = Janitor(settings, store, blobs, notifier.publish, requeued, files=files, on_stop_running=stop)
        return Runtime(
            settings=settings,
            service=service,
            deliveries=Deliveries(store, notifier),
            keys=keys,
            limiter=limiter,
            metrics=metrics,
            files=files,
            url_secret=load_url_secret(settings),
            workers=workers,
            janitor=janitor,
            notifier=notifier,
            store=store,
            blobs=blobs,
        )


def _workers(settings: Settings, supervise: bool, notifier: LocalNotifier, metrics: Metrics) -> WorkerPool | None:
    """Our own worker processes (`serve`), the workers on the Redis bus (`api`), or none (tests)."""
    relay = Relay(notifier, metrics.observe)
    if supervise:
        return Supervisor(settings, relay)
    if settings.store_url is not None:
        from kandinsky_serve.bus import RedisBus, RemoteWorkers  # redis only where the bus is used

        bus = RedisBus(settings.store_url, settings.redis_prefix)
        return RemoteWorkers(bus, relay)
    return None


def load_url_secret(settings: Settings) -> bytes:
    """The configured secret, or one kept in the data dir so links survive restarts."""
    if settings.url_secret:
        return settings.url_secret.encode()
    path: Path = settings.data_dir / "url_secret"
    if not path.exists():
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(secrets.token_hex(32))
    return path.read_text().strip().encode()
