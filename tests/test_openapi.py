"""The OpenAPI document: complete, committed (docs/openapi.json), and fuzzed with schemathesis.

The fuzz runs in-process over ASGI (schemathesis runs the app's lifespan) with no worker process:
a stand-in worker thread completes every queued job at once with a placeholder image, so routes
that wait for their job (OpenAI, `?wait=`, Replicate's `Prefer: wait`) answer without spending
seconds of CPU on each generated input. What is fuzzed is the HTTP layer: parsing, validation,
translation and rendering, where a 5xx means a bug.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute
from hypothesis import HealthCheck, given, settings
from PIL import Image
from schemathesis.checks import not_a_server_error

from kandinsky_serve.api.app import create_app
from kandinsky_serve.api.openapi_export import DEFAULT_PATH, schema
from kandinsky_serve.api.state import AppState
from kandinsky_serve.domain.job import Output
from kandinsky_serve.settings import Settings
from tests.conftest import png

REGENERATE = "regenerate it with `make openapi` (or `.venv/bin/python -m kandinsky_serve.api.openapi_export`)"


def test_committed_openapi_matches_the_app():
    assert DEFAULT_PATH.exists(), f"docs/openapi.json is missing: {REGENERATE}"
    committed = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    assert committed == schema(), f"docs/openapi.json differs from the app's schema: {REGENERATE}"


def test_openapi_covers_every_route():
    app = create_app(Settings(model="tiny"), run_workers=False)
    documented = {(path, method.upper()) for path, item in app.openapi()["paths"].items() for method in item}
    routes = {(r.path, m) for r in app.routes if isinstance(r, APIRoute) for m in r.methods}
    assert routes - documented == set()


class InstantWorker(threading.Thread):
    """Completes every queued job with placeholder images, as soon as the app's lifespan has begun."""

    IMAGE = png(Image.new("RGB", (8, 8), (90, 90, 90)))

    def __init__(self, app: FastAPI) -> None:
        super().__init__(daemon=True)
        self.app = app
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.02):
            state: AppState | None = getattr(self.app.state, "ks", None)
            if state is None:
                continue
            try:
                self.complete_queued(state)
            except RuntimeError:  # the lifespan has ended and closed the store: nothing left to do
                return

    def complete_queued(self, state: AppState) -> None:
        store, blobs = state.service.store, state.service.blobs
        for job in store.lease("fuzz", max_batch=8, lease_seconds=60):
            outputs = []
            for index, seed in enumerate(job.request.seeds()):
                key = f"outputs/{job.id}/{index}.png"
                blobs.put(key, self.IMAGE, "image/png")
                outputs.append(Output(key=key, seed=seed, content_type="image/png"))
            store.complete(job.id, "fuzz", outputs)
            state.notifier.publish([job.id])


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    limits = {"rate_limit_per_minute": 0, "max_jobs_per_key": 100_000, "max_queue": 100_000}
    app = create_app(Settings(model="tiny", data_dir=data_dir, require_keys=False, **limits), run_workers=False)
    worker = InstantWorker(app)
    worker.start()
    yield app
    worker.stopping.set()
    worker.join(timeout=5)


@pytest.mark.slow
def test_no_input_makes_a_server_error(fuzzed_app: FastAPI) -> None:
    # /readyz answers 503 by design while no worker has loaded a model, and this app runs none
    api = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app).exclude(path="/readyz")
    failures: dict[str, str] = {}
    for result in api.get_all_operations():
        operation = result.ok()

        @given(case=operation.as_strategy())
        @settings(
            max_examples=12, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
        )
        def no_server_error(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error])

        try:
            no_server_error()
        except Exception as exc:  # every operation is fuzzed; the report names all that failed
            failures[operation.label] = str(exc)[:3000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
