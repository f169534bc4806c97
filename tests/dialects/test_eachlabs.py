"""Eachlabs predictions over HTTP against a real server: create, poll, fail, cancel, errors."""

from __future__ import annotations

import base64
import io
import time
from typing import Any

import httpx
from PIL import Image

from tests.dialects.conftest import KeyedServer, failed_job

SMALL = {"width": "64", "height": "64", "num_inference_steps": "2", "num_inference_steps_prior": "2"}


def http(server: KeyedServer, key: str | None) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key} if key else {}, timeout=60)


def poll(client: httpx.Client, prediction_id: str, until: tuple[str, ...] = ("success", "error")) -> dict[str, Any]:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        result: dict[str, Any] = client.get(f"/v1/prediction/{prediction_id}").json()
        if result["status"] in until:
            return result
        time.sleep(0.2)
    raise AssertionError(f"prediction {prediction_id} did not finish")


def test_create_then_poll_until_success(keyed_server: KeyedServer) -> None:
    client = http(keyed_server, keyed_server.alice)
    body = {"model": "kandinsky-2.2", "version": "0.0.1", "input": {**SMALL, "prompt": "a fox", "seed": None}}
    created = client.post("/v1/prediction", json=body)  # no trailing slash: the docs' spelling
    assert created.status_code == 200
    assert created.json()["status"] == "success"
    result = poll(client, created.json()["predictionID"])
    assert result["id"] == created.json()["predictionID"]
    assert result["input"] == body["input"]
    assert result["metrics"]["predict_time"] > 0 and result["metrics"]["cost"] > 0
    assert result["urls"]["get"] == f"{keyed_server.url}/v1/prediction/{result['id']}"
    image = Image.open(io.BytesIO(client.get(result["output"]).content))
    assert (image.format, image.size) == ("WEBP", (64, 64))


def test_the_seed_drawn_for_null_is_reported_and_makes_the_same_image_again(keyed_server: KeyedServer) -> None:
    client = http(keyed_server, keyed_server.alice)
    inputs = {**SMALL, "prompt": "a fox", "seed": None, "output_format": "png"}
    first = poll(
        client, client.post("/v1/prediction/", json={"model": "kandinsky-2.2", "input": inputs}).json()["predictionID"]
    )
    seed = first["metrics"]["seed"]
    assert isinstance(seed, int)
    assert first["logs"] == f"Using seed: {seed}"
    again_inputs = {**inputs, "seed": str(seed)}
    again = client.post("/v1/prediction/", json={"model": "kandinsky-2.2", "input": again_inputs}).json()
    again = poll(client, again["predictionID"])
    assert again["metrics"]["seed"] == seed and again["input"]["seed"] == str(seed)
    assert client.get(again["output"]).content == client.get(first["output"]).content


def test_several_outputs_are_a_list_in_the_format_asked(keyed_server: KeyedServer) -> None:
    client = http(keyed_server, keyed_server.alice)
    inputs = {**SMALL, "prompt": "a fox", "num_outputs": "2", "output_format": "png", "seed": "3"}
    created = client.post("/v1/prediction/", json={"model": "kandinsky-2.2", "input": inputs}).json()
    result = poll(client, created["predictionID"])
    assert [url.split("?")[0].rsplit(".", 1)[1] for url in result["output"]] == ["png", "png"]


def test_a_failed_job_has_status_error_and_an_error_output(keyed_server: KeyedServer) -> None:
    meta = {"dialect": "eachlabs", "model": "kandinsky-2.2", "input": {"prompt": "x"}}
    message = "The generation failed: RuntimeError: CUDA error: an illegal memory access was encountered"
    prediction_id = failed_job(keyed_server, keyed_server.alice, meta, message)
    result = poll(http(keyed_server, keyed_server.alice), prediction_id)
    assert result["status"] == "error"
    assert result["output"]["error_code"] == "PROVIDER_FAILED"
    assert result["output"]["error_message"] == message


def test_a_truncated_image_is_refused_when_it_is_sent(keyed_server: KeyedServer) -> None:
    """Eachlabs' Kandinsky takes no input images; the job ids are the server's, so Segmind creates it."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48).save(buffer, format="PNG")
    truncated = base64.b64encode(buffer.getvalue()[: len(buffer.getvalue()) // 2]).decode("ascii")
    body = {"prompt": "x", "image": truncated, "img_width": 64, "img_height": 64, "num_inference_steps": 4}
    response = http(keyed_server, keyed_server.alice).post("/v2/kandinsky2.2-img2img", json=body)
    assert response.status_code == 400
    assert response.json()["error"] == "image: is truncated or corrupt"


def test_a_cancelled_prediction_reports_why_in_its_output(keyed_server: KeyedServer) -> None:
    client = http(keyed_server, keyed_server.alice)
    slow = {**SMALL, "prompt": "x", "width": "1024", "num_inference_steps": "300"}
    created = client.post("/v1/prediction/", json={"model": "kandinsky-2.2", "input": slow})
    prediction_id = created.json()["predictionID"]
    canceled = client.post(f"/v1/prediction/{prediction_id}/cancel")
    assert canceled.status_code == 200
    result = poll(client, prediction_id, until=("cancelled",))
    assert result["output"]["error_code"] == "PROVIDER_FAILED"
    assert result["output"]["error_message"]
    assert result["metrics"]["cost"] == 0
    assert result["logs"].splitlines()[0] == f"Using seed: {result['metrics']['seed']}"


def test_errors_are_in_eachlabs_shape(keyed_server: KeyedServer) -> None:
    client = http(keyed_server, keyed_server.alice)
    cases = [
        ({"input": {"prompt": "x"}}, 400, "model"),
        ({"model": "kandinsky-2.2", "input": {"prompt": "x", "width": "huge"}}, 400, "input.width"),
        ({"model": "kandinsky-2.2", "input": {"prompt": "x", "num_outputs": "99"}}, 400, "input.num_outputs"),
        ({"model": "kandinsky-2.2", "input": {"prompt": "x", "guidance": 3}}, 400, "input.guidance"),
        ({"model": "kandinsky-2.2", "input": "x"}, 400, "input"),
        ({"model": "stable-diffusion", "input": {"prompt": "x"}}, 404, "Model stable-diffusion"),
        ({"model": "kandinsky-2.1", "input": {"prompt": "x"}}, 404, "Model kandinsky-2.1"),
    ]
    for body, status, start in cases:
        response = client.post("/v1/prediction/", json=body)
        assert response.status_code == status, (body, response.text)
        assert response.json()["error"].startswith(start), response.json()
    assert client.post("/v1/prediction/", content=b"{").status_code == 400
    assert client.get("/v1/prediction/nope").json() == {"error": "Prediction not found"}
    assert client.get("/v1/prediction/nope").status_code == 404
    unauthorized = http(keyed_server, None).post("/v1/prediction/", json={"model": "kandinsky-2.2", "input": {}})
    assert unauthorized.status_code == 401 and unauthorized.json()["error"]


def test_bearer_works_and_other_keys_predictions_are_not_found(keyed_server: KeyedServer) -> None:
    bearer = httpx.Client(base_url=keyed_server.url, headers={"Authorization": f"Bearer {keyed_server.alice}"})
    created = bearer.post("/v1/prediction/", json={"model": "kandinsky-2.2", "input": {**SMALL, "prompt": "x"}})
    prediction_id = created.json()["predictionID"]
    assert http(keyed_server, keyed_server.bob).get(f"/v1/prediction/{prediction_id}").status_code == 404
    assert poll(bearer, prediction_id)["status"] == "success"
