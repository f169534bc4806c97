"""`kandinsky-serve generate`: images locally, or on a server with --server."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import httpx
import numpy as np
import typer
from tqdm import tqdm

from kandinsky_serve.cli.app import app, fail
from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.domain.events import ProgressEvent, Stage
from kandinsky_serve.domain.request import FuseItem, GenerationRequest, OutputFormat, Task
from kandinsky_serve.imaging import encode_image
from kandinsky_serve.settings import Settings


def _read(path: Path | None, option: str) -> bytes | None:
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise fail(ServeError(ErrorCode.INVALID_INPUT, f"{option}: cannot read {path} ({exc.strerror})")) from None


def _fuse_item(spec: str) -> FuseItem:
    """'a cat=0.5' or 'photo.jpg=0.5': an existing file is an image, anything else a prompt."""
    what, sep, weight_text = spec.rpartition("=")
    if not sep:
        what, weight_text = spec, "1"
    try:
        weight = float(weight_text)
    except ValueError:
        raise fail(
            ServeError(ErrorCode.INVALID_INPUT, f"--fuse: {weight_text!r} in {spec!r} is not a weight")
        ) from None
    path = Path(what).expanduser()
    if path.is_file():
        return FuseItem.model_validate({"image": path.read_bytes(), "weight": weight})
    return FuseItem.model_validate({"prompt": what, "weight": weight})


def _infer_task(task: Task | None, fuse: list[str], image: Path | None, mask: Path | None, hint: Path | None) -> Task:
    if task is not None:
        return task
    if fuse:
        return Task.FUSE
    if hint is not None:
        return Task.CONTROLNET
    if mask is not None:
        return Task.INPAINT
    return Task.IMG2IMG if image is not None else Task.TEXT2IMG


def _output_paths(output: Path, fmt: OutputFormat, count: int) -> list[Path]:
    suffix = ".jpg" if fmt is OutputFormat.JPEG else f".{fmt.value}"
    base = (
        output.with_suffix(suffix)
        if output.suffix.lower().lstrip(".") in {"png", "jpg", "jpeg", "webp"}
        else (output.with_name(output.name + suffix))
    )
    if count == 1:
        return [base]
    return [base.with_name(f"{base.stem}-{i}{base.suffix}") for i in range(count)]


class _Bars:
    """One tqdm bar per stage, on stderr."""

    def __init__(self) -> None:
        self._bar: tqdm | None = None
        self._stage: Stage | None = None

    def __call__(self, event: ProgressEvent) -> None:
        if event.stage is not self._stage:
            self.close()
            self._stage = event.stage
            self._bar = tqdm(total=event.total, desc=f"{event.stage.value:>7}", unit="step", file=sys.stderr)
        if self._bar is not None:
            self._bar.update(event.step - self._bar.n)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


@app.command()
def generate(
    prompt: Annotated[str, typer.Argument(help="what to draw (optional with --fuse)")] = "",
    output: Annotated[
        Path, typer.Option("--output", "-o", help="file to write; out-0.png, out-1.png... for several")
    ] = (Path("out.png")),
    model: Annotated[str | None, typer.Option(help="model id or local weights folder [env KS_MODEL]")] = None,
    task: Annotated[Task | None, typer.Option(help="default: inferred from --image/--mask/--hint/--fuse")] = None,
    negative_prompt: Annotated[str | None, typer.Option("--negative-prompt", "-n")] = None,
    width: Annotated[int, typer.Option()] = 512,
    height: Annotated[int, typer.Option()] = 512,
    steps: Annotated[int, typer.Option(help="decoder denoising steps")] = 50,
    prior_steps: Annotated[int, typer.Option()] = 25,
    guidance: Annotated[float, typer.Option(help="decoder guidance scale")] = 4.0,
    prior_guidance: Annotated[float, typer.Option()] = 4.0,
    scheduler: Annotated[
        str | None, typer.Option(help="2.2: DDPM (default), DDIM, DPM++ 2M, ...; 2.1: DDIM, P-Sampler")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="image i uses seed + i; random when omitted")] = None,
    num_images: Annotated[int, typer.Option(help="1 to 8")] = 1,
    fmt: Annotated[str | None, typer.Option("--format", help="png, jpeg or webp (default: from --output)")] = None,
    quality: Annotated[int, typer.Option(help="jpeg/webp quality")] = 90,
    image: Annotated[Path | None, typer.Option(help="init image (img2img, inpaint)")] = None,
    mask: Annotated[Path | None, typer.Option(help="inpaint mask: white = repaint")] = None,
    hint: Annotated[Path | None, typer.Option(help="ControlNet depth map (white = near)")] = None,
    strength: Annotated[float, typer.Option(help="img2img: how much to change the image")] = 0.3,
    fuse: Annotated[list[str], typer.Option(help="PROMPT_OR_IMAGE_PATH=WEIGHT, repeatable")] = [],  # noqa: B006
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N [env KS_DEVICE]")] = None,
    dtype: Annotated[str | None, typer.Option(help="auto, fp16, bf16, fp32 [env KS_DTYPE]")] = None,
    server: Annotated[str | None, typer.Option(help="generate on a kandinsky-serve server at this URL")] = None,
    api_key: Annotated[str | None, typer.Option(help="the server's API key [env KS_API_KEY]")] = None,
) -> None:
    """Generate images, locally without a server, or on one with --server."""
    settings = Settings()
    try:
        out_format = OutputFormat.from_name(fmt or output.suffix or "png")
    except ValueError:
        raise fail(
            ServeError(ErrorCode.INVALID_INPUT, f"--format: {fmt or output.suffix!r} is not png, jpeg or webp")
        ) from None
    chosen_task = _infer_task(task, fuse, image, mask, hint)
    try:
        request = GenerationRequest.parse(
            {
                "task": chosen_task,
                "model": model if server else model or settings.served_models[0],
                "prompt": prompt,
                "negative_prompt": negative_prompt,
                "width": width,
                "height": height,
                "num_images": num_images,
                "steps": steps,
                "prior_steps": prior_steps,
                "guidance_scale": guidance,
                "prior_guidance_scale": prior_guidance,
                "scheduler": scheduler,
                "seed": seed,
                "strength": strength,
                "image": _read(image, "--image"),
                "mask": _read(mask, "--mask"),
                "hint": _read(hint, "--hint"),
                "fuse": [_fuse_item(spec) for spec in fuse],
                "output_format": out_format,
                "output_quality": quality,
            }
        )
        if server:
            _generate_remote(request, server, api_key, output, out_format)
            return
        from kandinsky_serve.engine.engine import Engine  # torch and diffusers load only when needed
        from kandinsky_serve.engine.speed import EngineOptions

        typer.echo(f"loading {request.model} ...", err=True)
        engine = Engine.create(
            request.model or settings.served_models[0],
            device or settings.device,
            dtype or settings.dtype,
            EngineOptions.from_settings(settings),
        )
        typer.echo(f"model {engine.spec.id} on {engine.device} ({str(engine.dtype).removeprefix('torch.')})", err=True)
        bars = _Bars()
        try:
            result = engine.run(request, on_progress=bars)
        finally:
            bars.close()
    except ServeError as error:
        raise fail(error) from None

    if result.image_embeds is not None and result.negative_image_embeds is not None:
        path = output.with_suffix(".npz")
        np.savez(path, image_embeds=result.image_embeds, negative_image_embeds=result.negative_image_embeds)
        typer.echo(f"wrote {path} (image_embeds {tuple(result.image_embeds.shape)})")
    else:
        for path, picture in zip(_output_paths(output, out_format, len(result.images)), result.images, strict=True):
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode_image(picture, out_format.value, quality))
            typer.echo(f"wrote {path} ({picture.width}x{picture.height})")
    typer.echo("seeds: " + ", ".join(str(s) for s in result.seeds))
    stages = ", ".join(
        f"{name.removesuffix('_s')} {seconds:.2f}" for name, seconds in result.timings.items() if name != "total_s"
    )
    typer.echo(f"time: {result.timings['total_s']:.2f} s ({stages})")


def _generate_remote(
    request: GenerationRequest, server: str, api_key: str | None, output: Path, out_format: OutputFormat
) -> None:
    from kandinsky_serve.client import Client, ClientError

    bars = _Bars()
    try:
        with Client(server, api_key=api_key) as client:
            job = client.submit(request.model_dump(mode="json", exclude_none=True))
            typer.echo(f"job {job.id} queued on {server}", err=True)
            job = client.wait(job.id, on_progress=bars)
            bars.close()
            if job.state != "succeeded":
                error = job.error or {"message": f"the job was {job.state}"}
                raise ClientError(job.state, error["message"])
            if request.task is Task.PRIOR:
                path = output.with_suffix(".json")
                path.write_bytes(client.download(job.outputs[0]))
                typer.echo(f"wrote {path}")
            else:
                for path, item in zip(_output_paths(output, out_format, len(job.outputs)), job.outputs, strict=True):
                    path.parent.mkdir(parents=True, exist_ok=True)
                    path.write_bytes(client.download(item))
                    typer.echo(f"wrote {path}")
    except ClientError as error:
        bars.close()
        code = next((c for c in ErrorCode if c.value == error.code), ErrorCode.INTERNAL)
        raise fail(ServeError(code, error.message, field=error.field)) from None
    except httpx.HTTPError as error:
        bars.close()
        raise fail(ServeError(ErrorCode.INTERNAL, f"cannot reach {server}: {error}")) from None
    typer.echo("seeds: " + ", ".join(str(s) for s in job.seeds))
