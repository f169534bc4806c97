"""API keys over the native API: required once they exist, owners isolated, credits and limits."""

from __future__ import annotations

import httpx

SMALL = {"prompt": "a red barn", "width": 64, "height": 64, "steps": 2, "prior_steps": 2}


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
