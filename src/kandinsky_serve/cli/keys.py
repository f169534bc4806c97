"""`kandinsky-serve keys create | list | revoke`, and `models`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from kandinsky_serve.auth.keys import KeyStore
from kandinsky_serve.cli.app import app
from kandinsky_serve.cli.server import StoreUrl
from kandinsky_serve.settings import Settings

keys_app = typer.Typer(help="Create, list and revoke API keys.", no_args_is_help=True)
app.add_typer(keys_app, name="keys")

DataDir = Annotated[Path | None, typer.Option(help="the server's data dir [env KS_DATA_DIR, default ./data]")]


def _key_store(data_dir: Path | None, store_url: str | None) -> KeyStore:
    from kandinsky_serve.auth.factory import open_keys

    overrides: dict[str, Any] = {"data_dir": data_dir, "store_url": store_url}
    return open_keys(Settings(**{k: v for k, v in overrides.items() if v is not None}))


@keys_app.command("create")
def keys_create(
    credits: Annotated[float | None, typer.Option(help="credits it may spend (default: unlimited)")] = None,
    name: Annotated[str, typer.Option(help="a label for the key")] = "",
    data_dir: DataDir = None,
    store_url: StoreUrl = None,
) -> None:
    """Create a key. The key is printed once, as the last line; it cannot be shown again."""
    key, secret = _key_store(data_dir, store_url).create(name, credits)
    limit = "unlimited" if key.credits is None else f"{key.credits:g}"
    typer.echo(f"created key {key.id} ({name or 'no name'}), credits: {limit}", err=True)
    typer.echo(secret)


@keys_app.command("list")
def keys_list(data_dir: DataDir = None, store_url: StoreUrl = None) -> None:
    """List keys (never their secrets)."""
    for key in _key_store(data_dir, store_url).list():
        credits = "unlimited" if key.credits is None else f"{key.credits:g}"
        state = "revoked" if key.revoked else "active"
        typer.echo(f"{key.id}  {state:<7}  credits {credits:<10}  {key.created_at:%Y-%m-%d %H:%M}  {key.name}")


@keys_app.command("revoke")
def keys_revoke(key_id: str, data_dir: DataDir = None, store_url: StoreUrl = None) -> None:
    """Revoke a key: it stops working at once."""
    if not _key_store(data_dir, store_url).revoke(key_id):
        typer.echo(f"error: no active key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


@app.command()
def models() -> None:
    """List the built-in model ids."""
    from kandinsky_serve.engine.registry import BUILTIN

    for spec in BUILTIN.values():
        typer.echo(f"{spec.id:<16} Kandinsky {spec.family.value}  {spec.description}")
