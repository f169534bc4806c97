"""`kandinsky-serve warmup`: run the warm-up buckets once, ahead of deployment, and exit.

With KS_COMPILE, the first compile of a shape takes minutes; a worker that finds the kernels in
`<data dir>/compile-cache` reads them back in seconds. Running this once where the data dir lives (an
image build, an init container, a deploy step) means no worker ever starts cold, so no user waits
for a compile. Without KS_COMPILE there is nothing to keep (CUDA graphs are captured per process,
in seconds) and this only reports how long a worker's warm-up takes.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from kandinsky_serve.cli.app import app, fail
from kandinsky_serve.domain.errors import ServeError
from kandinsky_serve.settings import Settings


@app.command("warmup")
def warmup_command(
    model: Annotated[
        list[str] | None, typer.Option("--model", help="models to warm (default: KS_MODELS, every served model)")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N [env KS_DEVICE]")] = None,
    buckets: Annotated[
        str | None, typer.Option("--warmup", help="sizes and batch sizes, e.g. '768x768:1,8 512:1' [env KS_WARMUP]")
    ] = None,
) -> None:
    """Runs KS_WARMUP's buckets on each served model with the server's speed options (compile,
    channels_last, CUDA graphs), filling the compile cache in the data dir; prints each bucket's time."""
    from kandinsky_serve.engine import warmup
    from kandinsky_serve.engine.engine import Engine
    from kandinsky_serve.engine.speed import EngineOptions

    overrides: dict[str, Any] = {"device": device, "warmup": buckets}
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        for name in model or settings.served_models:
            engine = Engine.create(name, settings.device, settings.dtype, EngineOptions.from_settings(settings))
            plan = warmup.plan(settings, engine)
            if not plan:
                typer.echo(f"{name}: nothing to warm on {engine.device} (KS_WARMUP={settings.warmup})")
            for bucket in plan:
                seconds = warmup.warm_up(engine, [bucket])
                typer.echo(f"{name} on {engine.device}: {bucket} in {seconds:.1f} s")
    except ServeError as error:
        raise fail(error) from None
