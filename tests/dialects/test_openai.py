"""The OpenAI Images dialect, driven by the official openai SDK against a real server (tiny model)."""

from __future__ import annotations

import base64
import io
import json
import time

import httpx
import openai
import pytest
from PIL import Image

from kandinsky_serve.api.dialects.openai import translate
from kandinsky_serve.api.dialects.openai.problems import render_error
from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.domain.request import Task
from kandinsky_serve.imaging import decode_image
from tests.conftest import png

pytestmark = pytest.mark.slow

SMALL = {"size": "64x64", "quality": "low"}


def client(server, key: str, retries: int = 0) -> openai.OpenAI:
    return openai.OpenAI(api_key=key, base_url=server.url + "/v1", max_retries=retries, timeout=120)


def picture(width: int = 96, height: int = 64, alpha: int | None = None) -> bytes:
    image = Image.new("RGBA" if alpha is not None else "RGB", (width, height), (200, 40, 40, 255))
    if alpha is not None:
        image.paste((0, 0, 0, alpha), (0, 0, width // 2, height))  # the left half gets this alpha
    return png(image)


def latest_job(server, key: str) -> dict:
    jobs = httpx.get(f"{server.url}/v1/jobs", headers={"x-api-key": key}, timeout=30).json()["jobs"]
    return jobs[0]


def decoded(b64: str) -> Image.Image:
    return Image.open(io.BytesIO(base64.b64decode(b64)))


# --- through the SDK --------------------------------------------------------------------------


def test_generate_b64_json_several_images_with_seeds(keyed_server):
    before = int(time.time())
    result = client(keyed_server, keyed_server.alice).images.generate(
        prompt="a red fox", n=2, response_format="b64_json", output_format="webp", extra_body={"seed": 7}, **SMALL
    )
    assert before - 1 <= result.created <= time.time() + 1
    assert len(result.data) == 2
    for index, item in enumerate(result.data):
        image = decoded(item.b64_json)
        assert (image.format, image.size) == ("WEBP", (64, 64))
        assert item.url is None
        assert item.model_extra["seed"] == 7 + index
        assert item.revised_prompt == "a red fox"
    assert (result.output_format, result.size) == ("webp", "64x64")


def test_generate_url_of_a_non_square_png(keyed_server):
    result = client(keyed_server, keyed_server.alice).images.generate(
        prompt="a lighthouse", model="dall-e-3", size="128x64", quality="low"
    )
    (item,) = result.data
    assert item.b64_json is None
    fetched = httpx.get(item.url, timeout=30)  # the URL is signed: no key needed, as with OpenAI's
    assert fetched.status_code == 200
    image = Image.open(io.BytesIO(fetched.content))
    assert (image.format, image.size) == ("PNG", (128, 64))
    job = latest_job(keyed_server, keyed_server.alice)
    assert (job["request"]["width"], job["request"]["height"], job["request"]["steps"]) == (128, 64, 25)


def test_gpt_image_models_answer_in_base64_by_default(keyed_server):
    result = client(keyed_server, keyed_server.alice).images.generate(
        prompt="a boat", model="gpt-image-1", output_format="jpeg", output_compression=50, **SMALL
    )
    assert decoded(result.data[0].b64_json).format == "JPEG"


def test_edit_without_mask_is_img2img_at_the_input_size(keyed_server):
    result = client(keyed_server, keyed_server.alice).images.edit(
        image=("in.png", picture(), "image/png"), prompt="make it blue", response_format="b64_json", quality="low"
    )
    assert decoded(result.data[0].b64_json).size == (96, 64)
    assert latest_job(keyed_server, keyed_server.alice)["request"]["task"] == "img2img"


def test_edit_with_mask_is_inpaint(keyed_server):
    # a list of images goes out as `image[]` parts, as the SDK sends several
    result = client(keyed_server, keyed_server.alice).images.edit(
        image=[("in.png", picture(), "image/png")],
        mask=("mask.png", picture(alpha=0), "image/png"),
        prompt="a window",
        size="64x64",
        quality="low",
    )
    assert Image.open(io.BytesIO(httpx.get(result.data[0].url, timeout=30).content)).size == (64, 64)
    assert latest_job(keyed_server, keyed_server.alice)["request"]["task"] == "inpaint"


@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"size": "4096x4096"}, "size"),
        ({"size": "big"}, "size"),
        ({"n": 9, "size": "64x64"}, "n"),
        ({"size": "64x64", "extra_body": {"seed": -1}}, "seed"),
    ],
)
def test_bad_parameters_are_400s_naming_the_openai_param(keyed_server, kwargs, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client(keyed_server, keyed_server.alice).images.generate(prompt="x", **kwargs)
    assert caught.value.status_code == 400
    assert caught.value.param == param
    assert caught.value.type == "invalid_request_error"
    assert param in caught.value.message


def test_edit_refuses_several_images_and_mismatched_masks(keyed_server):
    sdk = client(keyed_server, keyed_server.alice)
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.edit(image=[("a.png", picture(), "image/png")] * 2, prompt="x")
    assert caught.value.param == "image"
    with pytest.raises(openai.BadRequestError) as caught:
        sdk.images.edit(
            image=("a.png", picture(), "image/png"), mask=("m.png", picture(64, 64, 0), "image/png"), prompt="x"
        )
    assert caught.value.param == "mask"
    assert "96x64" in caught.value.message


def test_wrong_or_missing_key_is_401(keyed_server):
    with pytest.raises(openai.AuthenticationError) as caught:
        client(keyed_server, "ks-not-a-key").images.generate(prompt="x", **SMALL)
    assert caught.value.code == "invalid_api_key"
    response = httpx.post(f"{keyed_server.url}/v1/images/generations", json={"prompt": "x"}, timeout=30)
    assert response.status_code == 401
    assert set(response.json()["error"]) == {"message", "type", "param", "code"}


def test_out_of_credits_is_429_insufficient_quota_not_retried(keyed_server):
    started = time.monotonic()
    with pytest.raises(openai.RateLimitError) as caught:
        # the SDK would back off and retry a 429; x-should-retry: false stops it at the first answer
        client(keyed_server, keyed_server.bob, retries=2).images.generate(prompt="x", size="2048x2048", n=2)
    assert caught.value.code == "insufficient_quota"
    assert caught.value.response.headers["x-should-retry"] == "false"
    assert time.monotonic() - started < 5


def test_raw_wire_missing_prompt_and_extra_fields(keyed_server):
    headers = {"Authorization": f"Bearer {keyed_server.alice}"}
    url = f"{keyed_server.url}/v1/images/generations"
    missing = httpx.post(url, json={"size": "64x64"}, headers=headers, timeout=30)
    assert missing.status_code == 400
    assert missing.json()["error"]["param"] == "prompt"
    # fields this server does not know are ignored, as OpenAI's newer SDKs send new ones
    body = {"prompt": "x", "size": "64x64", "quality": "low", "moderation": "low", "partial_images": 0, "zzz": 1}
    ok = httpx.post(url, json=body, headers=headers, timeout=120)
    assert ok.status_code == 200, ok.text
    assert json.loads(ok.text)["data"][0]["url"].startswith(keyed_server.url)


# --- translation, without a server ---------------------------------------------------------------


def test_transparent_mask_pixels_become_white_repaint():
    request = translate.edit(translate.Common(prompt="x", size="96x64"), picture(), picture(alpha=0))
    assert request.task is Task.INPAINT
    mask = decode_image(request.mask, "L")
    assert mask.getpixel((10, 10)) == 255  # transparent in OpenAI's mask: repaint
    assert mask.getpixel((80, 10)) == 0  # opaque: keep


def test_half_transparent_mask_repaints_halfway_and_alpha_less_masks_are_refused():
    request = translate.edit(translate.Common(prompt="x"), picture(), picture(alpha=128))
    assert decode_image(request.mask, "L").getpixel((10, 10)) == 127
    with pytest.raises(ServeError) as caught:
        translate.edit(translate.Common(prompt="x"), picture(), picture())
    assert caught.value.field == "mask"


def test_edit_of_a_transparent_image_without_mask_inpaints_the_transparency():
    request = translate.edit(translate.Common(prompt="x"), picture(alpha=0), None)
    assert request.task is Task.INPAINT
    assert decode_image(request.mask, "L").getpixel((10, 10)) == 255
    assert translate.edit(translate.Common(prompt="x"), picture(alpha=255), None).task is Task.IMG2IMG


@pytest.mark.parametrize(
    ("size", "expected"),
    [(None, (1024, 1024)), ("auto", (1024, 1024)), ("1792x1024", (1792, 1024)), ("64X96", (64, 96))],
)
def test_sizes(size, expected):
    assert translate.parse_size(size, translate.DEFAULT_SIZE) == expected


def test_large_inputs_are_scaled_into_the_limits_for_auto_size():
    request = translate.edit(translate.Common(prompt="x"), picture(4096, 1024), None)
    assert (request.width, request.height) == (2048, 512)


def test_error_rendering():
    limited = render_error(ServeError(ErrorCode.RATE_LIMITED, "slow down", retry_after=3))
    assert limited.status_code == 429
    assert limited.headers["retry-after"] == "3"
    assert "x-should-retry" not in limited.headers
    wrong_n = json.loads(render_error(invalid("num_images", "must be at most 8")).body)["error"]
    assert wrong_n == {
        "message": "n: must be at most 8",
        "type": "invalid_request_error",
        "param": "n",
        "code": "invalid_value",
    }
    width = json.loads(render_error(invalid("width", "too wide")).body)["error"]
    assert (width["param"], width["message"]) == ("size", "size: width: too wide")
    assert render_error(ServeError(ErrorCode.OVERLOADED, "busy", retry_after=1)).status_code == 503
    assert render_error(ServeError(ErrorCode.TIMEOUT, "late")).headers["x-should-retry"] == "false"
