"""Vendor dialects. Each only translates between its vendor's wire format and the canonical job.

A dialect is a module (or package) here with a `router`; importing it also registers how its
errors are rendered. The app includes every one it finds.
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType


def modules() -> list[ModuleType]:
    found = []
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "router"):
            found.append(module)
    return found
