"""create_app(blueprint, dialects): the FastAPI app. It only wires HTTP: the runtime (store, workers,
service...) is built by runtime.py in the lifespan, and each dialect brings its router, error
renderer and background task (api/dialect.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

from fastapi import FastAPI

from kandinsky_serve import __version__
from kandinsky_serve.api import errors, health, native
from kandinsky_serve.api.body_limit import BodyLimit
from kandinsky_serve.api.dialect import Dialect
from kandinsky_serve.runtime import Blueprint


def create_app(blueprint: Blueprint, dialects: Sequence[Dialect]) -> FastAPI:
    """The API on the runtime `blueprint` builds, speaking the native API and `dialects`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with blueprint.running() as runtime:
            app.state.ks = runtime
            tasks = [asyncio.create_task(d.background(runtime)) for d in dialects if d.background is not None]
            try:
                yield
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)

    app = FastAPI(
        title="kandinsky-serve",
        version=__version__,
        description="Self-hosted Kandinsky 2.x image generation.",
        lifespan=lifespan,
    )
    errors.install(app, {d.name: d.render_error for d in dialects if d.render_error is not None})
    app.add_middleware(BodyLimit, max_bytes=blueprint.settings.max_body_bytes)
    app.include_router(health.router)
    app.include_router(native.router)
    for dialect in dialects:
        app.include_router(dialect.router)
    return app
