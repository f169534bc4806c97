"""Segmind v1 and v2, driven by the vendor's own SDK (segmind 1.3.0) against a real server."""

from __future__ import annotations

import base64
import io
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import pytest
from PIL import Image
from segmind import InferenceFailed, SegmindClient, SegmindError
from segmind.v2 import AsyncJob

from tests.dialects.conftest import KeyedServer, failed_job
from tests.server.conftest import Server

SMALL = {"img_width": 64, "img_height": 64, "num_inference_steps": 2, "prior_steps": 2}


def sdk(server: KeyedServer, key: str) -> SegmindClient:
    return SegmindClient(api_key=key, base_url=server.url + "/v1", timeout=120)


def http(server: KeyedServer, key: str | None) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"x-api-key": key} if key else {}, timeout=120)


def picture(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def png(width: int, height: int, color: tuple[int, int, int] = (200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def truncated_png() -> bytes:
    """A PNG whose header is whole and whose pixels are cut off: it opens, but cannot be decoded."""
    buffer = io.BytesIO()
    Image.frombytes("RGB", (64, 64), bytes(range(256)) * 48).save(buffer, format="PNG")
    data = buffer.getvalue()
    return data[: len(data) // 2]


def test_run_submits_to_the_v2_queue_and_waits(keyed_server: KeyedServer) -> None:
    result = sdk(keyed_server, keyed_server.alice).run("kandinsky2.2-txt2img", prompt="a red barn", seed=7, **SMALL)
    assert result["status"] == "COMPLETED"
    assert result["seeds"] == [7]
    assert result["metrics"]["inference_time"] > 0
    assert result["output"].startswith(keyed_server.url)
    image = picture(http(keyed_server, keyed_server.alice).get(result["output"]).content)
    assert (image.format, image.size) == ("JPEG", (64, 64))


def test_run_sync_answers_with_the_jpeg_and_segmind_headers(keyed_server: KeyedServer) -> None:
    body = {**SMALL, "img_height": 96, "seed": "11", "samples": "1"}  # strings, as the old SDK sent
    response = sdk(keyed_server, keyed_server.alice).run_sync("kandinsky2.2-txt2img", prompt="a barn", **body)
    assert response.headers["content-type"] == "image/jpeg"
    assert (picture(response.content).format, picture(response.content).size) == ("JPEG", (64, 96))
    assert response.headers["x-seed-value"] == "11"
    assert float(response.headers["x-generation-time"]) > 0
    assert response.headers["x-remaining-credits"] == "1000000000"  # alice has no limit


def test_base64_true_answers_json_with_every_sample(keyed_server: KeyedServer) -> None:
    client = sdk(keyed_server, keyed_server.alice)
    body = client.run_sync("kandinsky2.2-txt2img", prompt="a barn", seed=5, samples=2, base64=True, **SMALL).json()
    assert body["image"] == body["images"][0]
    assert body["seeds"] == [5, 6]
    assert len(body["images"]) == 2
    assert all(picture(base64.b64decode(item)).size == (64, 64) for item in body["images"])
    assert body["images"][0] != body["images"][1]


def test_submit_async_then_wait(keyed_server: KeyedServer) -> None:
    job = sdk(keyed_server, keyed_server.alice).submit_async("kandinsky2.2-txt2img", prompt="a lake", **SMALL)
    assert job.submit_response["status"] == "QUEUED"
    assert job.submit_response["poll_url"] == f"{keyed_server.url}/v1/requests/{job.request_id}"
    result = job.wait(timeout=120, interval=0.2)
    assert result["status"] == "COMPLETED"
    assert job.status()["status"] == "COMPLETED"
    assert http(keyed_server, keyed_server.alice).get(job.submit_response["poll_url"]).json() == result


def test_a_job_that_fails_raises_inference_failed_and_answers_422(keyed_server: KeyedServer) -> None:
    client = sdk(keyed_server, keyed_server.alice)
    message = "The generation failed: RuntimeError: CUDA error: an illegal memory access was encountered"
    meta = {"dialect": "segmind", "slug": "kandinsky2.2-txt2img"}
    request_id = failed_job(keyed_server, keyed_server.alice, meta, message)
    base = f"{keyed_server.url}/v2/requests/{request_id}"
    job = AsyncJob(request_id, f"{base}/status", base, {"request_id": request_id}, client)
    with pytest.raises(InferenceFailed) as failed:
        job.wait(timeout=120, interval=0.2)
    assert message in str(failed.value.detail)
    assert failed.value.status_body["status"] == "FAILED"
    raw = http(keyed_server, keyed_server.alice)
    assert raw.get(job.status_url).status_code == 422
    result = raw.get(job.response_url)
    assert (result.status_code, result.json()["status"]) == (422, "FAILED")


def test_a_truncated_image_is_refused_when_it_is_sent(keyed_server: KeyedServer) -> None:
    client = sdk(keyed_server, keyed_server.alice)
    body = {"prompt": "x", "image": b64(truncated_png()), "strength": 0.5, **SMALL}
    for call in (client.run_sync, client.submit_async):
        with pytest.raises(SegmindError) as refused:
            call("kandinsky2.2-img2img", **body)
        assert refused.value.status == 400
        assert "image: is truncated or corrupt" in str(refused.value.detail)


def test_image_slugs(keyed_server: KeyedServer) -> None:
    client = sdk(keyed_server, keyed_server.alice)
    steps = {"num_inference_steps": 2, "prior_steps": 2}
    # no size given: the output has the input image's size
    moved = client.run_sync("kandinsky2.2-img2img", prompt="x", image=b64(png(64, 80)), strength=0.6, **steps)
    assert picture(moved.content).size == (64, 80)
    mask = f"data:image/png;base64,{b64(png(64, 64, (255, 255, 255)))}"
    painted = client.run_sync("kandinsky2.2-inpainting", prompt="x", image=b64(png(64, 64)), mask=mask, **steps)
    assert picture(painted.content).size == (64, 64)
    depth = client.run_sync("kandinsky2.2-controlnet-depth", prompt="x", image=b64(png(64, 64, (90, 90, 90))), **steps)
    assert picture(depth.content).size == (64, 64)
    fused = client.run(
        "kandinsky2.2-fuse",
        images=[b64(png(64, 64)), b64(png(64, 64, (0, 0, 255)))],
        image_weights=[0.3, 0.3],
        prompt="a cat",
        prompt_weight=0.4,
        **SMALL,
    )
    assert fused["status"] == "COMPLETED" and len(fused["images"]) == 1


def test_bad_input_is_a_400_naming_the_segmind_field(keyed_server: KeyedServer) -> None:
    client = http(keyed_server, keyed_server.alice)
    cases = {
        "img_width": {"prompt": "x", "img_width": 100000},
        "samples": {"prompt": "x", "samples": 0},
        "num_inference_steps": {"prompt": "x", "num_inference_steps": "many"},
        "sampels": {"prompt": "x", "sampels": 2},
        "base64": {"prompt": "x", "base64": "maybe", **SMALL},
    }
    for field, body in cases.items():
        for path in ("/v1/kandinsky2.2-txt2img", "/v2/kandinsky2.2-txt2img"):
            response = client.post(path, json=body)
            assert response.status_code == 400, (path, body, response.text)
            assert response.json()["error"].startswith(field), response.json()
            assert response.headers["x-remaining-credits"] == "1000000000"
    strength = client.post("/v1/kandinsky2.2-img2img", json={"image": b64(png(64, 64)), "strength": 3, **SMALL})
    assert strength.status_code == 400 and strength.json()["error"].startswith("strength")
    no_mask = client.post("/v1/kandinsky2.2-inpainting", json={"image": b64(png(64, 64)), **SMALL})
    assert no_mask.status_code == 400 and no_mask.json()["error"].startswith("mask")
    private = client.post("/v1/kandinsky2.2-img2img", json={"image": "http://127.0.0.1:9/x.png", **SMALL})
    assert private.status_code == 400 and private.json()["error"].startswith("image")
    not_json = client.post("/v1/kandinsky2.2-txt2img", content=b"{", headers={"content-type": "application/json"})
    assert not_json.status_code == 400 and "error" in not_json.json()


def test_unknown_models_and_requests_are_404(keyed_server: KeyedServer) -> None:
    client = http(keyed_server, keyed_server.alice)
    missing = client.post("/v2/kandinsky9-txt2img", json={"prompt": "x"})
    assert missing.status_code == 404 and "kandinsky9-txt2img" in missing.json()["error"]
    other_family = client.post("/v1/kandinsky2.1-txt2im", json={"prompt": "x"})  # this server runs 2.2
    assert other_family.status_code == 404 and "tiny" in other_family.json()["error"]
    for path in ("/v2/requests/nope", "/v2/requests/nope/status", "/v1/requests/nope"):
        response = client.get(path)
        assert response.status_code == 404 and "nope" in response.json()["error"]
        assert response.headers["x-remaining-credits"] == "1000000000"


def test_another_keys_request_is_not_found(keyed_server: KeyedServer) -> None:
    job = sdk(keyed_server, keyed_server.alice).submit_async("kandinsky2.2-txt2img", prompt="mine", **SMALL)
    for url in (job.status_url, job.response_url):
        assert http(keyed_server, keyed_server.bob).get(url).status_code == 404
    assert job.wait(timeout=120, interval=0.2)["status"] == "COMPLETED"


def test_keys_are_required_and_still_get_the_credits_header(keyed_server: KeyedServer) -> None:
    for key in (None, "ks_00000000_not-a-real-key"):
        response = http(keyed_server, key).post("/v1/kandinsky2.2-txt2img", json={"prompt": "x", **SMALL})
        assert response.status_code == 401 and response.json()["error"]
        assert response.headers["x-remaining-credits"] == "0"
    with pytest.raises(SegmindError) as refused:
        sdk(keyed_server, "ks_00000000_not-a-real-key").run("kandinsky2.2-txt2img", prompt="x", **SMALL)
    assert refused.value.status == 401


def test_credits_run_out_with_406(keyed_server: KeyedServer) -> None:
    bob, raw = sdk(keyed_server, keyed_server.bob), http(keyed_server, keyed_server.bob)
    small = bob.run_sync("kandinsky2.2-txt2img", prompt="x", **SMALL)
    assert float(small.headers["x-remaining-credits"]) == pytest.approx(3 - 0.0006)
    # a queued job holds its price until it fails or is canceled: this one holds nearly all the rest
    big = {"img_width": 1024, "img_height": 1024, "num_inference_steps": 36, "prior_steps": 2}
    held = raw.post("/v2/kandinsky2.2-txt2img", json={"prompt": "x", **big})
    assert held.status_code == 200
    left = held.headers["x-remaining-credits"]
    assert float(left) == pytest.approx(3 - 0.0006 - 2.88)
    one_credit = {"img_width": 512, "img_height": 512, "num_inference_steps": 50, "prior_steps": 2}
    with pytest.raises(SegmindError) as refused:
        bob.run_sync("kandinsky2.2-txt2img", prompt="x", **one_credit)
    assert refused.value.status == 406 and refused.value.detail
    response = raw.post("/v2/kandinsky2.2-txt2img", json={"prompt": "x", **one_credit})
    assert response.status_code == 406 and response.json()["error"]
    assert response.headers["x-remaining-credits"] == left

    assert raw.post(f"/v1/jobs/{held.json()['request_id']}/cancel").status_code == 200  # the native API
    canceled = raw.get(held.json()["status_url"])
    deadline = time.monotonic() + 60
    while canceled.json()["status"] != "FAILED" and time.monotonic() < deadline:  # running: within a step
        time.sleep(0.2)
        canceled = raw.get(held.json()["status_url"])
    assert (canceled.status_code, canceled.json()["status"]) == (422, "FAILED")  # Segmind has no canceled
    assert canceled.headers["x-remaining-credits"] == small.headers["x-remaining-credits"]


@pytest.fixture
def image_host() -> Iterator[str]:
    """A local http server with one PNG at /in.png, for inputs given as URLs."""
    payload = png(64, 64, (10, 200, 10))

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            found = self.path == "/in.png"
            self.send_response(200 if found else 404)
            self.send_header("content-type", "image/png")
            self.end_headers()
            self.wfile.write(payload if found else b"")

        def log_message(self, *args: object) -> None:
            pass

    host = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{host.server_port}"
    host.shutdown()


def test_image_urls_are_fetched_and_rate_limits_answer_429(serve: Callable[..., Server], image_host: str) -> None:
    server = serve(KS_ALLOW_PRIVATE_URLS="true", KS_RATE_LIMIT_PER_MINUTE="4")
    client = SegmindClient(base_url=server.url + "/v1", timeout=120)  # a keyless local server
    body = {"prompt": "x", "image": f"{image_host}/in.png", "strength": 0.6, "num_inference_steps": 2, "prior_steps": 2}
    assert picture(client.run_sync("kandinsky2.2-img2img", **body).content).size == (64, 64)
    gone = httpx.post(f"{server.url}/v1/kandinsky2.2-img2img", json={**body, "image": f"{image_host}/gone.png"})
    assert gone.status_code == 400 and gone.json()["error"].startswith("image")
    # the bucket refills while the requests above run, so send more than it can hold
    statuses = [httpx.post(f"{server.url}/v2/kandinsky2.2-txt2img", json={"prompt": "x", **SMALL}) for _ in range(6)]
    limited = [response for response in statuses if response.status_code == 429]
    assert limited, [response.status_code for response in statuses]
    assert int(limited[0].headers["retry-after"]) >= 1
    assert limited[0].json()["error"]
    assert limited[0].headers["x-remaining-credits"] == "1000000000"
