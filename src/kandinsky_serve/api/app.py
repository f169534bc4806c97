"""create_app(settings): the FastAPI app. Everything it uses is built in the lifespan from settings."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kandinsky_serve import __version__
from kandinsky_serve.api import dialects, errors, health, native
from kandinsky_serve.api.body_limit import BodyLimit
from kandinsky_serve.api.state import AppState
from kandinsky_serve.api.urls import load_url_secret
from kandinsky_serve.auth.factory import open_keys, open_limiter
from kandinsky_serve.files.service import open_files
from kandinsky_serve.metrics import Metrics
from kandinsky_serve.notify import LocalNotifier
from kandinsky_serve.service import JobService, WorkerPool
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.factory import open_blobs, open_store
from kandinsky_serve.worker.janitor import Janitor
from kandinsky_serve.worker.messages import Progress, Wake
from kandinsky_serve.worker.supervisor import Supervisor

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, run_workers: bool = True) -> FastAPI:
    """The API. With run_workers it supervises one worker process per device (`serve`); without, on
    Redis (KS_STORE_URL), it reaches the workers on other machines over the bus (`api`)."""
    found = dialects.modules()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        notifier = LocalNotifier()
        notifier.bind(asyncio.get_running_loop())
        store, blobs = open_store(settings), open_blobs(settings)
        metrics = Metrics(store.counts)
        workers = _workers(settings, run_workers, notifier, metrics)
        keys, limiter = open_keys(settings), open_limiter(settings)
        service = JobService(settings, store, blobs, notifier, workers, limiter)

        def requeued() -> None:
            if workers is not None:
                workers.broadcast(Wake())

        files = open_files(settings, blobs)
        janitor = Janitor(settings, store, blobs, notifier.publish, requeued, files=files)
        url_secret = load_url_secret(settings)
        app.state.ks = AppState(
            settings, service, notifier, workers, janitor, keys, limiter, url_secret, metrics, files
        )
        if workers is not None:
            workers.start()
        janitor.start()
        # a dialect may run a task for the server's lifetime (Replicate sends webhooks from one)
        tasks = [asyncio.create_task(m.background(app.state.ks)) for m in found if hasattr(m, "background")]
        log.info("serving %s from %s", service.model.id, settings.store_url or settings.data_dir)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            janitor.stop()
            if workers is not None:
                await asyncio.to_thread(workers.stop)
            files.close()
            store.close()

    app = FastAPI(
        title="kandinsky-serve",
        version=__version__,
        description="Self-hosted Kandinsky 2.x image generation.",
        lifespan=lifespan,
    )
    errors.install(app)
    app.add_middleware(BodyLimit, max_bytes=settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(native.router)
    for module in found:
        app.include_router(module.router)
    return app


def _workers(settings: Settings, supervise: bool, notifier: LocalNotifier, metrics: Metrics) -> WorkerPool | None:
    """Our own worker processes (`serve`), the workers on the Redis bus (`api`), or none (tests)."""

    def progressed(message: Progress) -> None:
        notifier.publish(message.job_ids, message.event, message.previews)

    if supervise:
        return Supervisor(settings, notifier.publish, progressed, metrics.observe)
    if settings.store_url is not None:
        from kandinsky_serve.bus import RedisBus, RemoteWorkers

        bus = RedisBus(settings.store_url, settings.redis_prefix)
        return RemoteWorkers(bus, notifier.publish, progressed, metrics.observe)
    return None
