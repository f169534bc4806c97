"""JobMeta: what the dialect that made a job needs to render it later, typed per dialect.

One of these is stored on every job (`Job.meta`), told apart by `dialect`. Records stored before it
was typed hold a plain dict with the same keys and load into the same models; a dict that names no
dialect (or one this version does not know) loads as `NativeMeta`. Keys a model does not declare are
kept (read, written back), so no record loses what an older or newer version stored.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag


class _Meta(BaseModel):
    model_config = ConfigDict(frozen=True, extra="allow", protected_namespaces=())


class NativeMeta(_Meta):
    """The native API's jobs need nothing more; also a record that names no known dialect."""

    dialect: str = "native"


class SegmindMeta(_Meta):
    dialect: Literal["segmind"] = "segmind"
    slug: str
    sync: bool = False  # made by v1, which answers with the images (no id to poll later)


class EachlabsMeta(_Meta):
    dialect: Literal["eachlabs"] = "eachlabs"
    model: str
    input: dict[str, Any] = Field(default_factory=dict)  # echoed back as sent


class OpenAIMeta(_Meta):
    dialect: Literal["openai"] = "openai"
    model_asked: str | None = None  # the `model` the caller named (any name is accepted)


class ReplicateMeta(_Meta):
    dialect: Literal["replicate"] = "replicate"
    model: str = ""  # owner/name
    version: str = ""
    input: dict[str, Any] = Field(default_factory=dict)  # echoed back, inline images shortened
    base_url: str = ""  # the server as the creating request reached it (webhooks build URLs from it)
    delivery: str = "urls"  # how `output` writes files: urls or data_uris (translate.Delivery)
    deadline: str | None = None  # from Cancel-After, as Replicate writes times
    # records from before the webhook outbox also hold node, webhook, webhook_completed and
    # webhook_events_filter: kept as extra keys, read by nothing (Job.webhooks says it all now)


_KNOWN = ("segmind", "eachlabs", "openai", "replicate")


def _dialect_of(value: Any) -> str:
    dialect = value.get("dialect") if isinstance(value, dict) else getattr(value, "dialect", None)
    return dialect if dialect in _KNOWN else "native"


JobMeta = Annotated[
    Annotated[NativeMeta, Tag("native")]
    | Annotated[SegmindMeta, Tag("segmind")]
    | Annotated[EachlabsMeta, Tag("eachlabs")]
    | Annotated[OpenAIMeta, Tag("openai")]
    | Annotated[ReplicateMeta, Tag("replicate")],
    Discriminator(_dialect_of),
]
