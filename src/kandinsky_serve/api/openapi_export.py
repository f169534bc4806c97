"""Writes the app's OpenAPI document to docs/openapi.json (`make openapi`; `python -m` this module).

The committed copy freezes the public surface: tests/test_openapi.py fails when the app's schema
drifts from it, so a change to any route shows up in review as a change to this file.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from kandinsky_serve.api.compose import serve_app
from kandinsky_serve.settings import Settings

DEFAULT_PATH = Path(__file__).resolve().parents[3] / "docs" / "openapi.json"


def schema() -> dict[str, Any]:
    # the routes, not the settings, make the schema; the model is only named, never loaded
    app = serve_app(Settings(model="tiny"), run_workers=False)
    return app.openapi()


def render() -> str:
    return json.dumps(schema(), indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else DEFAULT_PATH
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(), encoding="utf-8")
    sys.stdout.write(f"wrote {path}\n")


if __name__ == "__main__":
    main()
