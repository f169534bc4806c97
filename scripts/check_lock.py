"""Fails when requirements.lock and pyproject.toml disagree, so CI never installs a stale lock.

Agreement means: every requirement of the project (runtime and the `dev` extra) is pinned in the lock
to a version its specifier admits, every pin in the lock is still wanted (by the project or by
another locked package, as pip-compile's `# via` lines record), and no pin names a local build such
as `+cpu` (the bare pin is what takes the CUDA build of torch on a GPU machine).
Run `make lock` to bring the lock up to date.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "kandinsky-serve"


def read_lock(text: str) -> tuple[dict[str, Version], dict[str, set[str]]]:
    """The pins, and for each pin the names that pip-compile says want it."""
    pins: dict[str, Version] = {}
    wanted_by: dict[str, set[str]] = {}
    current: str | None = None
    for line in text.splitlines():
        if match := re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line.strip()):
            current = canonicalize_name(match[1])
            pins[current] = Version(match[2])
            wanted_by[current] = set()
        elif current and (via := re.fullmatch(r"#\s+(?:via\s+)?(\S+)(?:\s+\(.*\))?", line.strip())):
            if via[1] not in ("via", "-r"):
                wanted_by[current].add(canonicalize_name(via[1]))
    return pins, wanted_by


def problems(pyproject: str, lock: str) -> list[str]:
    project = tomllib.loads(pyproject)["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for r in project["optional-dependencies"]["dev"]]
    pins, wanted_by = read_lock(lock)
    found: list[str] = []
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        if name not in pins:
            found.append(f"{requirement} is in pyproject.toml but not in the lock")
        elif not requirement.specifier.contains(pins[name], prereleases=True):
            found.append(f"{requirement} is in pyproject.toml but the lock pins {name}=={pins[name]}")
    direct = {canonicalize_name(r.name) for r in requirements}
    for name, version in pins.items():
        if version.local:
            found.append(f"{name}=={version} names a local build; pin {name}=={version.public}")
        if name not in direct and not (wanted_by[name] - {canonicalize_name(PROJECT)}) & set(pins):
            found.append(f"{name} is locked but nothing in pyproject.toml needs it any more")
    return found


def main() -> int:
    found = problems((ROOT / "pyproject.toml").read_text(), (ROOT / "requirements.lock").read_text())
    for problem in found:
        print(f"requirements.lock: {problem}", file=sys.stderr)
    if found:
        print("requirements.lock is stale: run `make lock` and commit it.", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
