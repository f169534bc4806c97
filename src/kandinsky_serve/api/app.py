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
from kandinsky_serve.auth.keys import SqliteKeyStore
from kandinsky_serve.auth.limits import RateLimiter
from kandinsky_serve.domain.events import ProgressEvent
from kandinsky_serve.metrics import Metrics
from kandinsky_serve.notify import LocalNotifier
from kandinsky_serve.service import JobService
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.factory import open_blobs, open_store
from kandinsky_serve.worker.janitor import Janitor
from kandinsky_serve.worker.messages import Wake
from kandinsky_serve.worker.supervisor import Supervisor

log = logging.getLogger(__name__)


def create_app(settings: Settings, *, run_workers: bool = True) -> FastAPI:
    """The API; with run_workers it also supervises one worker process per device (`serve`)."""
    found = dialects.modules()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        notifier = LocalNotifier()
        notifier.bind(asyncio.get_running_loop())
        store, blobs = open_store(settings), open_blobs(settings)
        metrics = Metrics(store.counts)
        supervisor = None
        if run_workers:

            def progressed(job_ids: tuple[str, ...], event: ProgressEvent) -> None:
                notifier.publish(job_ids, event)

            supervisor = Supervisor(settings, notifier.publish, progressed, metrics.observe)
        service = JobService(settings, store, blobs, notifier, supervisor)

        def requeued() -> None:
            if supervisor is not None:
                supervisor.broadcast(Wake())

        janitor = Janitor(settings, store, blobs, notifier.publish, requeued)
        keys = SqliteKeyStore(settings.keys_path)
        limiter = RateLimiter(settings.rate_limit_per_minute)
        url_secret = load_url_secret(settings)
        app.state.ks = AppState(settings, service, notifier, supervisor, janitor, keys, limiter, url_secret, metrics)
        if supervisor is not None:
            supervisor.start()
        janitor.start()
        # a dialect may run a task for the server's lifetime (Replicate sends webhooks from one)
        tasks = [asyncio.create_task(m.background(app.state.ks)) for m in found if hasattr(m, "background")]
        log.info("serving %s from %s", service.model.id, settings.data_dir)
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            janitor.stop()
            if supervisor is not None:
                await asyncio.to_thread(supervisor.stop)
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
