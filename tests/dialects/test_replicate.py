"""The Replicate dialect driven by replicate-python 1.0.7, unchanged but for its base URL."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator

import httpx
import pytest
import replicate
from PIL import Image
from replicate.exceptions import ReplicateError

from kandinsky_serve.api.dialects.replicate.translate import duration_seconds, wait_seconds
from kandinsky_serve.domain.errors import ServeError
from tests.server.conftest import Server, start_server

V22 = "ad9d7879fbffa2874e1d909d1d37d9bc682889cc65b31f7bb00d2362619f194a"
V21 = "a768f3c2e174c54b576cc4f222e789e161160403d0cd0ace41eeb9a0f8c8d5f8"
SMALL = {"width": 64, "height": 64, "num_inference_steps": 2, "num_inference_steps_prior": 2}
SLOW = {**SMALL, "num_inference_steps": 500, "num_inference_steps_prior": 500, "num_outputs": 4}


def client(server, key: str | None) -> replicate.Client:
    # the SDK appends paths that already start with /v1, so the base is the server's root
    return replicate.Client(api_token=key, base_url=server.url)


def image(data: bytes) -> Image.Image:
    picture = Image.open(io.BytesIO(data))
    picture.load()
    return picture


def test_run_with_a_version_returns_files_that_read_as_the_requested_images(keyed_server):
    alice = client(keyed_server, keyed_server.alice)
    outputs = alice.run(f"ai-forever/kandinsky-2.2:{V22}", input={**SMALL, "num_outputs": 2, "output_format": "png"})
    assert len(outputs) == 2
    pictures = [image(item.read()) for item in outputs]
    assert all(p.format == "PNG" and p.size == (64, 64) for p in pictures)


def test_run_with_a_model_name_and_numbers_sent_as_strings(keyed_server):
    alice = client(keyed_server, keyed_server.alice)
    text_numbers = {key: str(value) for key, value in SMALL.items()} | {"height": 128}
    outputs = alice.run("ai-forever/kandinsky-2.2", input=text_numbers)
    picture = image(outputs[0].read())
    assert picture.format == "WEBP"  # the model's default output_format
    assert picture.size == (64, 128)


def test_create_get_wait_then_list(keyed_server):
    alice = client(keyed_server, keyed_server.alice)
    prediction = alice.predictions.create(version=V22, input={**SMALL, "seed": 7, "prompt": "a red barn"})
    assert prediction.status in ("starting", "processing", "succeeded")
    assert prediction.model == "ai-forever/kandinsky-2.2" and prediction.version == V22
    assert prediction.urls["get"] == f"{keyed_server.url}/v1/predictions/{prediction.id}"
    prediction.wait()
    assert prediction.status == "succeeded"
    assert prediction.input["prompt"] == "a red barn" and prediction.input["seed"] == 7
    assert "Using seed: 7" in prediction.logs
    assert prediction.progress is not None and prediction.progress.percentage == 1.0
    assert prediction.metrics["predict_time"] > 0 and prediction.metrics["image_count"] == 1
    assert prediction.created_at.endswith("Z") and prediction.completed_at.endswith("Z")
    assert prediction.output[0].startswith(keyed_server.url)  # async predictions carry URLs
    assert image(httpx.get(prediction.output[0], timeout=30).content).size == (64, 64)
    again = alice.predictions.get(prediction.id)
    assert again.output == prediction.output
    assert prediction.id in [p.id for p in alice.predictions.list()]


def test_cancel_returns_the_prediction(keyed_server):
    alice = client(keyed_server, keyed_server.alice)
    prediction = alice.predictions.create(version=V22, input=SLOW)
    prediction.cancel()
    assert prediction.id and prediction.status in ("starting", "processing", "canceled")
    prediction.wait()
    assert prediction.status == "canceled"
    assert prediction.error is None


def test_prefer_wait_answers_with_the_finished_prediction(keyed_server):
    http = httpx.Client(base_url=keyed_server.url, headers={"Authorization": f"Token {keyed_server.alice}"})
    body = {"version": f"ai-forever/kandinsky-2.2:{V22}", "input": {**SMALL, "output_format": "jpeg"}}
    response = http.post("/v1/predictions", json=body, headers={"Prefer": "wait=30"}, timeout=31)
    assert response.status_code == 201, response.text
    done = response.json()
    assert done["status"] == "succeeded"
    assert response.headers["location"] == done["urls"]["get"]
    # over plain http a sync answer inlines its files, the one form FileOutput can read there
    assert done["output"][0].startswith("data:image/jpeg;base64,")


def test_prefer_wait_that_runs_out_answers_starting_so_the_sdk_polls(keyed_server):
    http = httpx.Client(base_url=keyed_server.url, headers={"Authorization": f"Bearer {keyed_server.alice}"})
    started = time.monotonic()
    response = http.post(
        "/v1/predictions",
        json={"version": V22, "input": SLOW},
        headers={"Prefer": "wait=1", "Cancel-After": "1h"},
        timeout=1.5,  # what replicate-python allows for wait=1
    )
    assert time.monotonic() - started < 1.5
    assert response.status_code == 202, response.text
    body = response.json()
    assert body["status"] == "starting" and body["output"] is None
    assert body["deadline"].endswith("Z")
    canceled = http.post(f"/v1/predictions/{body['id']}/cancel", timeout=30).json()
    assert canceled["id"] == body["id"]


def test_bad_input_is_a_422_naming_the_replicate_field(keyed_server):
    alice = client(keyed_server, keyed_server.alice)
    with pytest.raises(ReplicateError) as steps:
        alice.predictions.create(version=V22, input={**SMALL, "num_inference_steps_prior": 0})
    assert steps.value.status == 422
    assert steps.value.title == "Input validation failed"
    assert "input.num_inference_steps_prior" in steps.value.detail
    with pytest.raises(ReplicateError) as outputs:
        alice.run(f"ai-forever/kandinsky-2.2:{V22}", input={**SMALL, "num_outputs": 5})
    assert "input.num_outputs" in outputs.value.detail
    with pytest.raises(ReplicateError) as version:
        alice.predictions.create(version="0" * 64, input=SMALL)
    assert version.value.status == 422 and version.value.title == "Invalid version or not permitted"


def test_another_key_cannot_see_the_prediction(keyed_server):
    alice, bob = client(keyed_server, keyed_server.alice), client(keyed_server, keyed_server.bob)
    prediction = alice.predictions.create(version=V22, input=SMALL)
    for attempt in (lambda: bob.predictions.get(prediction.id), lambda: bob.predictions.cancel(prediction.id)):
        with pytest.raises(ReplicateError) as missing:
            attempt()
        assert missing.value.status == 404
    assert prediction.id not in [p.id for p in bob.predictions.list()]


def test_a_bad_token_is_a_401_in_replicates_shape(keyed_server):
    with pytest.raises(ReplicateError) as refused:
        client(keyed_server, "r8_not-a-key").predictions.create(version=V22, input=SMALL)
    assert refused.value.status == 401 and refused.value.title == "Unauthenticated"


def test_version_and_model_endpoints_describe_the_inputs(keyed_server):
    alice = client(keyed_server, keyed_server.alice)
    version = alice.models.get("ai-forever/kandinsky-2.2").versions.get(V22)
    schema = version.openapi_schema["components"]["schemas"]
    inputs = schema["Input"]["properties"]
    assert inputs["num_inference_steps"]["default"] == 75 and inputs["num_inference_steps"]["maximum"] == 500
    assert inputs["width"]["enum"][0] == 384 and inputs["output_format"]["default"] == "webp"
    assert schema["Output"]["type"] == "array" and "x-cog-array-type" not in schema["Output"]
    model = alice.models.get("ai-forever/kandinsky-2.2")
    assert model.latest_version.id == V22
    assert [v.id for v in model.versions.list()] == [V22]
    with pytest.raises(ReplicateError) as other:
        alice.models.get("ai-forever/kandinsky-2-1")
    assert other.value.status == 404 and "ai-forever/kandinsky-2.2" in other.value.detail


@pytest.fixture(scope="module")
def open_21_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A keyless 2.1 server without request limits (a server costs seconds; two tests share it)."""
    server = start_server(
        tmp_path_factory.mktemp("open21") / "data",
        KS_MODEL="tiny-2.1",
        KS_RATE_LIMIT_PER_MINUTE="0",
        KS_MAX_JOBS_PER_KEY="200",
        KS_MAX_QUEUE="200",
    )
    yield server
    server.stop()


def test_the_2_1_model_on_a_2_1_server(open_21_server):
    local = client(open_21_server, None)
    inputs = {"prompt": "a fox", "width": 64, "height": 64, "num_inference_steps": 2, "num_steps_prior": 2}
    outputs = local.run(f"ai-forever/kandinsky-2-1:{V21}", input={**inputs, "guidance_scale": "3.5"})
    assert image(outputs[0].read()).format == "PNG"
    with pytest.raises(ReplicateError) as missing:
        local.predictions.create(version=V21, input={"width": 64})
    assert missing.value.detail == "- input: prompt is required\n"
    with pytest.raises(ReplicateError) as guidance:
        local.predictions.create(version=V21, input={**inputs, "guidance_scale": 30})
    assert "input.guidance_scale" in guidance.value.detail
    with pytest.raises(ReplicateError) as other:
        local.run(f"ai-forever/kandinsky-2.2:{V22}", input=SMALL)
    assert other.value.status == 404 and "ai-forever/kandinsky-2-1" in other.value.detail


def test_list_pages_back_and_forth(open_21_server):
    server = open_21_server
    local = client(server, None)
    created = []
    slow = {"prompt": "a fox", "width": 64, "height": 64, "num_inference_steps": 500, "num_steps_prior": 500}
    for _ in range(101):  # one more than a page
        prediction = local.predictions.create(version=V21, input=slow)
        local.predictions.cancel(prediction.id)
        created.append(prediction.id)
    first = local.predictions.list()
    assert len(first) == 100 and first.previous is None
    assert [p.id for p in first] == created[::-1][:100]
    assert first.next.startswith(f"{server.url}/v1/predictions?cursor=")
    second = local.predictions.list(first.next)
    assert second[0].id == created[0]  # older predictions of other tests follow it
    assert second.previous == f"{server.url}/v1/predictions"
    back = local.predictions.list(second.previous)
    assert [p.id for p in back] == [p.id for p in first]


def test_header_parsing():
    assert wait_seconds("wait") == 60 and wait_seconds("wait=5") == 5 and wait_seconds(None) is None
    assert wait_seconds("respond-async, wait=90") == 60
    assert [duration_seconds(t) for t in ("30", "30s", "5m", "1h30m45s")] == [30, 30, 300, 5445]
    for bad in ("2s", "soon", "25h"):
        with pytest.raises(ServeError):
            duration_seconds(bad)
    with pytest.raises(ServeError):
        wait_seconds("wait=0")


def test_a_webhook_to_a_private_address_is_refused(keyed_server):
    alice = replicate.Client(api_token=keyed_server.alice, base_url=keyed_server.url)
    with pytest.raises(ReplicateError) as refused:
        alice.predictions.create(version=V22, input=SMALL, webhook="http://127.0.0.1:9/hook")
    assert refused.value.status == 422 and "webhook" in refused.value.detail


def test_each_caller_has_its_own_secret(keyed_server):
    alice = replicate.Client(api_token=keyed_server.alice, base_url=keyed_server.url)
    bob = replicate.Client(api_token=keyed_server.bob, base_url=keyed_server.url)
    assert alice.webhooks.default.secret().key != bob.webhooks.default.secret().key
    assert alice.webhooks.default.secret().key == alice.webhooks.default.secret().key
