"""The model catalogue: the models a deployment can serve, their families, and what each family can do.

Pure Python (no torch, no diffusers), so that an API process validates requests for every model it
serves without loading, or even importing, the code that runs them. `engine.registry` maps an entry's
weights source (by name) to what loads it; `engine.schedulers` maps the scheduler names offered here
to diffusers' classes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from kandinsky_serve.domain.errors import ErrorCode, ServeError, invalid
from kandinsky_serve.domain.request import GenerationRequest, Task


class Family(StrEnum):
    K22 = "2.2"
    K21 = "2.1"


TASKS: dict[Family, frozenset[Task]] = {
    Family.K22: frozenset(Task),
    # 2.1 has no ControlNet checkpoint
    Family.K21: frozenset(Task) - {Task.CONTROLNET},
}

# --- decoder schedulers, by name (engine.schedulers builds each) ------------------------------------

SCHEDULER_NAMES = ("DDPM", "DDIM", "DPM++ 2M", "DPM++ 2M Karras", "UniPC", "PLMS", "Euler", "Euler a", "P-Sampler")

OFFERED: dict[Family, tuple[str, ...]] = {
    Family.K22: ("DDPM", "DDIM", "DPM++ 2M", "DPM++ 2M Karras", "UniPC", "Euler", "Euler a", "P-Sampler"),
    # 2.1: Segmind's DDIM / P-Sampler, plus what its third-party clients send (PLMS)
    Family.K21: ("DDIM", "P-Sampler", "DDPM", "PLMS", "DPM++ 2M", "UniPC"),
}
DEFAULT: dict[Family, str] = {Family.K22: "DDPM", Family.K21: "DDIM"}

_SCHEDULER_ALIASES = {
    "dpmsolvermultistep": "DPM++ 2M",
    "dpmpp2m": "DPM++ 2M",
    "kdpm2m": "DPM++ 2M",
    "dpmpp2mkarras": "DPM++ 2M Karras",
    "unipcmultistep": "UniPC",
    "pndm": "PLMS",
    "eulerdiscrete": "Euler",
    "k_euler": "Euler",
    "eulerancestral": "Euler a",
    "eulerancestraldiscrete": "Euler a",
    "k_euler_ancestral": "Euler a",
    "psampler": "P-Sampler",
    "p_sampler": "P-Sampler",
    "ddim_sampler": "DDIM",
    "plms_sampler": "PLMS",
}


def _key(name: str) -> str:
    return re.sub(r"[\s\-_+]", "", name.lower())


_BY_KEY = {_key(name): name for name in SCHEDULER_NAMES} | {_key(a): name for a, name in _SCHEDULER_ALIASES.items()}


def scheduler_name(family: Family, name: str | None) -> str:
    """The canonical name of the scheduler a request asks for, by any common spelling (the family's
    default for None); a ServeError naming the choices when the family does not offer it."""
    if name is None:
        return DEFAULT[family]
    canonical = _BY_KEY.get(_key(name))
    if canonical is None or canonical not in OFFERED[family]:
        choices = ", ".join(OFFERED[family])
        raise invalid("scheduler", f"{name!r} is not offered for Kandinsky {family.value}; choose one of {choices}")
    return canonical


# --- models ------------------------------------------------------------------------------------------


class Weights(StrEnum):
    """Where an entry's weights come from; engine.registry has the loader for each."""

    HUB = "hub"  # the kandinsky-community repos (downloaded once into the Hugging Face cache)
    TINY = "tiny"  # built-in tiny random models, for tests and smoke runs
    RANDOM = "random"  # full-size architecture, random weights (benchmarks)
    FOLDER = "folder"  # a local folder holding copies of the hub repos


@dataclass(frozen=True)
class ModelEntry:
    id: str
    family: Family
    description: str
    weights: Weights
    aliases: tuple[str, ...] = ()
    path: Path | None = None  # the folder, for Weights.FOLDER

    @property
    def tasks(self) -> frozenset[Task]:
        return TASKS[self.family]

    @property
    def names(self) -> tuple[str, ...]:
        """Every name a request may use for this model."""
        return (self.id, *self.aliases)

    def check(self, request: GenerationRequest) -> None:
        """Raises ServeError(invalid_input) naming the field the family cannot serve."""
        if request.task not in self.tasks:
            offered = ", ".join(sorted(t.value for t in self.tasks))
            raise invalid("task", f"{request.task.value} is not available for {self.id}; choose one of {offered}")
        scheduler_name(self.family, request.scheduler)


CATALOGUE: dict[str, ModelEntry] = {
    entry.id: entry
    for entry in (
        ModelEntry(
            "kandinsky-2.2",
            Family.K22,
            "Kandinsky 2.2 (kandinsky-community weights)",
            Weights.HUB,
            ("kandinsky2.2", "kandinsky-2-2", "2.2"),
        ),
        ModelEntry(
            "kandinsky-2.1",
            Family.K21,
            "Kandinsky 2.1 (kandinsky-community weights)",
            Weights.HUB,
            ("kandinsky2.1", "kandinsky-2-1", "2.1"),
        ),
        ModelEntry(
            "tiny", Family.K22, "tiny random Kandinsky 2.2 for tests and smoke runs", Weights.TINY, ("tiny-2.2",)
        ),
        ModelEntry("tiny-2.1", Family.K21, "tiny random Kandinsky 2.1", Weights.TINY),
        ModelEntry(
            "random-2.2", Family.K22, "full-size Kandinsky 2.2 with random weights (benchmarks)", Weights.RANDOM
        ),
    )
}

_BY_NAME = {name.lower(): entry for entry in CATALOGUE.values() for name in entry.names}


def find(name: str) -> ModelEntry | None:
    """The built-in model a name (id or alias, any case) means; None for any other name."""
    return _BY_NAME.get(name.lower())


def resolve(model_id: str) -> ModelEntry:
    """A built-in id, an alias, or a local folder in the diffusers layout (see engine.hub)."""
    entry = find(model_id)
    if entry is not None:
        return entry
    path = Path(model_id).expanduser()
    if path.is_dir():
        family = folder_family(path)
        return ModelEntry(
            str(path), family, f"local Kandinsky {family.value} weights in {path}", Weights.FOLDER, (), path
        )
    choices = ", ".join(CATALOGUE)
    raise invalid("model", f"unknown model {model_id!r}; choose one of {choices}, or a local weights folder")


# A local folder holds one folder per hub repo, named like the repo; the prior's says which family it
# is (2.2 when both are there). engine.hub.HubSource.from_folder asks here, and checks the rest.
PRIOR_FOLDERS = {Family.K22: "kandinsky-2-2-prior", Family.K21: "kandinsky-2-1-prior"}


def folder_family(root: Path) -> Family:
    for family, folder in PRIOR_FOLDERS.items():
        if (root / folder).is_dir():
            return family
    raise ServeError(
        ErrorCode.MODEL_UNAVAILABLE,
        f"{root} is not a Kandinsky weights folder: it needs one folder per hub repo, named like the "
        "repo (kandinsky-2-2-prior/ and kandinsky-2-2-decoder/, or kandinsky-2-1-prior/ and kandinsky-2-1/).",
    )


def served(names: Sequence[str]) -> tuple[ModelEntry, ...]:
    """The entries of the models a deployment serves (KS_MODELS), the default first, one per id."""
    entries = [resolve(name) for name in names]
    return tuple({entry.id: entry for entry in entries}.values())
