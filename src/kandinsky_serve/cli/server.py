"""`kandinsky-serve serve | api | worker`: one machine, or API nodes and workers on a shared Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kandinsky_serve.cli.app import app, fail
from kandinsky_serve.domain.errors import ServeError
from kandinsky_serve.settings import Settings

StoreUrl = Annotated[str | None, typer.Option(help="redis://host:6379/0 to share a Redis [env KS_STORE_URL]")]


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the flags that were given on top."""
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        from kandinsky_serve.engine.registry import resolve_model

        resolve_model(settings.model)  # an unknown model is a one-line error, before anything starts
    except ServeError as error:
        raise fail(error) from None
    return settings


def _run_api(settings: Settings, supervise: bool) -> None:
    import uvicorn

    from kandinsky_serve.api.app import create_app
    from kandinsky_serve.logs import configure as configure_logs

    configure_logs(settings.log_format, "api")
    app = create_app(settings, run_workers=supervise)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", log_config=None)


@app.command()
def serve(
    model: Annotated[str | None, typer.Option(help="model id or local weights folder [env KS_MODEL]")] = None,
    host: Annotated[str | None, typer.Option(help="listen address [env KS_HOST, default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="listen port [env KS_PORT, default 8000]")] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="jobs, inputs, outputs [env KS_DATA_DIR, default ./data]")
    ] = None,
    workers: Annotated[int | None, typer.Option(help="worker processes; 0 = one per GPU [env KS_WORKERS]")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N [env KS_DEVICE]")] = None,
    store_url: StoreUrl = None,
) -> None:
    """Run the API and its GPU workers on this machine, with the embedded job store."""
    settings = _settings(
        model=model, host=host, port=port, data_dir=data_dir, workers=workers, device=device, store_url=store_url
    )
    _run_api(settings, supervise=True)


@app.command()
def api(
    model: Annotated[str | None, typer.Option(help="the model the workers run [env KS_MODEL]")] = None,
    host: Annotated[str | None, typer.Option(help="listen address [env KS_HOST, default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="listen port [env KS_PORT, default 8000]")] = None,
    store_url: StoreUrl = None,
) -> None:
    """Run an API node only: jobs go to `kandinsky-serve worker` processes through a shared Redis."""
    from kandinsky_serve.worker.process import needs_store_url

    settings = _settings(model=model, host=host, port=port, store_url=store_url)
    if settings.store_url is None:
        raise fail(needs_store_url("api"))
    _run_api(settings, supervise=False)


@app.command()
def worker(
    model: Annotated[str | None, typer.Option(help="model id or local weights folder [env KS_MODEL]")] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N [env KS_DEVICE]")] = None,
    store_url: StoreUrl = None,
) -> None:
    """Run one worker (one GPU) that takes jobs from a shared Redis; run one per GPU."""
    from kandinsky_serve.engine.devices import resolve_device
    from kandinsky_serve.worker.process import needs_store_url, standalone_main

    settings = _settings(model=model, device=device, store_url=store_url)
    if settings.store_url is None:
        raise fail(needs_store_url("worker"))
    try:
        chosen = str(resolve_device(settings.device))
    except ServeError as error:
        raise fail(error) from None
    standalone_main(settings, "cuda:0" if chosen == "cuda" else chosen)
