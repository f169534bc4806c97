"""A synchronous call whose client gives up is canceled: its answer could go nowhere, and no one
can fetch it later by id. A wait on a job that can still be read (native `?wait=`) runs on."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import httpx
import openai
import pytest
from segmind import SegmindClient

from tests.server.conftest import Server, start_server, wait_for

pytestmark = pytest.mark.slow

# how long a client waits before it gives up. The slow jobs (2048², hundreds of decoder steps)
# would run for minutes; a small one takes a second on an idle 2-core machine, 20 s on a busy one.
GIVE_UP_S = 3.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    server = start_server(tmp_path_factory.mktemp("abandoned") / "data")  # one worker
    yield server
    server.stop()


def latest_job(server: Server) -> dict:
    job: dict = server.client.get("/v1/jobs").json()["jobs"][0]
    return job


def state(server: Server, job_id: str) -> str:
    value: str = server.client.get(f"/v1/jobs/{job_id}").json()["state"]
    return value


def abandon(server: Server, give_up: Callable[[], object], small: Callable[[], object]) -> None:
    """give_up times out on the client; its job must be canceled and the worker free at once."""
    started = time.monotonic()
    give_up()
    job_id = latest_job(server)["id"]
    wait_for(lambda: state(server, job_id) == "canceled", timeout=15)
    assert "canceled: the client went away" in server.client.get(f"/v1/jobs/{job_id}").json()["logs"]
    small()
    # had the abandoned job run on, the small one would have waited behind it for minutes
    assert time.monotonic() - started < 60


def test_a_segmind_run_sync_that_times_out_is_canceled(server: Server) -> None:
    client = SegmindClient(base_url=server.url + "/v1", timeout=GIVE_UP_S)
    slug = "kandinsky2.2-txt2img"

    def give_up() -> None:
        slow = {"img_width": 2048, "img_height": 2048, "num_inference_steps": 500, "prior_steps": 2}
        with pytest.raises(httpx.ReadTimeout):
            client.run_sync(slug, prompt="a lighthouse in a storm", **slow)

    def small() -> None:
        small = {"img_width": 64, "img_height": 64, "num_inference_steps": 2, "prior_steps": 2}
        assert client.run_sync(slug, prompt="a fox", **small).headers["content-type"] == "image/jpeg"

    abandon(server, give_up, small)


def test_an_openai_images_call_that_times_out_is_canceled(server: Server) -> None:
    client = openai.OpenAI(api_key="unused", base_url=server.url + "/v1", max_retries=0)

    def give_up() -> None:
        with pytest.raises(openai.APITimeoutError):  # high: 100 steps, for each of 3 images
            client.images.generate(prompt="a lighthouse", size="2048x2048", quality="high", n=3, timeout=GIVE_UP_S)

    def small() -> None:
        assert client.images.generate(prompt="a fox", size="64x64", quality="low", timeout=60).data[0].url

    abandon(server, give_up, small)


def test_a_native_wait_whose_client_hangs_up_runs_on(server: Server) -> None:
    body = {"prompt": "a barn", "width": 512, "height": 512, "steps": 50}  # ~2 s on an idle machine
    with pytest.raises(httpx.ReadTimeout):
        httpx.post(f"{server.url}/v1/jobs", params={"wait": 60}, json=body, timeout=0.5)
    job_id = latest_job(server)["id"]
    wait_for(lambda: state(server, job_id) in ("succeeded", "canceled", "failed"), timeout=120)
    assert state(server, job_id) == "succeeded"  # its id is in the queue's listing: someone may read it
