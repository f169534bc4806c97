"""`kandinsky-serve bench engine`: our engine against plain diffusers, same run, printed as a table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from kandinsky_serve.cli.app import app, fail
from kandinsky_serve.domain.errors import ServeError

bench_app = typer.Typer(
    help="Benchmarks that print figures (add --json for one JSON object last).", no_args_is_help=True
)
app.add_typer(bench_app, name="bench")


def _numbers(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


@bench_app.command("engine")
def engine(
    model: Annotated[str, typer.Option(help="model id; tiny on a CPU, random-2.2 on a GPU")] = "tiny",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")] = "cpu",
    dtype: Annotated[str, typer.Option(help="auto (fp16 on CUDA, fp32 on CPU), fp16, bf16, fp32; both sides")] = "auto",
    compile_: Annotated[
        Literal["off", "unet", "all"],
        typer.Option("--compile", help="torch.compile our UNet (unet) and MoVQ decoder (all); diffusers stays eager"),
    ] = "off",
    channels_last: Annotated[
        bool | None,
        typer.Option(
            "--channels-last/--no-channels-last",
            help="channels_last weights and latents for ours (default: on CUDA only); diffusers stays contiguous",
        ),
    ] = None,
    compile_cache: Annotated[
        Path | None, typer.Option(help="inductor cache folder (default: torch's, under /tmp)")
    ] = None,
    cuda_graphs: Annotated[
        bool, typer.Option(help="on CUDA, replay our denoising steps as CUDA graphs (as KS_CUDA_GRAPHS)")
    ] = True,
    sizes: Annotated[str, typer.Option(help="square sizes, comma-separated")] = "512,1024",
    batches: Annotated[str, typer.Option(help="images per request, comma-separated")] = "1,4",
    steps: Annotated[int, typer.Option(help="decoder steps")] = 25,
    prior_steps: Annotated[int, typer.Option()] = 25,
    repeats: Annotated[int, typer.Option(help="timed runs per side (the median is reported)")] = 3,
    profile: Annotated[
        bool,
        typer.Option(
            "--profile",
            help="also count operators dispatched per image and per decoder step (ours, our old loop, "
            "diffusers); on CUDA, kernel launches per image and GPU busy fraction",
        ),
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="also print one JSON object as the last line")] = False,
) -> None:
    """Seconds per image, images per second, peak memory and (on CUDA) MFU: ours, with the speed options
    asked for, against plain eager diffusers, same run."""
    from kandinsky_serve.bench.engine import as_json, run, table
    from kandinsky_serve.engine.speed import EngineOptions

    options = EngineOptions(compile_, channels_last, compile_cache, cuda_graphs)
    try:
        result = run(
            model, device, _numbers(sizes), _numbers(batches), steps, prior_steps, repeats, dtype, options, profile
        )
    except ServeError as error:
        raise fail(error) from None
    typer.echo(table(result))
    if json_out:
        typer.echo(as_json(result))


@bench_app.command("server")
def server(
    model: Annotated[str, typer.Option(help="model id the server runs")] = "tiny",
    size: Annotated[int, typer.Option(help="square image size")] = 256,
    steps: Annotated[int, typer.Option(help="decoder steps")] = 10,
    clients: Annotated[str, typer.Option(help="concurrent clients, comma-separated")] = "1,4,8",
    jobs: Annotated[int, typer.Option(help="jobs each client runs")] = 8,
    max_batch: Annotated[int, typer.Option(help="the server's KS_MAX_BATCH")] = 4,
    device: Annotated[str, typer.Option(help="the server's and the bare engine's device (KS_DEVICE)")] = "cpu",
    dtype: Annotated[str, typer.Option(help="auto, fp16, bf16, fp32 (KS_DTYPE)")] = "auto",
    restart: Annotated[
        bool, typer.Option("--restart", help="also time a second start on the same data dir (warm compile cache)")
    ] = False,
    json_out: Annotated[bool, typer.Option("--json", help="also print one JSON object as the last line")] = False,
) -> None:
    """Jobs per second, p50/p99 latency, the time the server adds per job over the bare engine, and
    the seconds from start to ready and to the first image."""
    import json

    from kandinsky_serve.bench.server import run, table

    result = run(model, size, steps, _numbers(clients), jobs, max_batch, device, dtype, restart)
    typer.echo(table(result))
    if json_out:
        typer.echo(json.dumps(result))


@bench_app.command("decode")
def decode(
    model: Annotated[str, typer.Option(help="model id whose MoVQ decodes; random-2.2 is the full size")] = "tiny",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:N")] = "cpu",
    dtype: Annotated[str, typer.Option(help="auto, fp16, bf16, fp32")] = "auto",
    sizes: Annotated[str, typer.Option(help="square image sizes, comma-separated")] = "1024,2048",
    batch: Annotated[int, typer.Option(help="images decoded at once")] = 1,
    tile: Annotated[int, typer.Option(help="most latent pixels a tile has a side")] = 96,
    overlap: Annotated[int, typer.Option(help="latent pixels neighbouring tiles share")] = 24,
    whole_up_to: Annotated[
        int | None, typer.Option(help="skip whole (untiled) decodes above this size; they may not fit")
    ] = None,
    threads: Annotated[int | None, typer.Option(help="torch threads for each decode")] = None,
    seed: Annotated[int, typer.Option()] = 0,
    json_out: Annotated[bool, typer.Option("--json", help="also print one JSON object as the last line")] = False,
) -> None:
    """MoVQ decode, whole and in tiles: peak memory, seconds, and how far apart the pictures are."""
    import json

    from kandinsky_serve.bench.decode import run, table

    try:
        result = run(model, device, dtype, tuple(_numbers(sizes)), batch, tile, overlap, whole_up_to, seed, threads)
    except ServeError as error:
        raise fail(error) from None
    typer.echo(table(result))
    if json_out:
        typer.echo(json.dumps(result))
