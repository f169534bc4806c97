"""A local server without keys serves the local user whatever placeholder key a client sends (the
vendors' SDKs refuse to start without one); a server that has had keys keeps requiring them after the
last one is revoked, on every dialect, unless KS_REQUIRE_KEYS=false says otherwise."""

from __future__ import annotations

import base64
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import openai
import pytest
import replicate
from PIL import Image
from segmind import SegmindClient

from kandinsky_serve.auth.keys import key_id_of
from tests.dialects.conftest import create_key
from tests.server.conftest import Server, start_server

NATIVE = {"prompt": "a red barn", "width": 64, "height": 64, "steps": 2, "prior_steps": 2}
V22 = "ad9d7879fbffa2874e1d909d1d37d9bc682889cc65b31f7bb00d2362619f194a"
REPLICATE = {"prompt": "a fox", "width": 64, "height": 64, "num_inference_steps": 2, "num_inference_steps_prior": 2}


@pytest.fixture(scope="module")
def keyless(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """127.0.0.1, no key ever created, KS_REQUIRE_KEYS unset: the first-hour set-up."""
    server = start_server(tmp_path_factory.mktemp("keyless") / "data")
    yield server
    server.stop()


def test_the_openai_sdk_with_a_placeholder_key_generates_an_image(keyless: Server) -> None:
    sdk = openai.OpenAI(base_url=f"{keyless.url}/v1", api_key="sk-placeholder", max_retries=0, timeout=120)
    result = sdk.images.generate(prompt="a red fox", size="64x64", quality="low", response_format="b64_json")
    assert result.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert image.size == (64, 64)


def test_the_segmind_sdk_with_a_placeholder_key_runs(keyless: Server) -> None:
    sdk = SegmindClient(api_key="YOUR_API_KEY", base_url=f"{keyless.url}/v1", timeout=120)
    result = sdk.run("kandinsky2.2-txt2img", prompt="a fox", img_width=64, img_height=64, num_inference_steps=2)
    assert result["status"] == "COMPLETED", result
    image = Image.open(io.BytesIO(httpx.get(result["output"], timeout=30).content))
    assert image.size == (64, 64)


def test_the_replicate_sdk_with_a_placeholder_token_runs(keyless: Server) -> None:
    sdk = replicate.Client(api_token="r8_placeholder", base_url=keyless.url)
    outputs = sdk.run("ai-forever/kandinsky-2.2", input=REPLICATE)
    image = Image.open(io.BytesIO(outputs[0].read()))
    assert image.size == (64, 64)


def test_every_placeholder_is_the_same_local_user(keyless: Server) -> None:
    """Whatever a client sends, its jobs are the local user's: another placeholder, or none, sees them."""
    created = httpx.post(f"{keyless.url}/v1/jobs", json=NATIVE, headers={"x-api-key": "sk-one"}, timeout=30)
    assert created.status_code == 201, created.text
    job_id = created.json()["id"]
    for headers in ({}, {"authorization": "Bearer sk-two"}, {"x-api-key": "ks_00000000_not-a-key"}):
        assert httpx.get(f"{keyless.url}/v1/jobs/{job_id}", headers=headers, timeout=30).status_code == 200


# --- once keys have been in use ---------------------------------------------------------------


def _keys(data_dir: Path, *args: str) -> str:
    command = [sys.executable, "-m", "kandinsky_serve", "keys", *args, "--data-dir", str(data_dir)]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(command, capture_output=True, text=True, check=True, env=env).stdout


def job_routes(job_id: str) -> list[tuple[str, str, dict[str, object]]]:
    """(method, path, request options) of every dialect's job routes."""
    segmind = {"json": {"prompt": "x", "img_width": 64, "img_height": 64, "num_inference_steps": 2}}
    replicate_body = {"json": {"input": REPLICATE}}
    return [
        ("POST", "/v1/jobs", {"json": NATIVE}),
        ("GET", "/v1/jobs", {}),
        ("GET", f"/v1/jobs/{job_id}", {}),
        ("GET", f"/v1/jobs/{job_id}/events", {}),
        ("POST", f"/v1/jobs/{job_id}/cancel", {}),
        ("POST", "/v1/kandinsky2.2-txt2img", segmind),
        ("POST", "/v2/kandinsky2.2-txt2img", segmind),
        ("GET", f"/v2/requests/{job_id}", {}),
        ("GET", f"/v2/requests/{job_id}/status", {}),
        ("GET", f"/v1/requests/{job_id}", {}),
        ("POST", "/v1/predictions", {"json": {"version": V22, "input": REPLICATE}}),
        ("POST", "/v1/models/ai-forever/kandinsky-2.2/predictions", replicate_body),
        ("GET", "/v1/predictions", {}),
        ("GET", f"/v1/predictions/{job_id}", {}),
        ("POST", f"/v1/predictions/{job_id}/cancel", {}),
        ("POST", "/v1/prediction/", {"json": {"model": "kandinsky-2.2", "input": REPLICATE}}),
        ("GET", f"/v1/prediction/{job_id}", {}),
        ("POST", f"/v1/prediction/{job_id}/cancel", {}),
        ("POST", "/v1/images/generations", {"json": {"prompt": "x", "size": "64x64"}}),
        ("POST", "/v1/images/edits", {"data": {"prompt": "x"}, "files": {"image": ("a.png", b"x", "image/png")}}),
    ]


def test_revoking_the_last_key_leaves_keys_required_on_every_dialect(
    serve: Callable[..., Server], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    secret = create_key(data_dir, "only")
    server = serve(secret)
    job_id = httpx.post(f"{server.url}/v1/jobs", json=NATIVE, headers={"x-api-key": secret}, timeout=30).json()["id"]
    assert _keys(data_dir, "revoke", key_id_of(secret)).strip() == f"revoked {key_id_of(secret)}"

    with httpx.Client(base_url=server.url, timeout=30) as http:
        for headers in ({}, {"x-api-key": "YOUR_API_KEY"}, {"x-api-key": secret}):
            for method, path, options in job_routes(job_id):
                answer = http.request(method, path, headers=headers, **options)  # type: ignore[arg-type]
                assert answer.status_code == 401, (headers, method, path, answer.status_code, answer.text)

    # the operator's explicit choice opens it again, to the local user
    server.stop()
    reopened = serve(KS_REQUIRE_KEYS="false")
    listed = httpx.get(f"{reopened.url}/v1/jobs", headers={"x-api-key": "sk-local"}, timeout=30)
    assert listed.status_code == 200 and listed.json()["jobs"] == []  # the key's job is not the local user's
