"""The lock file is what every install uses: it must agree with pyproject.toml (scripts/check_lock.py)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parent.parent


def _checker() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_lock", ROOT / "scripts" / "check_lock.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PYPROJECT = """
[project]
dependencies = ["torch==2.13.0", "redis>=5"]
[project.optional-dependencies]
dev = ["mypy"]
"""

LOCK = """
async-timeout==5.0.1
    # via redis
mypy==2.4.1
    # via kandinsky-serve (pyproject.toml)
redis==8.2.0
    # via kandinsky-serve (pyproject.toml)
torch==2.13.0
    # via kandinsky-serve (pyproject.toml)
"""


def test_the_committed_lock_agrees_with_pyproject():
    checker = _checker()
    lock = (ROOT / "requirements.lock").read_text()
    assert checker.problems((ROOT / "pyproject.toml").read_text(), lock) == []


def test_a_lock_that_matches_has_no_problems():
    assert _checker().problems(PYPROJECT, LOCK) == []


def test_a_dependency_added_to_pyproject_but_not_locked_is_a_problem():
    pyproject = PYPROJECT.replace('"redis>=5"', '"redis>=5", "pillow>=11"')
    assert _checker().problems(pyproject, LOCK) == ["pillow>=11 is in pyproject.toml but not in the lock"]


def test_a_specifier_the_pin_no_longer_meets_is_a_problem():
    pyproject = PYPROJECT.replace('"redis>=5"', '"redis<8"')
    assert _checker().problems(pyproject, LOCK) == ["redis<8 is in pyproject.toml but the lock pins redis==8.2.0"]


def test_a_pin_nothing_needs_any_more_is_a_problem():
    pyproject = PYPROJECT.replace(', "redis>=5"', "")
    found = _checker().problems(pyproject, LOCK)
    assert "redis is locked but nothing in pyproject.toml needs it any more" in found
    assert "async-timeout is locked but nothing in pyproject.toml needs it any more" not in found  # redis is pinned


def test_a_local_build_pin_is_a_problem():
    lock = LOCK.replace("torch==2.13.0", "torch==2.13.0+cpu")
    assert _checker().problems(PYPROJECT, lock) == ["torch==2.13.0+cpu names a local build; pin torch==2.13.0"]
