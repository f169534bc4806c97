"""Idempotency-Key on every create route that answers with a job id, against a real server: a retry
gets the job the key made (spending no credits, rate or jobs-in-flight slot again), other parameters
under the same key are refused in the dialect's shape naming the header, keys are per API key, and
concurrent retries make one job."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from threading import Barrier

import httpx
import pytest
import replicate
from replicate.exceptions import ReplicateError

from tests.dialects.test_keys import create, listed
from tests.dialects.test_replicate import V22
from tests.server.conftest import wait_for

SMALL = {"prompt": "a red barn", "width": 64, "height": 64, "steps": 2, "prior_steps": 2}
SLOW = {"prompt": "x", "width": 1024, "height": 1024, "steps": 500, "prior_steps": 500}  # runs for minutes
SEGMIND = {"prompt": "a red barn", "img_width": 64, "img_height": 64, "num_inference_steps": 2, "prior_steps": 2}
REPLICATE = {"width": 64, "height": 64, "num_inference_steps": 2, "num_inference_steps_prior": 2}
HEADER = "Idempotency-Key"


def session(keyed_server, key: str) -> httpx.Client:
    return httpx.Client(base_url=keyed_server.url, headers={"x-api-key": key}, timeout=120)


def once() -> dict[str, str]:
    return {HEADER: f"order-{uuid.uuid4()}"}


def job_ids(client: httpx.Client) -> list[str]:
    return [job["id"] for job in client.get("/v1/jobs").json()["jobs"]]


def test_a_native_retry_gets_the_finished_job_and_spends_credits_once(keyed_server):
    data_dir = keyed_server.server.data_dir
    secret = create(data_dir, "native-retry", "--credits", "10")
    alice, key = session(keyed_server, secret), once()
    first = alice.post("/v1/jobs?wait=120", json=SMALL, headers=key)  # no seed: the server draws one
    assert first.status_code == 201 and first.json()["state"] == "succeeded", first.text
    remaining = listed(data_dir, secret)["REMAINING"]
    assert float(remaining) < 10

    again = alice.post("/v1/jobs", json=SMALL, headers=key)
    assert again.status_code == 201, again.text
    assert again.json()["id"] == first.json()["id"]
    assert again.json()["state"] == "succeeded" and again.json()["request"]["seed"] == first.json()["request"]["seed"]
    assert [o["seed"] for o in again.json()["outputs"]] == [o["seed"] for o in first.json()["outputs"]]
    assert job_ids(alice) == [first.json()["id"]]
    assert listed(data_dir, secret)["REMAINING"] == remaining

    # a new key is a new job
    other = alice.post("/v1/jobs", json=SMALL, headers=once())
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_the_same_key_with_other_parameters_is_refused_in_each_dialects_shape(keyed_server):
    alice = session(keyed_server, create(keyed_server.server.data_dir, "mismatch"))

    key = once()
    made = alice.post("/v1/jobs", json=SMALL, headers=key)
    assert made.status_code == 201
    refused = alice.post("/v1/jobs", json={**SMALL, "prompt": "a blue barn"}, headers=key)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["code"] == "invalid_input" and error["field"] == HEADER
    assert error["message"].startswith(f"{HEADER}: this key was already used for a different request")
    assert made.json()["id"] in error["message"]

    key = once()
    assert alice.post("/v2/kandinsky2.2-txt2img", json=SEGMIND, headers=key).status_code == 200
    refused = alice.post("/v2/kandinsky2.2-txt2img", json={**SEGMIND, "img_width": 128}, headers=key)
    assert refused.status_code == 400 and refused.json()["error"].startswith(f"{HEADER}: "), refused.text
    assert "x-remaining-credits" in refused.headers

    key = once()
    body = {"model": "kandinsky-2.2", "input": {**REPLICATE, "prompt": "a fox"}}
    assert alice.post("/v1/prediction/", json=body, headers=key).status_code == 200
    refused = alice.post("/v1/prediction/", json={**body, "input": {**REPLICATE, "prompt": "a cat"}}, headers=key)
    assert refused.status_code == 400 and refused.json()["error"].startswith(f"{HEADER}: "), refused.text


def test_replicate_python_with_the_header_retries_into_one_prediction(keyed_server):
    secret = create(keyed_server.server.data_dir, "replicate-retry")
    sdk = replicate.Client(api_token=secret, base_url=keyed_server.url, headers=once())
    # by version (POST /v1/predictions), then by model name (/v1/models/.../predictions): one request
    first = sdk.predictions.create(version=V22, input={**REPLICATE, "prompt": "a fox"})
    again = sdk.models.predictions.create(model="ai-forever/kandinsky-2.2", input={**REPLICATE, "prompt": "a fox"})
    assert again.id == first.id
    again.wait()
    assert again.status == "succeeded"
    assert [p.id for p in sdk.predictions.list().results] == [first.id]

    with pytest.raises(ReplicateError) as refused:
        sdk.predictions.create(model="ai-forever/kandinsky-2.2", input={**REPLICATE, "prompt": "a cat"})
    assert refused.value.status == 422
    assert refused.value.detail.startswith(f"- {HEADER}: this key was already used")
    assert [p.id for p in sdk.predictions.list().results] == [first.id]


def test_another_api_key_with_the_same_idempotency_key_gets_a_job_of_its_own(keyed_server):
    data_dir = keyed_server.server.data_dir
    alice, bob = (session(keyed_server, create(data_dir, name)) for name in ("same-key-a", "same-key-b"))
    key = once()
    mine = alice.post("/v1/jobs", json=SMALL, headers=key)
    theirs = bob.post("/v1/jobs", json={**SMALL, "prompt": "something else"}, headers=key)
    assert mine.status_code == theirs.status_code == 201, theirs.text
    assert mine.json()["id"] != theirs.json()["id"]
    assert job_ids(alice) == [mine.json()["id"]] and job_ids(bob) == [theirs.json()["id"]]


def test_concurrent_identical_requests_with_one_key_make_one_job(keyed_server):
    alice = session(keyed_server, create(keyed_server.server.data_dir, "concurrent", "--rate-limit", "0"))
    key, start = once(), Barrier(8)

    def post(path: str, body: dict[str, object]) -> httpx.Response:
        start.wait()
        return alice.post(path, json=body, headers=key)

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: post("/v1/jobs", SMALL), range(8)))
    assert [a.status_code for a in answers] == [201] * 8, [a.text for a in answers if a.status_code != 201]
    assert len({a.json()["id"] for a in answers}) == 1
    assert job_ids(alice) == [answers[0].json()["id"]]

    key = once()
    with ThreadPoolExecutor(8) as pool:
        segmind = list(pool.map(lambda _: post("/v2/kandinsky2.2-txt2img", SEGMIND), range(8)))
    assert [a.status_code for a in segmind] == [200] * 8
    assert {a.json()["request_id"] for a in segmind} == {segmind[0].json()["request_id"]}
    assert len(job_ids(alice)) == 2

    # two different requests racing on one key: whichever is stored first wins, the other is refused
    key, prompts = once(), ["a fox", "a cat"] * 4
    with ThreadPoolExecutor(8) as pool:
        raced = list(pool.map(lambda i: post("/v1/jobs", {**SMALL, "prompt": prompts[i]}), range(8)))
    won = {prompts[i] for i, a in enumerate(raced) if a.status_code == 201}
    assert len(won) == 1, [a.text for a in raced]
    for i, answer in enumerate(raced):
        if prompts[i] in won:
            assert answer.status_code == 201 and answer.json()["request"]["prompt"] in won
        else:
            assert answer.status_code == 422 and answer.json()["error"]["field"] == HEADER
    assert len({a.json()["id"] for a in raced if a.status_code == 201}) == 1
    assert len(job_ids(alice)) == 3


def test_a_retry_takes_neither_a_rate_limit_token_nor_a_jobs_in_flight_slot(keyed_server):
    data_dir = keyed_server.server.data_dir
    limited = session(keyed_server, create(data_dir, "one-a-minute", "--rate-limit", "1", "--max-jobs", "1"))
    key = once()
    first = limited.post("/v1/jobs", json=SLOW, headers=key)  # the minute's token, and the one slot
    assert first.status_code == 201, first.text
    try:
        for _ in range(3):
            again = limited.post("/v1/jobs", json=SLOW, headers=key)
            assert again.status_code == 201 and again.json()["id"] == first.json()["id"], again.text
        refused = limited.post("/v1/jobs", json=SLOW, headers=once())  # a new request is limited
        assert refused.status_code == 429 and refused.json()["error"]["code"] == "rate_limited"
    finally:
        job_id = first.json()["id"]
        assert limited.post(f"/v1/jobs/{job_id}/cancel").status_code == 200
        wait_for(lambda: limited.get(f"/v1/jobs/{job_id}").json()["state"] == "canceled", timeout=60)
    # a canceled job is what the key names from now on: it is not made again
    after = limited.post("/v1/jobs", json=SLOW, headers=key)
    assert after.status_code == 201 and after.json()["state"] == "canceled"


def test_segmind_retry_returns_the_same_links_and_keeps_the_balance(keyed_server):
    secret = create(keyed_server.server.data_dir, "segmind-retry", "--credits", "5")
    client, key = session(keyed_server, secret), once()
    first = client.post("/v2/kandinsky2.2-txt2img", json=SEGMIND, headers=key)
    again = client.post("/v2/kandinsky2.2-txt2img", json=SEGMIND, headers=key)
    assert first.status_code == again.status_code == 200
    assert again.json() == first.json()
    assert float(again.headers["x-remaining-credits"]) == float(first.headers["x-remaining-credits"]) < 5


def test_a_malformed_key_is_refused_naming_the_header(keyed_server):
    alice = session(keyed_server, keyed_server.alice)
    too_long = alice.post("/v1/jobs", json=SMALL, headers={HEADER: "k" * 256})
    assert too_long.status_code == 422 and too_long.json()["error"]["field"] == HEADER
    assert "at most 255" in too_long.json()["error"]["message"]
    assert alice.post("/v1/jobs", json=SMALL, headers={HEADER: "k" * 255}).status_code == 201
    latin = alice.post("/v1/jobs", json=SMALL, headers=[(HEADER.encode(), "caf\xe9".encode("latin-1"))])
    assert latin.status_code == 422 and "printable ASCII" in latin.json()["error"]["message"]
    twice = alice.post("/v1/jobs", json=SMALL, headers=[(HEADER, "a"), (HEADER, "b")])
    assert twice.status_code == 422 and "more than once" in twice.json()["error"]["message"]
    replicate_shape = alice.post(
        "/v1/predictions", json={"version": "ai-forever/kandinsky-2.2", "input": REPLICATE}, headers={HEADER: ""}
    )
    assert replicate_shape.status_code == 422, replicate_shape.text
    assert replicate_shape.json()["invalid_fields"][0]["field"] == HEADER
