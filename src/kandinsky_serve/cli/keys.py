"""`kandinsky-serve keys create | list | revoke`, and `models`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kandinsky_serve.auth.keys import ApiKey, KeyStore
from kandinsky_serve.cli.app import app
from kandinsky_serve.cli.server import StoreUrl
from kandinsky_serve.settings import Settings

keys_app = typer.Typer(
    help=(
        "Create, list and revoke API keys. Without any key, a server on 127.0.0.1 serves one local user "
        "and ignores whatever key a client sends; once a key has been created (even if later revoked), "
        "every request needs a valid key, unless the server runs with KS_REQUIRE_KEYS=false."
    ),
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")

DataDir = Annotated[Path | None, typer.Option(help="the server's data dir [env KS_DATA_DIR, default ./data]")]


def _settings(data_dir: Path | None, store_url: str | None) -> Settings:
    overrides: dict[str, Any] = {"data_dir": data_dir, "store_url": store_url}
    return Settings(**{k: v for k, v in overrides.items() if v is not None})


def _key_store(settings: Settings) -> KeyStore:
    from kandinsky_serve.auth.factory import open_keys

    return open_keys(settings)


@keys_app.command("create")
def keys_create(
    credits: Annotated[float | None, typer.Option(help="credits it may spend (default: unlimited)")] = None,
    name: Annotated[str, typer.Option(help="a label for the key")] = "",
    max_jobs: Annotated[
        int | None,
        typer.Option(min=1, help="jobs it may have queued or running at once (default: KS_MAX_JOBS_PER_KEY, 10)"),
    ] = None,
    rate_limit: Annotated[
        int | None,
        typer.Option(min=0, help="jobs it may submit a minute, 0 for no limit (default: KS_RATE_LIMIT_PER_MINUTE, 60)"),
    ] = None,
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
) -> None:
    """Create a key. The key is printed once, as the last line; it cannot be shown again.

    From then on the server requires a key on every request, even after this one is revoked.
    """
    settings = _settings(data_dir, store_url)
    key, secret = _key_store(settings).create(name, credits, max_jobs=max_jobs, rate_limit=rate_limit)
    limit = "unlimited" if key.credits is None else f"{key.credits:g}"
    jobs, rate = _limits(key, settings)
    typer.echo(
        f"created key {key.id} ({name or 'no name'}), credits: {limit}, jobs in flight: {jobs}, jobs a minute: {rate}",
        err=True,
    )
    typer.echo(secret)


def _credits(value: float | None) -> str:
    return "unlimited" if value is None else f"{value:.4f}".rstrip("0").rstrip(".")


def _limits(key: ApiKey, settings: Settings) -> tuple[str, str]:
    """The key's jobs in flight and jobs a minute; the server's default, marked so, where it has none."""
    jobs = f"{key.max_jobs}" if key.max_jobs is not None else f"{settings.max_jobs_per_key} (default)"
    rate = key.rate_limit if key.rate_limit is not None else settings.rate_limit_per_minute
    shown = "no limit" if rate == 0 else f"{rate}"
    return jobs, shown if key.rate_limit is not None else f"{shown} (default)"


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, store_url: StoreUrl = None) -> None:
    """List keys (never their secrets): credits, what remains of them, and limits.

    Remaining is credits minus spent: queued, running and succeeded jobs spend, failed and canceled ones do not.

    "(default)" marks the server's limit for a key without its own, as this command's environment sets it.
    """
    from kandinsky_serve.store.factory import open_store

    settings = _settings(data_dir, store_url)
    keys = _key_store(settings).list()
    if not keys:
        typer.echo("no keys: a server on 127.0.0.1 serves the local user without one", err=True)
        return
    # no job database yet (no server has run on this data dir): nothing is spent, and listing keys
    # should not create one
    no_jobs = settings.store_url is None and not settings.database_path.exists()
    store = None if no_jobs else open_store(settings)
    try:
        rows = [["ID", "NAME", "CREATED", "CREDITS", "SPENT", "REMAINING", "JOBS IN FLIGHT", "JOBS/MIN", "REVOKED"]]
        for key in keys:
            spent = store.spent(key.id) if store is not None else 0.0
            remaining = None if key.credits is None else max(key.credits - spent, 0.0)
            rows.append(
                [
                    key.id,
                    key.name or "-",
                    f"{key.created_at:%Y-%m-%d %H:%M}",
                    _credits(key.credits),
                    _credits(spent),
                    _credits(remaining),
                    *_limits(key, settings),
                    "yes" if key.revoked else "no",
                ]
            )
    finally:
        if store is not None:
            store.close()
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        typer.echo("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None, store_url: StoreUrl = None) -> None:
    """Revoke a key: it stops working at once. Keys stay required on the server all the same."""
    if not _key_store(_settings(data_dir, store_url)).revoke(key_id):
        typer.echo(f"error: no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@app.command()
def models() -> None:
    """List the built-in model ids (serve several with KS_MODELS=a,b or --model a --model b)."""
    from kandinsky_serve.domain.catalogue import CATALOGUE

    for entry in CATALOGUE.values():
        aliases = f" (also {', '.join(entry.aliases)})" if entry.aliases else ""
        typer.echo(f"{entry.id:<16} Kandinsky {entry.family.value}  {entry.description}{aliases}")
