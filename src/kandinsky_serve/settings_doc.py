"""Renders docs/configuration.md from the Settings object, so the reference cannot drift.

python -m kandinsky_serve.settings_doc > docs/configuration.md
"""

from __future__ import annotations

import json
import sys

from pydantic_core import PydanticUndefined

from kandinsky_serve.settings import Settings

# settings that `kandinsky-serve serve` also takes as flags (`--model`, repeated, sets the list of models)
_FLAGS = {name: f"`--{name.replace('_', '-')}`" for name in ("host", "port", "data_dir", "workers", "device")} | {
    "models": "`--model` (repeatable)"
}


def render() -> str:
    lines = [
        "# Configuration",
        "",
        "Every setting is an environment variable (`KS_` + its name in capitals; a `.env` file in the working",
        "directory is read too). `kandinsky-serve serve` also takes the common ones as flags, which win over",
        "the environment. Generated from `kandinsky_serve.settings.Settings` by",
        "`python -m kandinsky_serve.settings_doc`; a test fails when this file is out of date.",
        "",
        "| variable | flag | default | meaning |",
        "|---|---|---|---|",
    ]
    for name, info in Settings.model_fields.items():
        default = info.default
        shown = "(none)" if default is None or default is PydanticUndefined else json.dumps(default, default=str)
        flag = _FLAGS.get(name, "")
        lines.append(f"| `KS_{name.upper()}` | {flag} | `{shown}` | {info.description or ''} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.stdout.write(render())
