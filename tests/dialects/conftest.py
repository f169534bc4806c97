"""A real server on a socket with two API keys, for driving the dialects with the vendors' SDKs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.server.conftest import Server, start_server


def create_key(data_dir: Path, name: str, credits: float | None = None) -> str:
    args = [sys.executable, "-m", "kandinsky_serve", "keys", "create", "--name", name, "--data-dir", str(data_dir)]
    if credits is not None:
        args += ["--credits", str(credits)]
    result = subprocess.run(args, capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    return result.stdout.strip().splitlines()[-1]  # the key is the last line


@dataclass
class KeyedServer:
    server: Server
    alice: str  # unlimited credits
    bob: str  # 3 credits

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KeyedServer]:
    """One server per test module (starting one costs seconds); tests must not depend on each other."""
    data_dir = tmp_path_factory.mktemp("keyed") / "data"
    alice = create_key(data_dir, "alice")
    bob = create_key(data_dir, "bob", credits=3)
    server = start_server(data_dir, key=alice, KS_ALLOW_PRIVATE_URLS="false")
    yield KeyedServer(server, alice, bob)
    server.stop()


def failed_job(server: KeyedServer, key: str, meta: dict[str, object], message: str) -> str:
    """A job as a worker leaves one whose generation failed, written into the server's own job store.
    Inputs are checked whole at submit, so nothing a client can send makes the tiny model fail on the
    worker; this is how a dialect's rendering of such a failure is reached."""
    from kandinsky_serve.auth.keys import SqliteKeyStore
    from kandinsky_serve.domain.errors import ErrorCode
    from kandinsky_serve.domain.job import Job, JobState, utcnow
    from kandinsky_serve.domain.request import GenerationRequest
    from kandinsky_serve.store.sqlite import SqliteJobStore

    data_dir = server.server.data_dir
    found = SqliteKeyStore(data_dir / "keys.sqlite3").verify(key)
    assert found is not None
    request = GenerationRequest(model="tiny", prompt="x", width=64, height=64, steps=2, prior_steps=2, seed=1)
    job = Job(
        owner=found.id,
        request=request,
        state=JobState.FAILED,
        attempts=1,
        started_at=utcnow(),
        completed_at=utcnow(),
        error_code=ErrorCode.GENERATION_FAILED,
        error_message=message,
        meta=meta,
    )
    store = SqliteJobStore(data_dir / "jobs.sqlite3")
    try:
        return store.enqueue(job).id
    finally:
        store.close()
