"""Job.meta is typed per dialect, and records stored when it was a plain dict still load."""

from __future__ import annotations

import json

from kandinsky_serve.domain.job import Job
from kandinsky_serve.domain.meta import EachlabsMeta, NativeMeta, OpenAIMeta, ReplicateMeta, SegmindMeta
from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.store.codec import job_json, load_job

# meta as the dialects wrote it before it was typed (keys and values copied from their code)
OLD_RECORDS = {
    "segmind": ({"dialect": "segmind", "slug": "kandinsky2.2-txt2img", "sync": True}, SegmindMeta),
    "eachlabs": ({"dialect": "eachlabs", "model": "kandinsky-2.2", "input": {"prompt": "x"}}, EachlabsMeta),
    "openai": ({"dialect": "openai", "model_asked": "dall-e-3"}, OpenAIMeta),
    "replicate": (
        {
            "dialect": "replicate",
            "model": "ai-forever/kandinsky-2.2",
            "version": "ad9d7879",
            "input": {"prompt": "x"},
            "base_url": "http://127.0.0.1:8000",
            "node": "host-1-abc",
            "delivery": "data_uris",
            "webhook": "https://example.com/hook",
            "webhook_events_filter": ["completed"],
            "deadline": "2026-01-01T00:00:00.000000Z",
        },
        ReplicateMeta,
    ),
    "native": ({}, NativeMeta),
}


def _stored(meta: dict[str, object]) -> str:
    """A job record as a store kept it before meta was typed: meta a plain JSON object."""
    job = Job(owner="alice", request=GenerationRequest(prompt="x"))
    record = json.loads(job_json(job))
    return json.dumps({**record, "meta": meta})


def test_old_records_load_into_their_dialects_model_and_keep_every_key() -> None:
    for dialect, (meta, model) in OLD_RECORDS.items():
        job = load_job(_stored(meta))
        assert type(job.meta) is model, dialect
        assert {k: v for k, v in job.meta.model_dump().items() if k in meta} == meta
        again = load_job(job_json(job))  # written back as typed, read again: the same
        assert again.meta == job.meta


def test_fields_are_typed() -> None:
    meta = load_job(_stored(OLD_RECORDS["replicate"][0])).meta
    assert isinstance(meta, ReplicateMeta)
    assert (meta.delivery, meta.base_url, meta.version) == ("data_uris", "http://127.0.0.1:8000", "ad9d7879")
    # the keys of before the webhook outbox are kept, untyped: Job.webhooks is what is read now
    assert meta.model_extra == {
        "node": "host-1-abc",
        "webhook": "https://example.com/hook",
        "webhook_events_filter": ["completed"],
    }


def test_a_record_of_an_unknown_dialect_or_none_loads_as_native_and_keeps_its_keys() -> None:
    for meta in ({"dialect": "from-the-future", "x": 1}, {"version": "abc", "webhook": None}):
        job = load_job(_stored(meta))
        assert isinstance(job.meta, NativeMeta)
        assert json.loads(job_json(job))["meta"] == {"dialect": "native", **meta}


def test_a_new_job_has_native_meta_and_dicts_are_validated() -> None:
    assert Job(owner="a", request=GenerationRequest(prompt="x")).meta == NativeMeta()
    job = Job(owner="a", request=GenerationRequest(prompt="x"), meta={"dialect": "segmind", "slug": "s"})
    assert job.meta == SegmindMeta(slug="s")
