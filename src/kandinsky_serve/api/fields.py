"""FieldMap: one dialect's names for the canonical GenerationRequest fields, read both ways.

A dialect declares its map once, as {wire name: canonical name}, and uses it to translate a body
into the canonical request and to name, in an error, the field the caller sent rather than the
canonical one (`samples` for `num_images`, `input.num_outputs` at Replicate).

It lives beside `dialect.py`, not under `dialects/`: every module there is a dialect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from kandinsky_serve.domain.errors import ServeError


@dataclass(frozen=True)
class FieldMap:
    """`names`: wire name -> canonical field, one to one, so that each canonical field has one wire
    name to be called by.

    `parts`: wire parameters that carry only a part of canonical fields, or a part of one, so no
    canonical field is theirs alone (OpenAI's `size` -> width and height; Segmind's `image_weights`
    -> the weights in fuse). An error about such a field keeps its canonical name after the
    parameter's: "size: width: ...".

    `prefix`: how the wire writes a name in errors (`input.` where inputs are nested).
    `aliases`: other spellings of a wire name, named in errors by that name (OpenAI's `image[]`).
    `labelled`: the wire shows the field apart from the message (Replicate's `invalid_fields`,
    OpenAI's `param`), so a renamed message always reads "wire: description"; without it the message
    is one sentence, and only its leading name is swapped ("hint is required..." -> "image is...").
    """

    names: Mapping[str, str]
    parts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    prefix: str = ""
    aliases: Mapping[str, str] = field(default_factory=dict)
    labelled: bool = False
    _whole: Mapping[str, str] = field(init=False, repr=False, compare=False)  # canonical -> wire

    def __post_init__(self) -> None:
        whole = {canonical: wire for wire, canonical in self.names.items()}
        if len(whole) != len(self.names):
            raise ValueError(f"two wire names for one canonical field in {dict(self.names)}")
        if both := set(self.names) & set(self.parts):
            raise ValueError(f"{sorted(both)} are both whole fields and parts")
        object.__setattr__(self, "_whole", whole)

    @property
    def accepted(self) -> frozenset[str]:
        """Every wire name that reaches a canonical field, whole or in part."""
        return frozenset(self.names) | frozenset(self.parts)

    def canonical(self, wire: str) -> str | None:
        """The canonical field a wire name is; None for a part or a name of no canonical field."""
        return self.names.get(wire)

    def wire(self, canonical: str) -> str | None:
        """The wire name a canonical field is sent as (the parameter it is a part of, where it is
        only a part of one); None when this dialect does not take it."""
        if canonical in self._whole:
            return self._whole[canonical]
        return next((wire for wire, fields in self.parts.items() if canonical in fields), None)

    def spelled(self, name: str) -> str:
        """How an error names a field: a canonical field (or an alias) as the wire writes it;
        any other name, already the caller's, as it is."""
        wire = self.wire(name) or self.aliases.get(name)
        return name if wire is None else self.prefix + wire

    def renamed(self, error: ServeError) -> ServeError:
        """The error naming the field the caller sent, in its field and in its message."""
        name = error.field
        if name is None or (spelled := self.spelled(name)) == name:
            return error
        message = error.message
        if name not in self._whole and name not in self.aliases:  # only a part of `spelled`
            message = f"{spelled}: {message}"
        elif self.labelled:
            lead = f"{name}:"
            message = spelled + message[len(name) :] if message.startswith(lead) else f"{spelled}: {message}"
        elif message.startswith(name):
            message = spelled + message[len(name) :]
        return ServeError(error.code, message, field=spelled, retry_after=error.retry_after)
