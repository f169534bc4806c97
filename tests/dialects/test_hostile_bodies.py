"""Bodies built to crash a parser get a 400 in the dialect's own error shape that names the body,
never a plain-text 500 or a dropped connection."""

from __future__ import annotations

import httpx
import pytest

from tests.dialects.conftest import KeyedServer

DEEP = b"[" * 100_000
HUGE_INT = b'{"prompt": "a fox", "samples": ' + b"9" * 5_000 + b"}"
TRUNCATED = b'{"prompt": "a fox", "samp'

# every route that reads a JSON body, with how its dialect shapes an error
ROUTES = {
    "segmind v1": ("/v1/kandinsky2.2-txt2img", lambda body: body["error"]),
    "segmind v2": ("/v2/kandinsky2.2-txt2img", lambda body: body["error"]),
    "eachlabs": ("/v1/prediction/", lambda body: body["error"]),
    "native": ("/v1/jobs", lambda body: body["error"]["message"]),
    "replicate": ("/v1/models/ai-forever/kandinsky-2.2/predictions", lambda body: body["detail"]),
    "openai": ("/v1/images/generations", lambda body: body["error"]["message"]),
}


@pytest.mark.parametrize("payload", [DEEP, HUGE_INT, TRUNCATED], ids=["deeply-nested", "5000-digit-int", "truncated"])
@pytest.mark.parametrize("route", sorted(ROUTES))
def test_a_hostile_body_is_a_400_in_the_dialects_shape(keyed_server: KeyedServer, route: str, payload: bytes) -> None:
    path, message_of = ROUTES[route]
    response = httpx.post(
        f"{keyed_server.url}{path}",
        content=payload,
        headers={"content-type": "application/json", "x-api-key": keyed_server.alice},
        timeout=30,
    )
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    message = message_of(response.json())
    assert message and not message[0].isdigit(), message  # names the body, not a character offset


def test_the_server_still_answers_after_hostile_bodies(keyed_server: KeyedServer) -> None:
    for path, _ in ROUTES.values():
        httpx.post(f"{keyed_server.url}{path}", content=DEEP, headers={"x-api-key": keyed_server.alice}, timeout=30)
    assert httpx.get(f"{keyed_server.url}/healthz", timeout=5).status_code == 200


def _png_b64(width: int, height: int) -> str:
    import base64
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((width, height), 64).convert("RGB").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_broken_input_images_are_refused_at_submit(keyed_server: KeyedServer) -> None:
    whole = _png_b64(64, 64)
    truncated = whole[: len(whole) // 2 // 4 * 4]
    headers = {"x-api-key": keyed_server.alice}
    small = {"num_inference_steps": 2, "img_width": 64, "img_height": 64}
    cases = [
        ("/v2/kandinsky2.2-img2img", {"image": truncated, "prompt": "x", **small}, "image"),
        ("/v2/kandinsky2.2-inpainting", {"image": whole, "mask": _png_b64(96, 64), "prompt": "x", **small}, "mask"),
    ]
    for path, body, field in cases:
        response = httpx.post(f"{keyed_server.url}{path}", json=body, headers=headers, timeout=30)
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"].startswith(field), response.text
    native = {"task": "img2img", "prompt": "x", "image": truncated, "width": 64, "height": 64, "steps": 2}
    response = httpx.post(f"{keyed_server.url}/v1/jobs", json=native, headers=headers, timeout=30)
    assert response.status_code == 422 and response.json()["error"]["field"] == "image", response.text


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("DELETE", "/v1/jobs"),
        ("PUT", "/v1/images/generations"),
        ("PATCH", "/v2/kandinsky2.2-txt2img"),
        ("GET", "/v1/prediction/"),
    ],
)
def test_a_method_a_route_does_not_take_is_a_405_that_says_which_it_does(keyed_server, method, path) -> None:
    response = httpx.request(method, f"{keyed_server.url}{path}", headers={"x-api-key": keyed_server.alice}, timeout=30)
    assert response.status_code == 405, response.text
    assert response.headers["allow"]
