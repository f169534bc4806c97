"""/healthz, /readyz and /metrics where keys are required: readiness and metrics name worker pids,
hosts and the queue depth, so they need a key unless KS_PUBLIC_PROBES opens them; liveness is open.

The keyed server is a real `serve` process (its key made by `kandinsky-serve keys create` before it
starts); the other settings are checked on the app in-process, over the same SQLite key store.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from kandinsky_serve.api.compose import serve_app
from kandinsky_serve.auth.keys import SqliteKeyStore
from kandinsky_serve.settings import Settings
from tests.dialects.conftest import create_key
from tests.server.conftest import Server, start_server

PROBES = ("/readyz", "/metrics")


@pytest.fixture(scope="module")
def keyed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    data_dir = tmp_path_factory.mktemp("probes") / "data"
    server = start_server(data_dir, create_key(data_dir, "prometheus"))
    yield server
    server.stop()


def test_liveness_is_open_but_readiness_and_metrics_need_a_key(keyed: Server) -> None:
    assert httpx.get(f"{keyed.url}/healthz", timeout=10).json() == {"status": "ok"}
    for path in PROBES:
        for headers in ({}, {"x-api-key": "ks_00000000_not-a-real-key"}):
            answer = httpx.get(f"{keyed.url}{path}", headers=headers, timeout=10)
            assert answer.status_code == 401, (path, headers, answer.text)
            error = answer.json()["error"]  # the native error shape
            assert error["code"] == "unauthorized" and "pid" not in answer.text and "ks_queue" not in answer.text


def test_a_key_opens_them_as_probes_and_scrapers_send_it(keyed: Server) -> None:
    assert keyed.key is not None
    # a Kubernetes httpGet probe sends httpHeaders; Prometheus sends `authorization: Bearer <key>`
    ready = httpx.get(f"{keyed.url}/readyz", headers={"x-api-key": keyed.key}, timeout=10)
    assert ready.status_code == 200 and ready.json()["workers"][0]["pid"] > 0
    scraped = httpx.get(f"{keyed.url}/metrics", headers={"authorization": f"Bearer {keyed.key}"}, timeout=10)
    assert scraped.status_code == 200 and "ks_queue_depth" in scraped.text


def _probe_statuses(data_dir: Path, **settings: object) -> dict[str, int]:
    app = serve_app(Settings(model="tiny", data_dir=data_dir, **settings), run_workers=False)  # type: ignore[arg-type]
    with TestClient(app) as client:
        return {path: client.get(path).status_code for path in ("/healthz", *PROBES)}


def test_public_probes_open_them_without_a_key(tmp_path: Path) -> None:
    SqliteKeyStore(Settings(data_dir=tmp_path).keys_path).create("prometheus", None)
    # no worker runs in-process, so readiness answers 503 (not ready) where it answers at all
    assert _probe_statuses(tmp_path) == {"/healthz": 200, "/readyz": 401, "/metrics": 401}
    assert _probe_statuses(tmp_path, public_probes=True) == {"/healthz": 200, "/readyz": 503, "/metrics": 200}


def test_a_local_server_without_keys_keeps_them_open(tmp_path: Path) -> None:
    assert _probe_statuses(tmp_path) == {"/healthz": 200, "/readyz": 503, "/metrics": 200}
