"""A catalogue entry (domain.catalogue) with the code that loads its weights.

The catalogue says which models exist and where their weights come from, by name; this module maps
each of those names to a WeightsSource factory. A spec is cheap: nothing is loaded until
`make_source()` is called.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from kandinsky_serve.domain.catalogue import ModelEntry, Weights, resolve
from kandinsky_serve.domain.request import GenerationRequest, Task
from kandinsky_serve.engine.sources import Family, WeightsSource


@dataclass(frozen=True)
class ModelSpec:
    entry: ModelEntry
    make_source: Callable[[], WeightsSource]

    @property
    def id(self) -> str:
        return self.entry.id

    @property
    def family(self) -> Family:
        return self.entry.family

    @property
    def description(self) -> str:
        return self.entry.description

    @property
    def tasks(self) -> frozenset[Task]:
        return self.entry.tasks

    def check(self, request: GenerationRequest) -> None:
        """Raises ServeError(invalid_input) naming the field the family cannot serve."""
        self.entry.check(request)


def _hub(entry: ModelEntry) -> WeightsSource:
    from kandinsky_serve.engine.hub import HubSource

    if entry.path is not None:
        return HubSource.from_folder(entry.path, entry.family)
    return HubSource(entry.family)


def _tiny(entry: ModelEntry) -> WeightsSource:
    from kandinsky_serve.engine.tiny import TinySource

    return TinySource(entry.family)


def _random(entry: ModelEntry) -> WeightsSource:
    from kandinsky_serve.engine.random_weights import RandomSource

    return RandomSource(entry.family)


_FACTORIES: dict[Weights, Callable[[ModelEntry], WeightsSource]] = {
    Weights.HUB: _hub,
    Weights.FOLDER: _hub,
    Weights.TINY: _tiny,
    Weights.RANDOM: _random,
}


def spec_for(entry: ModelEntry) -> ModelSpec:
    make = _FACTORIES[entry.weights]
    if entry.weights is Weights.FOLDER:
        # a folder is checked whole now (every part present), so a bad one is an error before anything starts
        source = make(entry)
        return ModelSpec(entry, lambda: source)
    return ModelSpec(entry, lambda: make(entry))


def resolve_model(model_id: str) -> ModelSpec:
    """A built-in id, an alias, or a local folder in the diffusers layout (see engine.hub)."""
    return spec_for(resolve(model_id))
