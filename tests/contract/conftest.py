"""Fixtures of the contract suites: each backend in turn, a fake clock, and jobs to store."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kandinsky_serve.blobs import BlobStore
from kandinsky_serve.domain.job import Job
from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.store import JobStore
from tests.redis_server import RedisServer

from . import BLOB_BACKENDS, JOB_BACKENDS, FakeClock, open_blob_store, open_job_store


@dataclass
class JobStoreFactory:
    """Opens stores of one backend on one set of data; every store it opened is closed after the test."""

    backend: str
    location: str
    opened: list[JobStore] = field(default_factory=list)

    def __call__(self, clock: Callable[[], datetime]) -> JobStore:
        store = open_job_store(self.backend, self.location, clock)
        self.opened.append(store)
        return store


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One redis-server for the whole session; each test keeps to keys of its own prefix."""
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield server
    server.stop()


def location(backend: str, request: pytest.FixtureRequest, tmp_path) -> str:
    """Where a test's data lives: its own directory, or its own key prefix on the session's Redis."""
    if backend == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return f"{server.url}#test-{uuid.uuid4().hex[:12]}"
    return str(tmp_path)


@pytest.fixture(params=JOB_BACKENDS)
def job_backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[JobStoreFactory]:
    factory = JobStoreFactory(request.param, location(request.param, request, tmp_path))
    yield factory
    for store in factory.opened:
        store.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store(job_backend: JobStoreFactory, clock: FakeClock) -> JobStore:
    return job_backend(clock)


@pytest.fixture(params=BLOB_BACKENDS)
def blobs(request: pytest.FixtureRequest, tmp_path) -> Iterator[BlobStore]:
    store = open_blob_store(request.param, location(request.param, request, tmp_path))
    yield store
    if (close := getattr(store, "close", None)) is not None:  # BlobStore has no close(); Redis ones do
        close()


@pytest.fixture
def make_job() -> Callable[..., Job]:
    """make_job(owner="alice", meta=None, **request fields): a new job, created one second after the last."""
    created = (datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=n) for n in itertools.count())

    def make(owner: str = "alice", *, meta: dict[str, Any] | None = None, **request: Any) -> Job:
        fields = {"prompt": "a red fox in the snow", **request}
        return Job(owner=owner, request=GenerationRequest(**fields), created_at=next(created), meta=meta or {})

    return make
