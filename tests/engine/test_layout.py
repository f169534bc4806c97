"""channels_last end to end: with NHWC weights, a decoder step computes every image-shaped tensor in
NHWC (convolutions, norms, activations, the CFG split and the scheduler's arithmetic), so cuDNN never
converts layouts around a convolution and no elementwise kernel mixes the two. On a GPU this is
what removes the NCHW<->NHWC conversion kernels (a fifth of the kernel time in ../shared/gpu/README.md);
the layouts themselves are the same on a CPU, so they are checked here."""

from collections import Counter

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from kandinsky_serve.domain import GenerationRequest, Stage
from kandinsky_serve.engine import steps
from kandinsky_serve.engine.engine import Engine
from kandinsky_serve.engine.speed import EngineOptions

draw = steps.draw
WIDTH, HEIGHT = 256, 192  # latents 32x24: no image-shaped tensor is square, so none is both layouts


def is_view(out: torch.Tensor, args) -> bool:
    # inference tensors do not record their views' bases, so compare storages
    storage = out.untyped_storage().data_ptr()
    return any(isinstance(a, torch.Tensor) and a.untyped_storage().data_ptr() == storage for a in args)


class Layouts(TorchDispatchMode):
    """The layout of every image-shaped tensor an operator computes (spatial size of some UNet level)
    while `on`; views (slices, splits) compute nothing and keep their base's layout."""

    def __init__(self, spatial: set[tuple[int, int]]) -> None:
        super().__init__()
        self.spatial = spatial
        self.on = False
        self.nchw: Counter[str] = Counter()
        self.nhwc = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if (
            self.on
            and isinstance(out, torch.Tensor)
            and not is_view(out, args)
            and out.dim() == 4
            and tuple(out.shape[-2:]) in self.spatial
        ):
            if out.shape[1] > 1 and out.is_contiguous(memory_format=torch.channels_last):
                self.nhwc += 1
            elif out.shape[1] > 1:
                self.nchw[str(func)] += 1
        return out


@pytest.fixture(scope="module")
def nhwc_engine():
    return Engine.create("tiny", "cpu", options=EngineOptions(channels_last=True))


def layouts_of_one_decoder_step(engine: Engine, request: GenerationRequest, monkeypatch) -> Layouts:
    latent = (HEIGHT // engine.movq_scale, WIDTH // engine.movq_scale)
    layouts = Layouts({(latent[0] >> k, latent[1] >> k) for k in range(4)})
    seen = {"steps": 0}

    def draw_on_the_host(generators, like):
        # the noise is drawn by the CPU generators before the step (the same on a GPU), then copied in
        was, layouts.on = layouts.on, False
        try:
            return draw(generators, like)
        finally:
            layouts.on = was

    monkeypatch.setattr(steps, "draw", draw_on_the_host)

    def on_progress(event):
        if event.stage is Stage.DECODER:
            seen["steps"] += 1
            layouts.on = seen["steps"] == 1  # the second step: after the first, before the last

    with layouts:
        engine.run(request, on_progress)
    return layouts


@pytest.mark.parametrize("task", ["text2img", "inpaint"])
def test_a_channels_last_decoder_step_has_no_nchw_image_tensor(nhwc_engine, task, photo, mask, monkeypatch):
    fields = {"image": photo, "mask": mask} if task == "inpaint" else {}
    request = GenerationRequest.parse(
        {"prompt": "a lighthouse", "task": task, "width": WIDTH, "height": HEIGHT, "steps": 3, "prior_steps": 2}
        | fields
    )
    layouts = layouts_of_one_decoder_step(nhwc_engine, request, monkeypatch)
    assert layouts.nhwc > 50  # convolutions, norms and activations of every level were seen
    assert not layouts.nchw, layouts.nchw


def test_channels_last_is_the_default_when_compiling_on_a_gpu():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert EngineOptions(compile="unet").for_device(cuda).channels_last is True
    assert EngineOptions().for_device(cuda).channels_last is False  # eager GroupNorm wants NCHW
    assert EngineOptions(compile="all").for_device(cpu).channels_last is False
    assert EngineOptions(compile="unet", channels_last=False).for_device(cuda).channels_last is False
    assert EngineOptions(channels_last=True).for_device(cuda).channels_last is True
