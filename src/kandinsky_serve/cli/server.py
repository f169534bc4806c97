"""`kandinsky-serve serve | api | worker`: one machine, or API nodes and workers on a shared Redis."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kandinsky_serve.cli.app import app, fail
from kandinsky_serve.domain.errors import ServeError, invalid
from kandinsky_serve.settings import Settings

StoreUrl = Annotated[str | None, typer.Option(help="redis://host:6379/0 to share a Redis [env KS_STORE_URL]")]
Models = Annotated[
    list[str] | None,
    typer.Option(
        "--model",
        help="a model to serve: an id or a local weights folder; repeat for several, the first is the default "
        "[env KS_MODELS, comma-separated; or KS_MODEL]",
    ),
]


def _settings(**overrides: Any) -> Settings:
    """Settings from the environment, with the flags that were given on top."""
    try:
        settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
        # an unknown model is a one-line error, before anything starts (the catalogue imports no torch)
        from kandinsky_serve.domain.catalogue import resolve

        for name in settings.served_models:
            resolve(name)
    except ServeError as error:
        raise fail(error) from None
    return settings


def _models(given: list[str] | None) -> str | None:
    return ",".join(given) if given else None


def _run_api(settings: Settings, supervise: bool) -> None:
    import uvicorn

    from kandinsky_serve.api.compose import serve_app
    from kandinsky_serve.logs import configure as configure_logs

    configure_logs(settings.log_format, "api")
    app = serve_app(settings, run_workers=supervise)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", log_config=None)


@app.command()
def serve(
    model: Models = None,
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
        models=_models(model),
        host=host,
        port=port,
        data_dir=data_dir,
        workers=workers,
        device=device,
        store_url=store_url,
    )
    _run_api(settings, supervise=True)


@app.command()
def api(
    model: Models = None,
    host: Annotated[str | None, typer.Option(help="listen address [env KS_HOST, default 127.0.0.1]")] = None,
    port: Annotated[int | None, typer.Option(help="listen port [env KS_PORT, default 8000]")] = None,
    store_url: StoreUrl = None,
) -> None:
    """Run an API node only: jobs go to `kandinsky-serve worker` processes through a shared Redis."""
    from kandinsky_serve.worker.process import needs_store_url

    settings = _settings(models=_models(model), host=host, port=port, store_url=store_url)
    if settings.store_url is None:
        raise fail(needs_store_url("api"))
    _run_api(settings, supervise=False)


@app.command()
def worker(
    model: Annotated[
        str | None,
        typer.Option(help="the one model it runs: an id or a local weights folder [env KS_MODELS or KS_MODEL]"),
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda, cuda:N [env KS_DEVICE]")] = None,
    store_url: StoreUrl = None,
) -> None:
    """Run one worker (one GPU, one model) that takes jobs from a shared Redis; run one per GPU and model."""
    from kandinsky_serve.engine.devices import resolve_device
    from kandinsky_serve.worker.process import needs_store_url, standalone_main

    settings = _settings(models=model, device=device, store_url=store_url)
    if settings.store_url is None:
        raise fail(needs_store_url("worker"))
    if len(settings.served_models) != 1:
        served = ", ".join(settings.served_models)
        raise fail(invalid("model", f"a worker runs one model (got {served}); start one worker per model"))
    try:
        chosen = str(resolve_device(settings.device))
    except ServeError as error:
        raise fail(error) from None
    standalone_main(settings, "cuda:0" if chosen == "cuda" else chosen, settings.served_models[0])
