"""Fixtures of the contract suites: each backend in turn, a fake clock, and jobs to store."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from kandinsky_serve.blobs import BlobStore
from kandinsky_serve.domain.job import Job
from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.store import JobStore

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


@pytest.fixture(params=JOB_BACKENDS)
def job_backend(request: pytest.FixtureRequest, tmp_path) -> Iterator[JobStoreFactory]:
    factory = JobStoreFactory(request.param, str(tmp_path))
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
def blobs(request: pytest.FixtureRequest, tmp_path) -> BlobStore:
    return open_blob_store(request.param, str(tmp_path))


@pytest.fixture
def make_job() -> Callable[..., Job]:
    """make_job(owner="alice", meta=None, **request fields): a new job, created one second after the last."""
    created = (datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=n) for n in itertools.count())

    def make(owner: str = "alice", *, meta: dict[str, Any] | None = None, **request: Any) -> Job:
        fields = {"prompt": "a red fox in the snow", **request}
        return Job(owner=owner, request=GenerationRequest(**fields), created_at=next(created), meta=meta or {})

    return make
