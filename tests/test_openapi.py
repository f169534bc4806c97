"""The OpenAPI document: complete, committed (docs/openapi.json), and fuzzed with schemathesis.

The fuzz runs in-process over ASGI (schemathesis runs the app's lifespan) with no worker process:
a stand-in worker thread completes every queued job at once with a placeholder image, so routes
that wait for their job (OpenAI, `?wait=`, Replicate's `Prefer: wait`) answer without spending
seconds of CPU on each generated input. What is fuzzed is the HTTP layer: parsing, validation,
translation and rendering, where a 5xx means a bug and a response the document does not describe
(a status, a content type, a header, a body) means the document is wrong.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from PIL import Image
from schemathesis import GenerationMode
from schemathesis.checks import CHECKS, load_all_checks

from kandinsky_serve.api.compose import serve_app
from kandinsky_serve.api.dialects.segmind import SLUGS
from kandinsky_serve.api.openapi_export import DEFAULT_PATH, schema
from kandinsky_serve.domain.job import Output
from kandinsky_serve.domain.request import OutputFormat, Task
from kandinsky_serve.runtime import Runtime
from kandinsky_serve.settings import Settings

REGENERATE = "regenerate it with `make openapi` (or `.venv/bin/python -m kandinsky_serve.api.openapi_export`)"


def test_committed_openapi_matches_the_app():
    assert DEFAULT_PATH.exists(), f"docs/openapi.json is missing: {REGENERATE}"
    committed = json.loads(DEFAULT_PATH.read_text(encoding="utf-8"))
    assert committed == schema(), f"docs/openapi.json differs from the app's schema: {REGENERATE}"


def routes(app: FastAPI) -> set[tuple[str, str]]:
    """Every (path, method) the app serves and means to document (routers are included lazily)."""
    found = set()
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and route.include_in_schema:
            found |= {(str(context.path_format), method) for method in context.methods or ()}
    return found


def test_openapi_covers_every_route():
    app = serve_app(Settings(model="tiny"), run_workers=False)
    documented = {(path, method.upper()) for path, item in app.openapi()["paths"].items() for method in item}
    served = routes(app)
    assert len(served) > 30  # every dialect's routes were found
    assert served - documented == set()


def test_every_operation_but_liveness_declares_its_errors_in_its_dialects_shape():
    document = serve_app(Settings(model="tiny"), run_workers=False).openapi()
    bare = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            errors = {status: r for status, r in operation["responses"].items() if status >= "400"}
            if not errors and path != "/healthz":
                bare.append(f"{method.upper()} {path}")
            for status, response in errors.items():
                refs = json.dumps(response.get("content", {}))
                assert "HTTPValidationError" not in refs, f"{method.upper()} {path} {status}: FastAPI's 422 shape"
    assert bare == []
    schemas = document["components"]["schemas"]
    for shape in ("NativeError", "SegmindError", "EachlabsError", "OpenAIError", "ReplicateProblem"):
        assert shape in schemas
    create = document["paths"]["/v1/kandinsky2.2-img2img"]["post"]
    body = create["requestBody"]["content"]["application/json"]["schema"]
    assert {"image", "strength", "img_width"} <= set(body["properties"]) and body["required"] == ["image"]
    assert (
        "model"
        in document["paths"]["/v1/prediction/"]["post"]["requestBody"]["content"]["application/json"]["schema"][
            "properties"
        ]
    )


def _encoded(fmt: OutputFormat) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 90, 90)).save(buf, format=fmt.value.upper())
    return buf.getvalue()


class InstantWorker(threading.Thread):
    """Completes every queued job with placeholder images in the format it asked for, as soon as the
    app's lifespan has begun."""

    IMAGES: ClassVar[dict[OutputFormat, bytes]] = {fmt: _encoded(fmt) for fmt in OutputFormat}

    def __init__(self, app: FastAPI) -> None:
        super().__init__(daemon=True)
        self.app = app
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(0.02):
            state: Runtime | None = getattr(self.app.state, "ks", None)
            if state is None:
                continue
            try:
                self.complete_queued(state)
            except RuntimeError:  # the lifespan has ended and closed the store: nothing left to do
                return

    def complete_queued(self, state: Runtime) -> None:
        store, blobs = state.store, state.blobs  # the runtime's own: this thread plays the worker
        for job in store.lease("fuzz", max_batch=8, lease_seconds=60):
            outputs = []
            fmt = job.request.output_format
            for index, seed in enumerate(job.request.seeds()):
                key = f"outputs/{job.id}/{index}.{fmt.value}"
                blobs.put(key, self.IMAGES[fmt], fmt.mime_type)
                outputs.append(Output(key=key, seed=seed, content_type=fmt.mime_type))
            store.complete(job.id, "fuzz", outputs)
            state.notifier.publish([job.id])


@pytest.fixture(scope="module")
def fuzzed_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    data_dir: Path = tmp_path_factory.mktemp("fuzz") / "data"
    limits = {"rate_limit_per_minute": 0, "max_jobs_per_key": 100_000, "max_queue": 100_000}
    app = serve_app(Settings(model="tiny", data_dir=data_dir, require_keys=False, **limits), run_workers=False)
    worker = InstantWorker(app)
    worker.start()
    yield app
    worker.stopping.set()
    worker.join(timeout=5)


# Checks that cannot hold for an operation, whatever the server does, and why. Every other check
# (`st run --checks all`) runs on every operation.
ACCEPTS = "positive_data_acceptance"  # every schema-valid request is accepted (2xx)
_CURSOR = "a cursor is valid only as an earlier page handed it out; JSON Schema cannot say which"
_IMAGE = "needs a real image: schema-valid text (a URL, base64) is not a decodable picture"
INAPPLICABLE: dict[str, dict[str, str]] = {
    "GET /readyz": {"not_a_server_error": "503 is its answer while no worker has a model loaded; this app runs none"},
    "POST /v1/jobs": {ACCEPTS: "rules across fields (a task's images, one ingredient per fuse item) and image bytes"},
    "GET /v1/jobs": {ACCEPTS: _CURSOR},
    "GET /v1/predictions": {ACCEPTS: _CURSOR},
    "GET /v1/files": {ACCEPTS: _CURSOR},
    "POST /v1/files": {
        ACCEPTS: "metadata is a JSON object sent as form text, which JSON Schema cannot constrain",
        # a multipart part is bytes on the wire: a "number" sent as the file is a file, as a filename a name
        "negative_data_rejection": "multipart parts have no JSON types",
    },
    "POST /v1/images/edits": {ACCEPTS: _IMAGE},
    # the input is checked against the version's own schema (GET .../versions/{id}), not repeated here
    "POST /v1/predictions": {ACCEPTS: "input follows the version's schema"},
    "POST /v1/models/{owner}/{name}/predictions": {ACCEPTS: "input follows the version's schema"},
    "POST /v1/prediction/": {ACCEPTS: 'numbers may be text ("512", as the vendor sends them): no range in a pattern'},
    **{f"POST /v1/{slug}": {ACCEPTS: _IMAGE} for slug, spec in SLUGS.items() if spec.task is not Task.TEXT2IMG},
}

EXAMPLES = 100  # per operation and generation mode: up to 2 x 42 x 100 requests, about a minute


def fuzz(operation: schemathesis.APIOperation, mode: GenerationMode, excluded: list[Any]) -> Callable[[], None]:
    """A Hypothesis test that sends the operation's cases of one mode and runs every check on each answer."""

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=EXAMPLES, deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck)
    )
    def every_check(case: schemathesis.Case) -> None:
        case.call_and_validate(excluded_checks=excluded)

    return every_check


@pytest.mark.slow
def test_every_operation_passes_every_check(fuzzed_app: FastAPI) -> None:
    load_all_checks()
    by_name = {check.__name__: check for check in CHECKS.get_all() if callable(check)}
    api = schemathesis.openapi.from_asgi("/openapi.json", fuzzed_app)
    failures: dict[str, str] = {}
    unnegatable: set[str] = set()
    for result in api.get_all_operations():
        operation = result.ok()
        excluded = [by_name[name] for name in INAPPLICABLE.get(operation.label, {})]
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                fuzz(operation, mode, excluded)()
            except Unsatisfiable:
                # no parameter of it can be made invalid (no body, only free-form strings)
                assert mode is GenerationMode.NEGATIVE, f"{operation.label}: no valid request"
                unnegatable.add(operation.label)
            # every operation is fuzzed, the report names all that failed (schemathesis raises a
            # BaseExceptionGroup of its failures)
            except (Exception, BaseExceptionGroup) as exc:
                failures[f"{operation.label} ({mode.value})"] = str(exc)[:2000]
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert "POST /v1/jobs" not in unnegatable and "POST /v1/kandinsky2.2-txt2img" not in unnegatable
