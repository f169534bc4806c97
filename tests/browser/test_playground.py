"""The web playground at `/`, driven the way a person would: type, click, draw, read the page."""

from __future__ import annotations

import base64
import io
import json
import re

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import Page, expect

from tests.browser.conftest import Servers
from tests.server.conftest import Server

# a loaded result, or the error that means none will come
RESULT_OR_ERROR = """() => {
  const img = document.querySelector('[data-testid=result-image]');
  return (img !== null && img.complete && img.naturalWidth > 0) || !document.getElementById('error').hidden;
}"""

# records every value the progress bar takes and every label it shows, as they change
WATCH_PROGRESS = """() => {
  window.seen = [];
  const bar = document.querySelector('[data-testid=progress]');
  const label = document.querySelector('[data-testid=progress-label]');
  const note = () => window.seen.push([bar.value, label.textContent]);
  const observer = new MutationObserver(note);
  observer.observe(bar, { attributes: true });
  observer.observe(label, { childList: true, characterData: true, subtree: true });
}"""


def png_bytes(width: int = 128, height: int = 128) -> bytes:
    image = Image.new("RGB", (width, height), (40, 110, 200))
    ImageDraw.Draw(image).ellipse((30, 30, 98, 98), fill=(220, 40, 40))
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


def open_playground(page: Page, server: Server) -> None:
    page.goto(server.url + "/")
    # the form is ready once the server's schedulers are in it
    expect(page.get_by_test_id("scheduler").locator("option")).not_to_have_count(0)
    expect(page.get_by_test_id("model")).to_contain_text("tiny")


def pick_task(page: Page, label: str) -> None:
    page.get_by_test_id("tasks").get_by_text(label, exact=True).click()


def small_settings(page: Page, steps: int = 2) -> None:
    page.get_by_test_id("width").fill("128")
    page.get_by_test_id("height").fill("128")
    page.get_by_test_id("steps").fill(str(steps))
    page.get_by_text("More settings").click()
    page.get_by_test_id("prior-steps").fill("2")


def wait_for_result(page: Page) -> int:
    page.wait_for_function(RESULT_OR_ERROR, timeout=60_000)
    error = page.get_by_test_id("error")
    assert error.is_hidden(), f"the page shows an error instead of a result: {error.inner_text()}"
    width: int = page.get_by_test_id("result-image").first.evaluate("img => img.naturalWidth")
    return width


def test_text2img_shows_progress_then_the_image_with_its_seed_and_links(page: Page, servers: Servers) -> None:
    open_playground(page, servers.open)
    page.get_by_test_id("prompt").fill("a red fox in the snow")
    small_settings(page, steps=4)
    page.get_by_test_id("seed").fill("1234")
    page.evaluate(WATCH_PROGRESS)
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("cancel")).to_be_visible()

    assert wait_for_result(page) == 128
    seen = page.evaluate("() => window.seen")
    values = [value for value, _ in seen]
    assert any(0 < value < 1 for value in values), seen  # it moved with the step events
    assert values[-1] == 1
    assert any(label.startswith("Decoder step") for _, label in seen), seen
    assert values == sorted(values), "the bar only moves forward"

    expect(page.get_by_test_id("result-seed")).to_have_text("seed 1234")
    src = page.get_by_test_id("result-image").get_attribute("src")
    assert src is not None and "/v1/files/outputs/" in src and "sig=" in src
    assert page.get_by_test_id("download").get_attribute("href") == src
    job_id = page.get_by_test_id("result-job-id").inner_text()
    job = servers.open.client.get(f"/v1/jobs/{job_id}").json()
    assert job["state"] == "succeeded" and job["request"]["steps"] == 4
    expect(page.get_by_test_id("cancel")).to_be_hidden()
    expect(page.get_by_test_id("error")).to_be_hidden()


def test_bad_input_shows_the_servers_message_naming_the_field(page: Page, servers: Servers) -> None:
    open_playground(page, servers.open)
    page.get_by_test_id("prompt").fill("x" * 20_000)
    page.get_by_test_id("generate").click()
    error = page.get_by_test_id("error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("prompt")
    expect(error).to_contain_text("2000 characters")
    expect(page.get_by_test_id("generate")).to_be_enabled()

    page.get_by_test_id("prompt").fill("fine")
    page.get_by_test_id("width").fill("4096")
    page.get_by_test_id("generate").click()
    expect(error).to_contain_text("width: Input should be less than or equal to 2048")


def test_api_key_is_asked_for_then_used_and_kept(page: Page, servers: Servers) -> None:
    open_playground(page, servers.keyed)
    page.get_by_test_id("prompt").fill("a lighthouse")
    small_settings(page)
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("error")).to_contain_text("An API key is required")

    page.get_by_test_id("api-key").fill(servers.key)
    page.get_by_test_id("generate").click()
    assert wait_for_result(page) == 128
    expect(page.get_by_test_id("error")).to_be_hidden()

    page.reload()
    expect(page.get_by_test_id("api-key")).to_have_value(servers.key)

    page.get_by_test_id("api-key").fill("ks_not-a-real-key")
    page.get_by_test_id("prompt").fill("a lighthouse")
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("error")).to_contain_text("The API key is not valid")


def test_inpaint_sends_the_drawn_mask_and_shows_the_result(page: Page, servers: Servers) -> None:
    open_playground(page, servers.open)
    pick_task(page, "Inpaint")
    page.get_by_test_id("prompt").fill("a blue hat")
    small_settings(page)
    page.get_by_test_id("inpaint-image").set_input_files(
        {"name": "photo.png", "mimeType": "image/png", "buffer": png_bytes(160, 128)}
    )
    canvas = page.get_by_test_id("mask-canvas")
    expect(canvas).to_be_visible()

    page.get_by_test_id("generate").click()  # nothing painted yet
    expect(page.get_by_test_id("error")).to_contain_text("Paint over the part of the image")

    box = canvas.bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + box["width"] * 0.2, box["y"] + box["height"] * 0.3)
    page.mouse.down()
    page.mouse.move(box["x"] + box["width"] * 0.5, box["y"] + box["height"] * 0.4, steps=8)
    page.mouse.up()

    with page.expect_request(lambda r: r.url.endswith("/v1/jobs") and r.method == "POST") as sent:
        page.get_by_test_id("generate").click()
    body = json.loads(sent.value.post_data or "{}")
    assert body["task"] == "inpaint"
    mask = Image.open(io.BytesIO(base64.b64decode(body["mask"]))).convert("L")
    image = Image.open(io.BytesIO(base64.b64decode(body["image"])))
    assert mask.size == image.size == (160, 128)
    assert mask.getpixel((int(160 * 0.35), int(128 * 0.35))) == 255  # on the stroke: repaint
    assert mask.getpixel((150, 120)) == 0  # far from it: keep
    assert wait_for_result(page) == 128


def test_fuse_mixes_the_listed_ingredients(page: Page, servers: Servers) -> None:
    open_playground(page, servers.open)
    pick_task(page, "Fuse")
    small_settings(page)
    rows = page.get_by_test_id("fuse-list").locator("li")
    rows.nth(0).locator(".fuse-prompt").fill("a castle")
    rows.nth(1).locator(".fuse-kind").select_option("image")
    rows.nth(1).locator(".fuse-file").set_input_files({"name": "a.png", "mimeType": "image/png", "buffer": png_bytes()})
    page.get_by_test_id("fuse-add").click()
    rows.nth(2).locator(".fuse-prompt").fill("dropped again")
    rows.nth(2).locator(".fuse-remove").click()
    expect(rows).to_have_count(2)

    with page.expect_request(lambda r: r.url.endswith("/v1/jobs") and r.method == "POST") as sent:
        page.get_by_test_id("generate").click()
    body = json.loads(sent.value.post_data or "{}")
    assert body["task"] == "fuse"
    assert [item.get("prompt") for item in body["fuse"]] == ["a castle", None]
    assert [item["weight"] for item in body["fuse"]] == [0.5, 0.5]
    assert wait_for_result(page) == 128


def test_cancel_stops_a_running_job(page: Page, servers: Servers) -> None:
    open_playground(page, servers.open)
    page.get_by_test_id("prompt").fill("a very long job")
    small_settings(page, steps=400)
    page.get_by_test_id("generate").click()
    expect(page.get_by_test_id("progress-label")).to_contain_text("Decoder step", timeout=60_000)
    job_id = page.get_by_test_id("job-id").inner_text().removeprefix("job ")
    page.get_by_test_id("cancel").click()
    expect(page.get_by_test_id("progress-label")).to_have_text("Canceled.", timeout=30_000)
    expect(page.get_by_test_id("generate")).to_be_enabled()
    assert servers.open.client.get(f"/v1/jobs/{job_id}").json()["state"] == "canceled"


@pytest.mark.parametrize(
    ("task", "upload", "field"), [("Image", "init-image", "image"), ("ControlNet", "hint-image", "hint")]
)
def test_uploaded_image_goes_with_the_request(page: Page, servers: Servers, task: str, upload: str, field: str) -> None:
    open_playground(page, servers.open)
    pick_task(page, task)
    page.get_by_test_id("prompt").fill("a stone bridge")
    small_settings(page, steps=4)
    if task == "Image":
        page.get_by_test_id("strength").fill("0.5")  # 2 of the 4 steps
    picture = png_bytes(96, 64)
    page.get_by_test_id(upload).set_input_files({"name": "in.png", "mimeType": "image/png", "buffer": picture})
    with page.expect_request(lambda r: r.url.endswith("/v1/jobs") and r.method == "POST") as sent:
        page.get_by_test_id("generate").click()
    body = json.loads(sent.value.post_data or "{}")
    assert base64.b64decode(body[field]) == picture
    assert body["task"] == {"Image": "img2img", "ControlNet": "controlnet"}[task]
    assert body.get("strength") == (0.5 if task == "Image" else None)
    assert wait_for_result(page) == 128


def test_the_servers_previews_are_shown_while_the_image_is_made(page: Page, servers: Servers) -> None:
    open_playground(page, servers.open)
    page.get_by_test_id("prompt").fill("a kite")
    small_settings(page)
    page.get_by_test_id("generate").click()
    assert wait_for_result(page) == 128
    # the decoder's progress events carried JPEG previews; the page showed the latest
    expect(page.get_by_test_id("preview")).to_have_attribute("src", re.compile(r"^data:image/jpeg;base64,"))
