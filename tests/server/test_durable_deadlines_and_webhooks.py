"""A Replicate prediction's webhook and its Cancel-After deadline outlive the server that accepted it:
both are data in the store (the outbox, the job's cancel_at), not memory of that process."""

from __future__ import annotations

import json
import time

import httpx
import replicate

from tests.dialects.test_replicate_webhooks import V22, Receiver
from tests.server.conftest import wait_for

# long enough on the tiny model that the server is killed while it runs, short enough to run twice
MEDIUM = {"width": 64, "height": 64, "num_inference_steps": 60, "num_inference_steps_prior": 60}
# never finishes within its deadline
SLOW = {"width": 64, "height": 64, "num_inference_steps": 500, "num_inference_steps_prior": 500, "num_outputs": 4}


def processing(http: httpx.Client, prediction_id: str) -> bool:
    return http.get(f"/v1/predictions/{prediction_id}").json()["status"] == "processing"


def test_the_completed_webhook_arrives_once_although_the_server_that_took_the_prediction_was_killed(serve):
    receiver = Receiver()
    try:
        server = serve(KS_ALLOW_PRIVATE_URLS="true")
        local = replicate.Client(api_token=None, base_url=server.url)
        secret = local.webhooks.default.secret()
        prediction = local.predictions.create(
            version=V22, input=MEDIUM, webhook=receiver.url, webhook_events_filter=["completed"]
        )
        wait_for(lambda: processing(server.client, prediction.id), every=0.05)
        server.kill()
        assert receiver.received.empty()  # it had not finished: nothing was sent

        again = serve(KS_ALLOW_PRIVATE_URLS="true")  # same data dir: the job is reclaimed and runs again
        headers, body = receiver.next(timeout=120)
        local.webhooks.validate(headers=headers, body=body.decode(), secret=secret, tolerance=60)
        final = json.loads(body)
        assert final["id"] == prediction.id and final["status"] == "succeeded" and len(final["output"]) == 1
        assert again.client.get(f"/v1/predictions/{prediction.id}").json()["status"] == "succeeded"
        time.sleep(2)  # a second poll of the outbox, a second janitor tick: still once
        assert receiver.received.empty()
    finally:
        receiver.server.shutdown()


def test_a_cancel_after_deadline_is_kept_by_the_server_that_comes_back(serve):
    server = serve()
    http = server.client
    created = http.post("/v1/predictions", json={"version": V22, "input": SLOW}, headers={"Cancel-After": "5s"}).json()
    prediction_id = created["id"]
    assert created["deadline"].endswith("Z")
    wait_for(lambda: processing(http, prediction_id), every=0.05)
    server.kill()

    again = serve()
    final = wait_for(
        lambda: (p := again.client.get(f"/v1/predictions/{prediction_id}").json())["status"] == "canceled" and p,
        timeout=60,
    )
    assert "canceled: Cancel-After deadline" in final["logs"]
    assert final["output"] is None
