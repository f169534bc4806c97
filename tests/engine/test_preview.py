"""Previews: latents through a linear map to RGB, fitted to the model's own MoVQ."""

import io

import numpy as np
import pytest
from PIL import Image

from kandinsky_serve.domain import GenerationRequest, Stage
from kandinsky_serve.engine.images import image_to_tensor
from kandinsky_serve.engine.preview import Previewer


@pytest.mark.parametrize(("colour", "channel"), [((220, 30, 30), 0), ((30, 200, 30), 1), ((30, 30, 220), 2)])
def test_a_flat_colour_previews_with_that_colour_dominant(engine22, colour, channel):
    previewer = Previewer(engine22.movq, engine22.movq_scale)
    picture = image_to_tensor(Image.new("RGB", (128, 96), colour), 128, 96)
    latents = engine22.movq.encode(picture).latents.detach()
    [jpeg] = previewer.render(latents)
    preview = Image.open(io.BytesIO(jpeg))
    assert preview.format == "JPEG" and preview.size == (256, 192)
    assert np.asarray(preview).reshape(-1, 3).mean(0).argmax() == channel


def test_previews_are_spread_over_the_decoder_steps_one_per_request(engine22):
    events = []
    requests = [
        GenerationRequest(model="tiny", prompt=p, width=64, height=64, steps=8, prior_steps=2, seed=i, num_images=2)
        for i, p in enumerate(["a fox", "a whale"])
    ]
    engine22.run_batch(requests, events.append, previews=4)
    with_previews = [e for e in events if e.previews]
    assert [e.step for e in with_previews] == [2, 4, 6]  # the last step's picture is the result itself
    assert all(e.stage is Stage.DECODER for e in with_previews)
    assert all(sorted(index for index, _ in e.previews) == [0, 1] for e in with_previews)
    assert Image.open(io.BytesIO(with_previews[0].previews[0][1])).format == "JPEG"


def test_no_previews_unless_asked(engine22):
    events = []
    engine22.run(
        GenerationRequest(model="tiny", prompt="x", width=64, height=64, steps=6, prior_steps=2), events.append
    )
    assert not any(e.previews for e in events)
