"""Two API nodes and two workers on one Redis: every job completes although a worker is killed
mid-job and Redis itself is restarted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

from tests.server.conftest import wait_for

LONG = {"prompt": "a lighthouse in a storm", "width": 512, "height": 512, "steps": 150}
SMALL = {"prompt": "a red barn", "width": 64, "height": 64, "steps": 3, "prior_steps": 2}
TERMINAL = {"succeeded", "failed", "canceled"}


def submit(api, key: str | None = None, **fields) -> str:
    headers = {"x-api-key": key} if key else {}
    response = httpx.post(f"{api.url}/v1/jobs", json=fields, headers=headers, timeout=30)
    assert response.status_code == 201, response.text
    return response.json()["id"]


def job(api, job_id: str, key: str | None = None) -> dict:
    headers = {"x-api-key": key} if key else {}
    response = httpx.get(f"{api.url}/v1/jobs/{job_id}", headers=headers, timeout=30)
    assert response.status_code == 200, (api.name, response.status_code, response.text)
    return response.json()


def finished(api, job_id: str) -> dict:
    return wait_for(lambda: (j := job(api, job_id))["state"] in TERMINAL and j, timeout=180)


def test_jobs_through_either_api_complete_despite_a_killed_worker_and_a_redis_restart(cluster):
    first, second = cluster.api("api-1"), cluster.api("api-2")
    cluster.worker("worker-1")
    cluster.worker("worker-2")
    cluster.ready_workers(first, 2)

    # a sync request on one API node wakes as soon as a worker (elsewhere) finishes
    started = time.monotonic()
    done = httpx.post(f"{second.url}/v1/jobs?wait=60", json=SMALL, timeout=90).json()
    assert done["state"] == "succeeded"
    assert time.monotonic() - started < 30

    # SIGKILL the worker that runs a long job: the other one finishes it
    long_job = submit(first, **LONG)
    wait_for(lambda: job(first, long_job)["state"] == "running", timeout=60)
    busy = next(w for w in cluster.ready_workers(first, 1) if w["state"] == "busy")
    os.kill(busy["pid"], signal.SIGKILL)
    survivor = finished(second, long_job)
    assert survivor["state"] == "succeeded" and survivor["attempts"] == 2

    # jobs acknowledged on both nodes survive a Redis crash (SIGKILL, AOF with fsync always)
    queued = [submit(api, **{**SMALL, "seed": i}) for i, api in enumerate([first, second] * 3)]
    cluster.redis.stop(signal.SIGKILL)
    cluster.redis.start()
    for i, job_id in enumerate(queued):
        result = finished([first, second][i % 2], job_id)
        assert result["state"] == "succeeded", result
        assert httpx.get(result["outputs"][0]["url"], timeout=30).status_code == 200


def test_keys_created_against_redis_work_on_every_api_node(cluster):
    env = cluster.env()
    created = subprocess.run(
        [sys.executable, "-m", "kandinsky_serve", "keys", "create", "--name", "alice"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    alice = created.stdout.strip().splitlines()[-1]
    first, second = cluster.api("api-1"), cluster.api("api-2")
    cluster.worker("worker-1")
    cluster.ready_workers(first, 1, key=alice)

    assert httpx.post(f"{first.url}/v1/jobs", json=SMALL, timeout=30).status_code == 401
    job_id = submit(first, alice, **SMALL)
    assert wait_for(lambda: job(second, job_id, alice)["state"] == "succeeded", timeout=120)
    assert httpx.get(f"{second.url}/v1/jobs/{job_id}", timeout=30).status_code == 401
