"""Vendor dialects. Each only translates between its vendor's wire format and the canonical job,
and exports one `DIALECT` (api/dialect.py); the app serves the ones listed in `ALL`.
"""

from __future__ import annotations

from kandinsky_serve.api.dialect import Dialect
from kandinsky_serve.api.dialects import eachlabs, openai, replicate, segmind, web

# in this order: routes are matched (and documented) in the order they are included
ALL: tuple[Dialect, ...] = (eachlabs.DIALECT, openai.DIALECT, replicate.DIALECT, segmind.DIALECT, web.DIALECT)
