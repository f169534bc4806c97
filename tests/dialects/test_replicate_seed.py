"""The Replicate page's own `replicate.run` loop (seed 004) when the prediction outlasts the sync wait,
and what the predictions list shows of other dialects' jobs.

replicate-python sends `Prefer: wait` (60 s) and polls only when the answer is `starting`. A job
slower than the wait is simulated by rewriting the header to `wait=1` on its way out (an httpx event
hook): the server, the SDK and the page's code are otherwise as they are.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import pytest
import replicate
import requests
from PIL import Image

from tests.dialects.conftest import KeyedServer

V22 = "ad9d7879fbffa2874e1d909d1d37d9bc682889cc65b31f7bb00d2362619f194a"


class WaitRunsOut:
    """Shortens every `Prefer: wait` to one second and records what the server answered. A slow
    prediction holds the only worker until the create has been answered, so the wait runs out
    however fast the machine is; then it is canceled and the page's prediction runs."""

    def __init__(self, server: KeyedServer) -> None:
        self.http = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {server.alice}"}, timeout=30)
        slow = {"width": 64, "height": 64, "num_inference_steps": 500, "num_inference_steps_prior": 500}
        self.blocker = self.http.post("/v1/predictions", json={"version": V22, "input": slow}).json()["id"]
        self.creates: list[tuple[int, dict]] = []
        self.polls = 0

    def shorten(self, request: httpx.Request) -> None:
        if request.headers.get("prefer") == "wait":
            request.headers["prefer"] = "wait=1"

    def record(self, response: httpx.Response) -> None:
        if response.request.method == "POST" and response.request.url.path == "/v1/predictions":
            response.read()
            self.creates.append((response.status_code, response.json()))
            self.http.post(f"/v1/predictions/{self.blocker}/cancel").raise_for_status()
        elif response.request.method == "GET" and response.request.url.path.startswith("/v1/predictions/"):
            self.polls += 1

    def client(self) -> replicate.Client:
        # token and base URL from REPLICATE_API_TOKEN and REPLICATE_BASE_URL, as the page sets them up
        return replicate.Client(event_hooks={"request": [self.shorten], "response": [self.record]})


def test_seed_004_loop_writes_the_images_of_a_prediction_that_outlasts_the_wait(
    keyed_server: KeyedServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REPLICATE_API_TOKEN", keyed_server.alice)
    monkeypatch.setenv("REPLICATE_BASE_URL", keyed_server.url)
    monkeypatch.chdir(tmp_path)
    wait = WaitRunsOut(keyed_server)
    monkeypatch.setattr(sys.modules["replicate"], "run", wait.client().run)

    # from the page, unchanged but for inputs the tiny model makes quickly on a CPU
    import replicate

    input = {"width": 64, "height": 64, "num_outputs": 2, "num_inference_steps": 4, "num_inference_steps_prior": 2}

    output = replicate.run(
        "ai-forever/kandinsky-2.2:ad9d7879fbffa2874e1d909d1d37d9bc682889cc65b31f7bb00d2362619f194a", input=input
    )
    for index, item in enumerate(output):
        with open(f"output_{index}.png", "wb") as file:
            file.write(item.read())
    # => output_0.png written to disk

    ((status, created),) = wait.creates
    assert status == 202 and created["status"] == "starting" and created["output"] is None, created
    assert wait.polls >= 1  # the SDK got the output by polling, after the wait ran out
    for index in range(2):
        picture = Image.open(tmp_path / f"output_{index}.png")
        # the page names the files .png; the model's default output_format is webp
        assert (picture.format, picture.size) == ("WEBP", (64, 64))


def test_async_predictions_keep_urls_and_sync_ones_keep_data_uris_on_every_read(keyed_server: KeyedServer) -> None:
    http = httpx.Client(
        base_url=keyed_server.url, headers={"Authorization": f"Bearer {keyed_server.alice}"}, timeout=60
    )
    small = {"width": 64, "height": 64, "num_inference_steps": 2, "num_inference_steps_prior": 2}
    png = {"version": V22, "input": {**small, "output_format": "png"}}
    sync = http.post("/v1/predictions", json=png, headers={"Prefer": "wait=30"}).json()
    plain = http.post("/v1/predictions", json={"version": V22, "input": small}).json()
    again = replicate.Client(api_token=keyed_server.alice, base_url=keyed_server.url).predictions.get(plain["id"])
    again.wait()
    assert again.output[0].startswith(f"{keyed_server.url}/v1/files/outputs/")
    reread = http.get(f"/v1/predictions/{sync['id']}").json()
    assert reread["output"][0].startswith("data:image/png;base64,")
    assert reread["output"] == sync["output"]
    listed = {p["id"]: p for p in http.get("/v1/predictions").json()["results"]}
    assert listed[sync["id"]]["output"][0].startswith(keyed_server.url)  # list pages stay small: URLs


def test_the_list_shows_a_segmind_job_with_the_inputs_it_ran_with(keyed_server: KeyedServer) -> None:
    segmind = requests.post(
        f"{keyed_server.url}/v1/kandinsky2.2-txt2img",
        headers={"x-api-key": keyed_server.alice},
        json={
            "prompt": "a lighthouse at dusk",
            "negative_prompt": "fog",
            "samples": 1,
            "num_inference_steps": 20,
            "prior_steps": 3,
            "img_width": 64,
            "img_height": 128,
            "seed": 4242,
            "base64": False,
        },
        timeout=120,
    )
    assert segmind.status_code == 200, segmind.text
    alice = replicate.Client(api_token=keyed_server.alice, base_url=keyed_server.url)
    listed = next(p for p in alice.predictions.list() if p.input.get("seed") == 4242)
    assert (listed.model, listed.version, listed.status) == ("ai-forever/kandinsky-2.2", V22, "succeeded")
    assert listed.input == {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "fog",
        "width": 64,
        "height": 128,
        "num_inference_steps": 20,
        "num_inference_steps_prior": 3,
        "num_outputs": 1,
        "seed": 4242,
        "output_format": "jpeg",
        "output_quality": listed.input["output_quality"],
    }
    assert json.loads(json.dumps(listed.input)) == listed.input  # plain JSON values only
