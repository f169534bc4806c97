"""Each dialect's one FieldMap (api/fields.py): it covers the request schema the dialect documents,
reads both ways, and through the real app an error about a renamed field names the wire field the
caller sent, never the canonical one. Validation fails before a job is queued, so no worker runs."""

from __future__ import annotations

import base64
import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from kandinsky_serve.api.compose import serve_app
from kandinsky_serve.api.dialects import eachlabs
from kandinsky_serve.api.dialects.openai.router import GenerationBody
from kandinsky_serve.api.dialects.openai.translate import FIELDS as OPENAI
from kandinsky_serve.api.dialects.replicate import schemas
from kandinsky_serve.api.dialects.segmind.slugs import FIELDS as SEGMIND
from kandinsky_serve.api.dialects.segmind.slugs import RESPONSE_ONLY, SLUGS
from kandinsky_serve.api.fields import FieldMap
from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.domain.request import GenerationRequest, Task
from kandinsky_serve.settings import Settings

CANONICAL = set(GenerationRequest.model_fields)
# OpenAI parameters that reach no canonical field: model choice, delivery, and the ignored ones
OPENAI_ELSEWHERE = {"model", "response_format", "stream", "style", "background", "moderation", "user"}


def _png(width: int = 64, height: int = 64) -> bytes:
    buf = io.BytesIO()
    Image.effect_noise((width, height), 64).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


PNG = base64.b64encode(_png()).decode()
TRUNCATED = PNG[: len(PNG) // 2 // 4 * 4]  # valid base64, not a decodable image
# a value each canonical field refuses
BAD: dict[str, Any] = {
    "width": 5000,
    "height": 5000,
    "num_images": 99,
    "steps": 0,
    "prior_steps": 0,
    "guidance_scale": 99,
    "prior_guidance_scale": -1,
    "scheduler": "nope",
    "seed": -1,
    "output_format": "gif",
    "output_quality": 0,
    "prompt": 5,
    "negative_prompt": 5,
    "strength": 2,
    "task": "x",
    "image": "zz",
    "hint": TRUNCATED,
    "fuse": [PNG] * 9,
}


def _round_trips(fields: FieldMap, schema: set[str]) -> None:
    """Every documented wire field that is a canonical field comes back as itself; the map names
    only real canonical fields and documented wire fields."""
    assert fields.accepted <= schema
    whole = [name for name in schema if fields.canonical(name) is not None]
    assert whole, schema
    for name in whole:
        canonical = fields.canonical(name)
        assert canonical in CANONICAL
        assert fields.wire(canonical) == name
    for part, targets in fields.parts.items():
        assert set(targets) <= CANONICAL
        assert all(fields.wire(target) is not None for target in targets), part


def _renamed(fields: FieldMap) -> Iterator[tuple[str, str]]:
    """(wire name, canonical field) for each field an error must not call by its canonical name."""
    for name, canonical in fields.names.items():
        if fields.spelled(canonical) != canonical:
            yield name, canonical


# --- the maps --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def openapi(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    data_dir = tmp_path_factory.mktemp("openapi")
    return serve_app(Settings(models="tiny,tiny-2.1", data_dir=data_dir), run_workers=False).openapi()


def test_segmind_each_slug_takes_exactly_its_map(openapi: dict[str, Any]) -> None:
    for slug, spec in SLUGS.items():
        body = openapi["paths"][f"/v1/{slug}"]["post"]["requestBody"]["content"]["application/json"]["schema"]
        documented = set(body["properties"])
        assert documented == spec.accepted, slug  # accepted is what to_request lets through
        _round_trips(spec.fields, documented - RESPONSE_ONLY)
    assert SEGMIND[Task.CONTROLNET].canonical("image") == "hint"
    assert SEGMIND[Task.IMG2IMG].canonical("image") == "image"
    assert SEGMIND[Task.FUSE].wire("fuse") == "images"


def test_eachlabs_map_is_its_inputs() -> None:
    inputs = set(eachlabs.EachlabsInput.model_fields)
    assert inputs - eachlabs.FIELDS.accepted == {"enable_safety_checker"}  # accepted and ignored
    _round_trips(eachlabs.FIELDS, inputs)


@pytest.mark.parametrize("model", schemas.MODELS.values(), ids=lambda m: m.ref)
def test_replicate_map_is_the_models_input_schema(model: schemas.ReplicateModel) -> None:
    inputs = set(schemas.openapi_schema(model)["components"]["schemas"]["Input"]["properties"])
    assert inputs == model.fields.accepted
    _round_trips(model.fields, inputs)


def test_replicate_models_name_their_inputs_differently() -> None:
    assert schemas.K22.fields.wire("prior_steps") == "num_inference_steps_prior"
    assert schemas.K21.fields.wire("prior_steps") == "num_steps_prior"
    assert schemas.K22.fields.wire("strength") is None


def test_openai_map_is_its_parameters(openapi: dict[str, Any]) -> None:
    edits = set(openapi["components"]["schemas"]["Body_edits_v1_images_edits_post"]["properties"])
    documented = set(GenerationBody.model_fields) | edits
    assert documented - OPENAI.accepted - set(OPENAI.aliases) == OPENAI_ELSEWHERE
    _round_trips(OPENAI, documented)
    assert OPENAI.wire("width") == OPENAI.wire("height") == "size"


# --- renaming rules, exactly as each wire writes them -----------------------------------------------


def test_a_sentence_gets_the_wire_name_in_place_of_the_canonical_one() -> None:
    segmind = FieldMap({"samples": "num_images", "image": "hint"})
    assert segmind.renamed(invalid("num_images", "too many")).message == "samples: too many"
    required = ServeError(ErrorCode.INVALID_INPUT, "hint is required for task controlnet", field="hint")
    renamed = segmind.renamed(required)
    assert (renamed.message, renamed.field) == ("image is required for task controlnet", "image")
    each = FieldMap({"num_outputs": "num_images"}, prefix="input.")
    limited = ServeError(ErrorCode.PAYLOAD_TOO_LARGE, "num_images: too big", field="num_images", retry_after=2.0)
    renamed = each.renamed(limited)
    assert (renamed.code, renamed.message, renamed.retry_after) == (limited.code, "input.num_outputs: too big", 2.0)


def test_a_labelled_wire_always_reads_wire_colon_description() -> None:
    replicate = FieldMap({"num_outputs": "num_images", "strength": "strength"}, prefix="input.", labelled=True)
    assert replicate.renamed(invalid("num_images", "too many")).message == "input.num_outputs: too many"
    sentence = ServeError(ErrorCode.INVALID_INPUT, "strength 0.01 with 2 steps runs no step", field="strength")
    renamed = replicate.renamed(sentence)
    assert (renamed.message, renamed.field) == (
        "input.strength: strength 0.01 with 2 steps runs no step",
        "input.strength",
    )


def test_a_part_keeps_its_canonical_name_and_an_alias_takes_its_wire_name() -> None:
    renamed = OPENAI.renamed(invalid("width", "too big"))
    assert (renamed.message, renamed.field) == ("size: width: too big", "size")
    assert OPENAI.renamed(invalid("image[]", "is empty")).message == "image: is empty"
    assert OPENAI.renamed(invalid("output_quality", "too low")).message == "output_compression: too low"


def test_fields_already_the_callers_are_left_alone() -> None:
    replicate = schemas.K21.fields
    for error in (invalid("input.width", "x"), invalid("model", "x"), invalid("fuse.0.weight", "x")):
        assert replicate.renamed(error) is error
    already = invalid("n", "x")
    assert OPENAI.renamed(already) is already
    assert SEGMIND[Task.TEXT2IMG].renamed(invalid("prompt", "x")).message == "prompt: x"


def test_one_canonical_field_has_one_wire_name() -> None:
    with pytest.raises(ValueError, match="two wire names"):
        FieldMap({"images": "fuse", "image_weights": "fuse"})


# --- through the app: a bad value of each renamed field --------------------------------------------


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    data_dir: Path = tmp_path_factory.mktemp("fields") / "data"
    # no workers: every request here must fail validation before it could be queued
    with TestClient(serve_app(Settings(models="tiny,tiny-2.1", data_dir=data_dir), run_workers=False)) as client:
        yield client


def _names(message: str, wire: str) -> bool:
    return re.match(rf"{re.escape(wire)}[: ]", message) is not None


SEGMIND_SLUG = {
    Task.TEXT2IMG: "kandinsky2.2-txt2img",
    Task.IMG2IMG: "kandinsky2.2-img2img",
    Task.INPAINT: "kandinsky2.2-inpainting",
    Task.FUSE: "kandinsky2.2-fuse",
    Task.CONTROLNET: "kandinsky2.2-controlnet-depth",
}
SEGMIND_BASE: dict[Task, dict[str, Any]] = {
    Task.IMG2IMG: {"image": PNG},
    Task.INPAINT: {"image": PNG, "mask": PNG},
    Task.CONTROLNET: {"image": PNG},
}


@pytest.mark.timeout(120)
def test_segmind_errors_name_segmind_parameters(app: TestClient) -> None:
    seen: set[tuple[str, str]] = set()
    for task, fields in SEGMIND.items():
        for wire, canonical in _renamed(fields):
            if (wire, canonical) in seen:
                continue
            seen.add((wire, canonical))
            body = {
                "prompt": "x",
                "img_width": 64,
                "img_height": 64,
                **SEGMIND_BASE.get(task, {}),
                wire: BAD[canonical],
            }
            response = app.post(f"/v2/{SEGMIND_SLUG[task]}", json=body)
            assert response.status_code == 400, (wire, response.text)
            assert _names(response.json()["error"], wire), (wire, response.text)
    assert {"img_width", "samples", "num_inference_steps", "images"} <= {wire for wire, _ in seen}
    assert ("image", "hint") in seen


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", ["kandinsky-2.2", "kandinsky-2.1"])
def test_eachlabs_errors_name_input_fields(app: TestClient, model: str) -> None:
    renamed = list(_renamed(eachlabs.FIELDS))
    assert len(renamed) == len(eachlabs.FIELDS.names)  # `input.` prefixes them all
    for wire, canonical in renamed:
        body = {"model": model, "input": {"prompt": "x", "width": 64, "height": 64, wire: BAD[canonical]}}
        response = app.post("/v1/prediction/", json=body)
        assert response.status_code == 400, (wire, response.text)
        assert _names(response.json()["error"], f"input.{wire}"), (wire, response.text)


REPLICATE_BASE: dict[str, dict[str, Any]] = {"image": {"task": "text_guided_img2img"}}


@pytest.mark.timeout(120)
@pytest.mark.parametrize("model", schemas.MODELS.values(), ids=lambda m: m.ref)
def test_replicate_errors_name_input_fields(app: TestClient, model: schemas.ReplicateModel) -> None:
    for wire, canonical in _renamed(model.fields):
        inputs = {"prompt": "x", "width": 64, "height": 64, **REPLICATE_BASE.get(wire, {}), wire: BAD[canonical]}
        response = app.post(f"/v1/models/{model.ref}/predictions", json={"input": inputs})
        assert response.status_code == 422, (wire, response.text)
        problem = response.json()
        assert problem["invalid_fields"][0]["field"] == f"input.{wire}", (wire, problem)
        assert problem["detail"].startswith(f"- input.{wire}: "), (wire, problem)


@pytest.mark.timeout(120)
def test_openai_errors_name_openai_parameters(app: TestClient) -> None:
    # OpenAI's own values: its parameters are not the canonical fields' (output_compression 0 is fine)
    bad = {"n": 99, "quality": "ultra", "output_compression": 101, "size": "4096x4096"}
    assert {wire for wire, _ in _renamed(OPENAI)} | set(OPENAI.parts) == set(bad)
    for wire, value in bad.items():
        response = app.post("/v1/images/generations", json={"prompt": "x", "size": "64x64", wire: value})
        assert response.status_code == 400, (wire, response.text)
        error = response.json()["error"]
        assert error["param"] == wire and _names(error["message"], wire), (wire, error)
