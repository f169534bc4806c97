import pytest

from kandinsky_serve.domain import ErrorCode, GenerationRequest, ServeError, Task


def parse_error(**fields) -> ServeError:
    with pytest.raises(ServeError) as info:
        GenerationRequest.parse(fields)
    assert info.value.code is ErrorCode.INVALID_INPUT
    return info.value


def test_defaults_are_a_valid_text2img_request():
    request = GenerationRequest.parse({"prompt": "a fox"})
    assert request.task is Task.TEXT2IMG
    assert (request.width, request.height, request.num_images) == (512, 512, 1)


@pytest.mark.parametrize(
    ("fields", "field", "words"),
    [
        ({"width": 100000}, "width", "less than or equal to 2048"),
        ({"height": 10}, "height", "greater than or equal to 64"),
        ({"num_images": 9}, "num_images", "8"),
        ({"steps": 0}, "steps", "greater than or equal to 1"),
        ({"guidance_scale": "loud"}, "guidance_scale", "valid number"),
        ({"seed": -1}, "seed", "greater than or equal to 0"),
        ({"output_format": "gif"}, "output_format", "webp"),
        ({"prompt": "x" * 20_000}, "prompt", "2000 characters"),
        ({"colour": "red"}, "colour", "not a known parameter"),
    ],
)
def test_bad_parameters_name_their_field(fields, field, words):
    error = parse_error(**fields)
    assert error.field == field
    assert error.message.startswith(field)
    assert words in error.message


def test_task_inputs_are_required():
    assert parse_error(task="img2img").field == "image"
    assert parse_error(task="inpaint", image=b"\x89PNG").field == "image"
    assert parse_error(task="controlnet").field == "hint"
    assert parse_error(task="fuse").field == "fuse"


def test_undecodable_image_is_refused(photo):
    error = parse_error(task="img2img", image=b"not an image")
    assert error.field == "image"
    assert "could not be decoded" in error.message


def test_img2img_strength_that_runs_no_step_is_refused(photo):
    error = parse_error(task="img2img", image=photo, steps=10, strength=0.05)
    assert error.field == "strength"


def test_fuse_item_needs_exactly_one_ingredient(photo):
    error = parse_error(task="fuse", fuse=[{"prompt": "a cat", "image": photo}])
    assert error.field == "fuse.0"


def test_images_round_trip_through_json_as_base64(photo):
    request = GenerationRequest.parse({"task": "img2img", "image": photo, "seed": 7})
    again = GenerationRequest.model_validate_json(request.model_dump_json())
    assert again == request
    assert again.image == photo


def _png(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.effect_noise((width, height), 64).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def test_a_truncated_image_is_refused_at_submit_not_in_the_worker():
    whole = _png(64, 64)
    error = parse_error(task="img2img", image=whole[: len(whole) // 2])
    assert error.field == "image"
    assert "truncated or corrupt" in error.message


def test_an_inpaint_mask_must_be_the_size_of_its_image():
    error = parse_error(task="inpaint", image=_png(64, 64), mask=_png(96, 64))
    assert error.field == "mask"
    assert "96x64" in error.message and "64x64" in error.message
    GenerationRequest.parse({"task": "inpaint", "image": _png(64, 64), "mask": _png(64, 64)})
