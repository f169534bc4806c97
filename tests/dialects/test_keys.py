"""API keys over the native API: required once they exist, owners isolated, credits and limits,
a key's own limits (`keys create --max-jobs --rate-limit`), and `keys list` reporting what remains."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx

from kandinsky_serve.auth.keys import key_id_of
from tests.server.conftest import wait_for

SMALL = {"prompt": "a red barn", "width": 64, "height": 64, "steps": 2, "prior_steps": 2}
_ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def client(keyed_server, key: str | None, scheme: str = "x-api-key") -> httpx.Client:
    headers = {}
    if key and scheme == "x-api-key":
        headers["x-api-key"] = key
    elif key:
        headers["authorization"] = f"{scheme} {key}"
    return httpx.Client(base_url=keyed_server.url, headers=headers, timeout=60)


def test_once_keys_exist_a_key_is_required(keyed_server):
    anonymous = client(keyed_server, None).post("/v1/jobs", json=SMALL)
    assert anonymous.status_code == 401
    assert "kandinsky-serve keys create" in anonymous.json()["error"]["message"]
    wrong = client(keyed_server, "ks_00000000_not-a-real-key").post("/v1/jobs", json=SMALL)
    assert wrong.status_code == 401


def test_every_header_style_is_accepted(keyed_server):
    for scheme in ("x-api-key", "Bearer", "Token"):
        response = client(keyed_server, keyed_server.alice, scheme).post("/v1/jobs", json=SMALL)
        assert response.status_code == 201, (scheme, response.text)


def test_one_key_cannot_see_another_keys_jobs(keyed_server):
    alice, bob = client(keyed_server, keyed_server.alice), client(keyed_server, keyed_server.bob)
    job_id = alice.post("/v1/jobs?wait=60", json=SMALL).json()["id"]
    assert bob.get(f"/v1/jobs/{job_id}").status_code == 404
    assert bob.post(f"/v1/jobs/{job_id}/cancel").status_code == 404
    assert job_id not in [j["id"] for j in bob.get("/v1/jobs").json()["jobs"]]
    assert alice.get(f"/v1/jobs/{job_id}").status_code == 200


def test_credits_run_out(keyed_server):
    bob = client(keyed_server, keyed_server.bob)
    big = {**SMALL, "width": 512, "height": 512, "steps": 50}  # one credit each
    spent = [bob.post("/v1/jobs?wait=60", json=big) for _ in range(3)]
    assert all(r.status_code == 201 for r in spent)
    refused = bob.post("/v1/jobs", json=big)
    assert refused.status_code == 402
    assert refused.json()["error"]["code"] == "insufficient_credits"


# --- per-key limits and `keys list` -----------------------------------------------------------

SLOW = {"prompt": "x", "width": 1024, "height": 1024, "steps": 500, "prior_steps": 500}  # 40 credits


def create(data_dir: Path, name: str, *options: str) -> str:
    """`kandinsky-serve keys create` with its options, while the server runs; the key it prints."""
    args = [sys.executable, "-m", "kandinsky_serve", "keys", "create", "--name", name, "--data-dir", str(data_dir)]
    result = subprocess.run([*args, *options], capture_output=True, text=True, check=True, env=_ENV)
    return result.stdout.strip().splitlines()[-1]


def listed(data_dir: Path, secret: str) -> dict[str, str]:
    """The row `kandinsky-serve keys list` prints for the key, by column name."""
    args = [sys.executable, "-m", "kandinsky_serve", "keys", "list", "--data-dir", str(data_dir)]
    lines = subprocess.run(args, capture_output=True, text=True, check=True, env=_ENV).stdout.splitlines()
    header = re.split(r" {2,}", lines[0])
    rows = [dict(zip(header, re.split(r" {2,}", line), strict=True)) for line in lines[1:]]
    return next(row for row in rows if row["ID"] == key_id_of(secret))


def cancel_all(session: httpx.Client, job_ids: list[str]) -> None:
    for job_id in job_ids:
        assert session.post(f"/v1/jobs/{job_id}/cancel").status_code == 200


def test_a_key_of_its_own_may_have_more_jobs_in_flight_than_the_default(keyed_server):
    data_dir = keyed_server.server.data_dir
    default, roomy = create(data_dir, "default-limits"), create(data_dir, "roomy", "--max-jobs", "12")
    assert listed(data_dir, roomy)["JOBS IN FLIGHT"] == "12"
    assert listed(data_dir, default)["JOBS IN FLIGHT"] == "10 (default)"
    for key, allowed in ((default, 10), (roomy, 12)):
        session = client(keyed_server, key)
        created = [session.post("/v1/jobs", json=SLOW) for _ in range(allowed)]
        try:
            assert [r.status_code for r in created] == [201] * allowed, created[-1].text
            refused = session.post("/v1/jobs", json=SLOW)
            assert refused.status_code == 429, refused.text
            assert refused.json()["error"]["code"] == "rate_limited"
            assert f"may have {allowed} queued or running" in refused.json()["error"]["message"]
            assert int(refused.headers["retry-after"]) > 0
        finally:
            cancel_all(session, [r.json()["id"] for r in created if r.status_code == 201])


def test_a_key_of_its_own_rate_refuses_the_third_submission_in_a_minute(keyed_server):
    data_dir = keyed_server.server.data_dir
    slow_key = create(data_dir, "two-a-minute", "--rate-limit", "2")
    assert listed(data_dir, slow_key)["JOBS/MIN"] == "2"
    session = client(keyed_server, slow_key)
    accepted = [session.post("/v1/jobs", json=SMALL) for _ in range(2)]
    assert [r.status_code for r in accepted] == [201, 201]
    refused = session.post("/v1/jobs", json=SMALL)
    assert refused.status_code == 429, refused.text
    assert refused.json()["error"]["code"] == "rate_limited"
    assert "2 jobs a minute" in refused.json()["error"]["message"]
    assert 1 <= int(refused.headers["retry-after"]) <= 30  # a token every 30 s
    # another key still has the server's 60 a minute
    assert client(keyed_server, keyed_server.alice).post("/v1/jobs", json=SMALL).status_code == 201


def test_keys_list_shows_remaining_credits_spent_only_by_jobs_that_do_not_fail(keyed_server):
    data_dir = keyed_server.server.data_dir
    secret = create(data_dir, "ledger", "--credits", "100")
    row = listed(data_dir, secret)
    assert (row["NAME"], row["CREDITS"], row["SPENT"], row["REMAINING"], row["REVOKED"]) == (
        "ledger",
        "100",
        "0",
        "100",
        "no",
    )
    assert row["JOBS/MIN"] == "60 (default)"
    session = client(keyed_server, secret)
    done = session.post("/v1/jobs?wait=120", json={**SMALL, "width": 128, "height": 128, "steps": 10})
    assert done.json()["state"] == "succeeded", done.text  # 0.0625 of the pixels, 0.2 of the steps
    assert listed(data_dir, secret)["REMAINING"] == "99.9875"
    slow = session.post("/v1/jobs", json=SLOW).json()["id"]
    assert listed(data_dir, secret)["REMAINING"] == "59.9875"  # a job in flight holds its price
    cancel_all(session, [slow])
    wait_for(lambda: session.get(f"/v1/jobs/{slow}").json()["state"] == "canceled", timeout=60)
    row = listed(data_dir, secret)
    assert (row["SPENT"], row["REMAINING"]) == ("0.0125", "99.9875")
