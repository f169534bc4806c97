"""OpenAI's Images API (reference §5), wire-compatible with the openai SDK: change the base URL only.

`images.generate` and `images.edit` work as they do against OpenAI; errors come in OpenAI's
envelope with its statuses, so the SDK raises its usual exceptions and retries as it would there.
"""

from __future__ import annotations

from kandinsky_serve.api.dialect import Dialect
from kandinsky_serve.api.dialects.openai.problems import render_error
from kandinsky_serve.api.dialects.openai.router import router

DIALECT = Dialect("openai", router, render_error)

__all__ = ["DIALECT"]
