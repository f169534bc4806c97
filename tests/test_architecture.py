"""The layering, checked on the source: imports parsed with `ast`, nothing imported or run.

- no import cycles among module-level imports, type-only ones (`if TYPE_CHECKING:`) included: a
  module and what it imports read one way; an import inside a function is left out (a deliberate
  late import, which runs on call);
- the job service depends on no HTTP module, not even for types (api -> service, never back);
- api/ reaches the store, blobs, notifier, workers and engine only through the runtime and the
  use cases (JobService, Deliveries): no module under api/ imports store/, blobs/, engine/, worker/,
  bus or notify, and none reads a `.store`, `.blobs` or `.notifier` attribute;
- every dialect package's `DIALECT` is in the one list the app is composed from;
- no module in src/ is longer than MAX_LINES.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import kandinsky_serve

ROOT = Path(kandinsky_serve.__file__).parent
MAX_LINES = 400
# what api/ may not import: it asks the runtime (built in runtime.py) and the JobService instead
BEHIND_THE_SERVICE = ("store", "blobs", "engine", "worker", "bus", "notify")
HIDDEN_PARTS = {"store", "blobs", "notifier", "_store", "_blobs", "_notifier"}


def _modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _top_level(tree: ast.Module, typing: bool = False) -> Iterator[ast.stmt]:
    """The statements at module level, into try/if bodies; `if TYPE_CHECKING:` ones only with `typing`."""
    for node in tree.body:
        if isinstance(node, ast.If):
            if "TYPE_CHECKING" in ast.unparse(node.test) and not typing:
                continue
            yield from _top_level(ast.Module(body=[*node.body, *node.orelse], type_ignores=[]), typing)
        elif isinstance(node, ast.Try):
            body = [*node.body, *node.orelse, *node.finalbody]
            yield from _top_level(ast.Module(body=body, type_ignores=[]), typing)
        else:
            yield node


def _imported(name: str, path: Path, statements: Iterator[ast.stmt] | list[ast.stmt]) -> set[str]:
    """Our modules that these statements import (`from pkg import module` names the module, and
    `from pkg import name` the package)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    targets: set[str] = set()
    for node in statements:
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, *([node.module] if node.module else [])])
            for alias in node.names:
                targets.add(f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base)
    ours = set()
    for target in targets:
        while target and target not in MODULES:
            target = target.rpartition(".")[0]
        if target and target != name:
            ours.add(target)
    return ours


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"))


def _graph() -> dict[str, set[str]]:
    return {name: _imported(name, path, _top_level(_tree(path), typing=True)) for name, path in MODULES.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, edges = work[-1]
            for child in edges:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == [["a", "b", "c"]]


def test_no_import_cycles() -> None:
    assert _cycles(_graph()) == []


def test_the_service_depends_on_no_http_module() -> None:
    path = MODULES["kandinsky_serve.service"]
    everywhere = list(ast.walk(_tree(path)))  # TYPE_CHECKING and function-level imports too
    imported = _imported("kandinsky_serve.service", path, [n for n in everywhere if isinstance(n, ast.stmt)])
    assert not [name for name in imported if name.startswith("kandinsky_serve.api")]


def _api_files() -> Iterator[tuple[str, Path]]:
    for name, path in sorted(MODULES.items()):
        if name.startswith("kandinsky_serve.api"):
            yield path.relative_to(ROOT).as_posix(), path


def test_api_imports_nothing_behind_the_service() -> None:
    behind = tuple(f"kandinsky_serve.{part}" for part in BEHIND_THE_SERVICE)
    found = {}
    for relative, path in _api_files():
        statements = [n for n in ast.walk(_tree(path)) if isinstance(n, ast.stmt)]
        name = next(n for n, p in MODULES.items() if p == path)
        bad = sorted(m for m in _imported(name, path, statements) if m.startswith(behind))
        if bad:
            found[relative] = bad
    assert found == {}


def test_api_reads_no_store_blobs_or_notifier() -> None:
    readers = {
        relative
        for relative, path in _api_files()
        if any(isinstance(node, ast.Attribute) and node.attr in HIDDEN_PARTS for node in ast.walk(_tree(path)))
    }
    assert readers == set()


def test_every_dialect_is_in_the_list_the_app_is_composed_from() -> None:
    from kandinsky_serve.api import dialects

    package = dialects.__path__
    exported = [importlib.import_module(f"{dialects.__name__}.{info.name}") for info in pkgutil.iter_modules(package)]
    with_dialect = [module.DIALECT for module in exported if hasattr(module, "DIALECT")]
    assert len(with_dialect) == len(exported)  # each module here is a dialect and exports one
    assert sorted(map(id, with_dialect)) == sorted(map(id, dialects.ALL))
    assert len({d.name for d in dialects.ALL}) == len(dialects.ALL)


def test_modules_stay_small() -> None:
    lengths = {name: path.read_text(encoding="utf-8").count("\n") for name, path in MODULES.items()}
    assert {name: n for name, n in lengths.items() if n > MAX_LINES} == {}, "split these by concern"
