"""Model ids users can name, what each one is, and the checks that depend on the model family.

A spec is cheap: nothing is loaded until `make_source()` is called, so an API node can validate
requests against a model it does not run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kandinsky_serve.domain.errors import invalid
from kandinsky_serve.domain.request import GenerationRequest, Task
from kandinsky_serve.engine import schedulers
from kandinsky_serve.engine.sources import Family, WeightsSource

_TASKS = {
    Family.K22: frozenset(Task),
    # 2.1 has no ControlNet checkpoint
    Family.K21: frozenset(Task) - {Task.CONTROLNET},
}


@dataclass(frozen=True)
class ModelSpec:
    id: str
    family: Family
    description: str
    make_source: Callable[[], WeightsSource]

    @property
    def tasks(self) -> frozenset[Task]:
        return _TASKS[self.family]

    def check(self, request: GenerationRequest) -> None:
        """Raises ServeError(invalid_input) naming the field the family cannot serve."""
        if request.task not in self.tasks:
            offered = ", ".join(sorted(t.value for t in self.tasks))
            raise invalid("task", f"{request.task.value} is not available for {self.id}; choose one of {offered}")
        schedulers.resolve(self.family, request.scheduler)


def _hub(family: Family) -> Callable[[], WeightsSource]:
    def make() -> WeightsSource:
        from kandinsky_serve.engine.hub import HubSource

        return HubSource(family)

    return make


def _tiny(family: Family) -> Callable[[], WeightsSource]:
    def make() -> WeightsSource:
        from kandinsky_serve.engine.tiny import TinySource

        return TinySource(family)

    return make


def _random(family: Family) -> Callable[[], WeightsSource]:
    def make() -> WeightsSource:
        from kandinsky_serve.engine.random_weights import RandomSource

        return RandomSource(family)

    return make


BUILTIN: dict[str, ModelSpec] = {
    spec.id: spec
    for spec in (
        ModelSpec("kandinsky-2.2", Family.K22, "Kandinsky 2.2 (kandinsky-community weights)", _hub(Family.K22)),
        ModelSpec("kandinsky-2.1", Family.K21, "Kandinsky 2.1 (kandinsky-community weights)", _hub(Family.K21)),
        ModelSpec("tiny", Family.K22, "tiny random Kandinsky 2.2 for tests and smoke runs", _tiny(Family.K22)),
        ModelSpec("tiny-2.1", Family.K21, "tiny random Kandinsky 2.1", _tiny(Family.K21)),
        ModelSpec(
            "random-2.2", Family.K22, "full-size Kandinsky 2.2 with random weights (benchmarks)", _random(Family.K22)
        ),
    )
}

_ALIASES = {"kandinsky2.2": "kandinsky-2.2", "kandinsky-2-2": "kandinsky-2.2", "2.2": "kandinsky-2.2"} | {
    "kandinsky2.1": "kandinsky-2.1",
    "kandinsky-2-1": "kandinsky-2.1",
    "2.1": "kandinsky-2.1",
    "tiny-2.2": "tiny",
}


def resolve_model(model_id: str) -> ModelSpec:
    """A built-in id, an alias, or a local folder in the diffusers layout (see engine.hub)."""
    name = _ALIASES.get(model_id.lower(), model_id.lower())
    if name in BUILTIN:
        return BUILTIN[name]
    path = Path(model_id).expanduser()
    if path.is_dir():
        from kandinsky_serve.engine.hub import HubSource

        source = HubSource.from_folder(path)
        return ModelSpec(str(path), source.family, f"local weights in {path}", lambda: source)
    choices = ", ".join(BUILTIN)
    raise invalid("model", f"unknown model {model_id!r}; choose one of {choices}, or a local weights folder")
