"""The vendor pages' own request code (shared/seeds), changed only in base URL and API key.

Each snippet is kept as the page writes it, quirks included: Segmind 2.2 sends `img_width` 512
(its page allows only 768 and 1024), Segmind 2.1 sends `negative_prompt: "NONE"`, Eachlabs sends
every number as a string and `"seed": null` (in Python code, so `null` is defined for it).

The request snippets run twice: with a real key on a server that has keys, and with the page's own
`YOUR_API_KEY` on a fresh local server without keys, which serves the local user whatever key is sent.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
import segmind as segmind_sdk
from PIL import Image

from tests.dialects.conftest import KeyedServer, create_key
from tests.server.conftest import Server, start_server


@dataclass
class Target:
    url: str
    key: str  # what the snippet sends as its API key


@pytest.fixture(scope="module")
def keyless_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("keyless") / "data")
    yield server
    server.stop()


@pytest.fixture(params=["keyed", "keyless"])
def target(request: pytest.FixtureRequest) -> Target:
    """A server with keys and one of its keys, or a local server without keys and the page's placeholder."""
    if request.param == "keyed":
        keyed: KeyedServer = request.getfixturevalue("keyed_server")
        return Target(keyed.url, keyed.alice)
    keyless: Server = request.getfixturevalue("keyless_server")
    return Target(keyless.url, "YOUR_API_KEY")


def test_seed_000_segmind_22_requests(target: Target) -> None:
    import json  # noqa: F401  the page imports it for the line this test does not run (see below)

    import requests

    url = f"{target.url}/v1/kandinsky2.2-txt2img"
    headers = {"x-api-key": target.key, "Content-Type": "application/json"}

    data = {
        "prompt": "masterpiece, best quality, portrait of an old man, 50mm, solo, natural skin texture, realistic eye and face details, dark, deep shadow, darkness, moonlight, award winning photo, extremely detailed, fine detail, highly detailed, extremely detailed eyes and face, piercing red eyes, detailed clothes, skinny, gothic, native american clothing, analog film, stock photograph,",  # noqa: E501
        "negative_prompt": "lowres, text, error, cropped, worst quality, low quality, jpeg artifacts, ugly, duplicate, morbid, mutilated, out of frame, extra fingers, mutated hands",  # noqa: E501
        "samples": 1,
        "num_inference_steps": 25,
        "img_width": 512,
        "img_height": 768,
        "prior_steps": 25,
        "seed": 9863172,
        "base64": False,
    }

    response = requests.post(url, headers=headers, json=data)

    # The page goes on with `response.json()`, its generic template for every model. With
    # `base64: false` Segmind answers with the JPEG itself (the older page, the legacy SDK and
    # `run_sync(...).content` all say so), and so does this server: that line fails on both.
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(response.content))
    assert (image.format, image.size) == ("JPEG", (512, 768))
    assert response.headers["x-seed-value"] == "9863172"
    assert response.headers["x-remaining-credits"]


def test_seed_001_segmind_21_sdk(
    serve: Callable[..., Server],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    key = create_key(tmp_path / "data", "seed-001")
    server = serve(key, KS_MODEL="tiny-2.1")
    monkeypatch.setenv("SEGMIND_API_KEY", key)
    monkeypatch.setattr(segmind_sdk, "_default_client", segmind_sdk.SegmindClient(base_url=f"{server.url}/v1"))

    # pip install "segmind>=1.1.0"
    # export SEGMIND_API_KEY="YOUR_API_KEY"
    import segmind

    # Async (v2): submit to the queue and block until COMPLETED.
    # run() returns the final result dict (600s deadline, 1.0s poll by default).
    result = segmind.run(
        "kandinsky2.1-txt2im",
        prompt="tiny isometric city on a tiny floating island, highly detailed, 3d render",
        negative_prompt="NONE",
        scheduler="DDIM",
        samples=1,
        num_inference_steps=25,
        guidance_scale=7.5,
        seed=1024,
        img_width=512,
        img_height=512,
        base64=False,
    )
    print(result["status"])  # COMPLETED
    print(result.get("output"))  # model output (e.g. media URL)
    print(result["metrics"]["inference_time"])  # server compute seconds

    # --- Or submit + poll manually (track request_id, control the cadence) ---
    from segmind import InferenceFailed, InferenceTimeout, SegmindClient

    client = SegmindClient(base_url=f"{server.url}/v1")  # reads SEGMIND_API_KEY
    payload = {
        "prompt": "tiny isometric city on a tiny floating island, highly detailed, 3d render",
        "negative_prompt": "NONE",
        "scheduler": "DDIM",
        "samples": 1,
        "num_inference_steps": 25,
        "guidance_scale": 7.5,
        "seed": 1024,
        "img_width": 512,
        "img_height": 512,
        "base64": False,
    }
    job = client.submit_async("kandinsky2.1-txt2im", **payload)
    print(job.request_id)  # available immediately
    try:
        result = job.wait(timeout=600, interval=1.0)
    except InferenceTimeout as e:
        print("still running:", e.request_id)
    except InferenceFailed as e:
        print("failed:", e.detail)

    printed = capsys.readouterr().out.splitlines()
    assert printed[0] == "COMPLETED"
    assert printed[1].startswith(f"{server.url}/v1/files/")
    assert float(printed[2]) > 0
    assert printed[3] == job.request_id and len(printed) == 4  # neither timed out nor failed
    assert result["status"] == "COMPLETED" and result["seeds"] == [1024]
    image = Image.open(io.BytesIO(requests.get(result["output"], timeout=30).content))
    assert (image.format, image.size) == ("JPEG", (512, 512))


def test_seed_002_eachlabs_requests(target: Target, capsys: pytest.CaptureFixture[str]) -> None:
    null = None  # the page's Python writes JSON's null

    import time

    import requests

    API_KEY = target.key  # Replace with your API key
    HEADERS = {"X-API-Key": API_KEY, "Content-Type": "application/json"}

    def create_prediction():
        response = requests.post(
            f"{target.url}/v1/prediction/",
            headers=HEADERS,
            json={
                "model": "kandinsky-2.2",
                "version": "0.0.1",
                "input": {
                    "seed": null,
                    "width": "512",
                    "height": "512",
                    "prompt": "A moss covered astronaut with a black background",
                    "num_outputs": "1",
                    "output_format": "webp",
                    "negative_prompt": "your negative prompt here",
                    "num_inference_steps": "75",
                    "num_inference_steps_prior": "25",
                },
            },
        )
        prediction = response.json()
        if prediction["status"] != "success":
            raise Exception(f"Prediction failed: {prediction}")
        return prediction["predictionID"]

    def get_prediction(prediction_id):
        while True:
            result = requests.get(f"{target.url}/v1/prediction/{prediction_id}", headers=HEADERS).json()
            if result["status"] == "success":
                return result
            elif result["status"] == "error":
                raise Exception(f"Prediction failed: {result}")
            time.sleep(1)  # Wait before polling again

    try:
        # Create prediction
        prediction_id = create_prediction()
        print(f"Prediction created: {prediction_id}")
        # Get result
        result = get_prediction(prediction_id)
        print(f"Output URL: {result['output']}")
        print(f"Processing time: {result['metrics']['predict_time']}s")
    except Exception as e:
        print(f"Error: {e}")

    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("Prediction created: "), printed
    assert printed[1].startswith(f"Output URL: {target.url}/v1/files/"), printed
    assert float(printed[2].removeprefix("Processing time: ").removesuffix("s")) > 0
    image = Image.open(io.BytesIO(requests.get(printed[1].removeprefix("Output URL: "), timeout=30).content))
    assert (image.format, image.size) == ("WEBP", (512, 512))
    # the page sends "seed": null; the seed drawn for it comes back, so the image can be made again
    seed = result["metrics"]["seed"]
    assert isinstance(seed, int) and 0 <= seed < 2**32
    assert result["logs"].splitlines()[0] == f"Using seed: {seed}"
    assert result["input"]["seed"] is None  # the input as sent
