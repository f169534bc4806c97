"""The `kandinsky-serve` Typer app, and how a ServeError becomes one line on stderr."""

from __future__ import annotations

import typer

from kandinsky_serve.domain.errors import ErrorCode, ServeError

app = typer.Typer(
    help="Self-hosted Kandinsky 2.2 / 2.1 image generation.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

# request fields as the CLI spells them, so an error names the option the user typed
_OPTION_NAMES = {
    "prompt": "PROMPT",
    "negative_prompt": "--negative-prompt",
    "num_images": "--num-images",
    "prior_steps": "--prior-steps",
    "guidance_scale": "--guidance",
    "prior_guidance_scale": "--prior-guidance",
    "output_format": "--format",
    "output_quality": "--quality",
}


def fail(error: ServeError) -> typer.Exit:
    message = error.message
    if error.field:
        option = _OPTION_NAMES.get(error.field, "--" + error.field.split(".")[0].replace("_", "-"))
        message = option + message[len(error.field) :] if message.startswith(error.field) else message
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(2 if error.code is ErrorCode.INVALID_INPUT else 1)


def main() -> None:
    app()
