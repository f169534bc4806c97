"""The worker's loop, in-process, on a real SQLite file and the tiny engine."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from kandinsky_serve.blobs.local import LocalBlobStore
from kandinsky_serve.domain import ErrorCode, GenerationRequest, ServeError, Stage
from kandinsky_serve.domain.job import Job, JobState
from kandinsky_serve.settings import Settings
from kandinsky_serve.store.sqlite import SqliteJobStore
from kandinsky_serve.worker.messages import Progress
from kandinsky_serve.worker.runner import Runner
from tests.engine.batching import assert_batching_guarantee

FAST = {"model": "tiny", "steps": 4, "prior_steps": 3, "width": 64, "height": 64, "output_format": "png"}


class CountingEngine:
    def __init__(self, engine):
        self.engine = engine
        self.batches: list[int] = []

    def run_batch(self, requests, on_progress=None, cancels=None, previews=0):
        self.batches.append(len(requests))
        return self.engine.run_batch(requests, on_progress, cancels, previews)


class FailingEngine:
    def __init__(self, error: Exception):
        self.error = error

    def run_batch(self, requests, on_progress=None, cancels=None, previews=0):
        raise self.error


@pytest.fixture
def store(tmp_path):
    store = SqliteJobStore(tmp_path / "jobs.sqlite3")
    yield store
    store.close()


@pytest.fixture
def blobs(tmp_path):
    return LocalBlobStore(tmp_path / "blobs")


def make_runner(store, blobs, engine, on_message=None, **settings) -> Runner:
    config = Settings(max_batch=4, lease_seconds=30, drain_seconds=0, **settings)
    return Runner("worker-1", config, store, blobs, engine, on_message or (lambda message: None))


def enqueue(store, **fields) -> Job:
    return store.enqueue(Job(owner="me", request=GenerationRequest.parse({**FAST, "seed": 1, **fields})))


def png_pixels(blobs, key) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(blobs.get(key).data)), dtype=np.int16)


@pytest.mark.parametrize(("fixture", "model"), [("engine22", "tiny"), ("engine21", "tiny-2.1")])
def test_compatible_jobs_run_as_one_batch_and_each_equals_its_single_run(request, store, blobs, fixture, model):
    # equal within the batching guarantee (tests/engine/batching.py), on the PNGs the worker stored
    tiny = request.getfixturevalue(fixture)
    engine = CountingEngine(tiny)
    prompts = ["a fox", "a whale", "a frog", "a fox"]
    jobs = [enqueue(store, model=model, prompt=p, seed=i) for i, p in enumerate(prompts)]
    assert make_runner(store, blobs, engine).run_once()
    assert engine.batches == [4]
    for job in jobs:
        done = store.get(job.id)
        assert done.state is JobState.SUCCEEDED
        [output] = done.outputs
        single = np.asarray(tiny.run(job.request).images[0], dtype=np.int16)
        assert_batching_guarantee(png_pixels(blobs, output.key), single)


def test_a_worker_leases_only_its_models_jobs_so_models_never_share_a_batch(store, blobs, engine22, engine21):
    # one store, one worker per model (as `serve` runs KS_MODELS=tiny,tiny-2.1), jobs of both interleaved
    jobs = [
        enqueue(store, model=model, prompt=f"a fox {i}", seed=i, steps=2, prior_steps=2)
        for i, model in enumerate(["tiny", "tiny-2.1"] * 2)
    ]
    ran: dict[str, list[list[str | None]]] = {"tiny": [], "tiny-2.1": []}

    class Recording(CountingEngine):
        def __init__(self, engine, model):
            super().__init__(engine)
            self.model = model

        def run_batch(self, requests, on_progress=None, cancels=None, previews=0):
            ran[self.model].append([r.model for r in requests])
            return super().run_batch(requests, on_progress, cancels, previews)

    config = Settings(max_batch=4, lease_seconds=30, drain_seconds=0)
    for model, engine in (("tiny", engine22), ("tiny-2.1", engine21)):
        runner = Runner(f"w-{model}", config, store, blobs, Recording(engine, model), lambda m: None, models=[model])
        assert runner.run_once()
        assert not runner.run_once()  # the other model's jobs are not this worker's to take
    assert ran == {"tiny": [["tiny", "tiny"]], "tiny-2.1": [["tiny-2.1", "tiny-2.1"]]}
    assert all(store.get(job.id).state is JobState.SUCCEEDED for job in jobs)


def test_incompatible_jobs_wait_for_their_own_batch(store, blobs, engine22):
    engine = CountingEngine(engine22)
    first = enqueue(store, width=64)
    second = enqueue(store, width=128)
    runner = make_runner(store, blobs, engine)
    runner.run_once()
    assert store.get(first.id).state is JobState.SUCCEEDED
    assert store.get(second.id).state is JobState.QUEUED
    runner.run_once()
    assert store.get(second.id).state is JobState.SUCCEEDED
    assert engine.batches == [1, 1]


def test_canceling_one_job_mid_batch_lets_the_others_finish(store, blobs, engine22):
    doomed, kept = enqueue(store, prompt="doomed", steps=8), enqueue(store, prompt="kept", steps=8, seed=2)
    runner: Runner

    def on_message(message):
        if isinstance(message, Progress) and message.event.stage is Stage.DECODER and message.event.step == 2:
            store.cancel(doomed.id)  # what the API does ...
            runner.cancel(doomed.id)  # ... and the supervisor relays

    runner = make_runner(store, blobs, engine22, on_message)
    runner.run_once()
    assert store.get(doomed.id).state is JobState.CANCELED
    assert store.get(doomed.id).outputs == []
    assert store.get(kept.id).state is JobState.SUCCEEDED


def test_a_failing_generation_fails_its_jobs_with_one_clear_sentence(store, blobs):
    job = enqueue(store)
    make_runner(store, blobs, FailingEngine(RuntimeError("boom"))).run_once()
    failed = store.get(job.id)
    assert failed.state is JobState.FAILED
    assert failed.error_code is ErrorCode.GENERATION_FAILED
    assert failed.error_message == "The generation failed: RuntimeError: boom"


def test_out_of_memory_fails_that_batch_and_the_worker_goes_on(store, blobs, engine22):
    job = enqueue(store)
    oom = ServeError(ErrorCode.OUT_OF_MEMORY, "The cuda ran out of memory generating 8 image(s) at 2048x2048.")
    make_runner(store, blobs, FailingEngine(oom)).run_once()
    assert store.get(job.id).error_code is ErrorCode.OUT_OF_MEMORY
    later = enqueue(store)
    make_runner(store, blobs, engine22).run_once()
    assert store.get(later.id).state is JobState.SUCCEEDED


def test_draining_past_its_timeout_gives_the_batch_back_to_the_queue(store, blobs, engine22):
    job = enqueue(store, steps=30)
    runner: Runner

    def on_message(message):
        if isinstance(message, Progress) and message.event.stage is Stage.DECODER:
            runner.drain()  # drain_seconds=0: give it back at once

    runner = make_runner(store, blobs, engine22, on_message)
    runner.run_once()
    back = store.get(job.id)
    assert back.state is JobState.QUEUED
    assert back.attempts == 0  # a drain is not a failed attempt


def test_logs_record_the_batch_and_tqdm_progress(store, blobs, engine22):
    job = enqueue(store)
    make_runner(store, blobs, engine22).run_once()
    lines = [e.message for e in store.events(job.id)]
    assert lines[0].startswith("running in a batch of 1 on worker worker-1")
    assert "100%|██████████| 4/4 decoder" in lines


class OutageStore:
    """The real store, unreachable for its first `outages` leases and for every progress write."""

    def __init__(self, store, outages: int):
        self._store = store
        self.outages = outages

    def lease(self, *args, **kwargs):
        if self.outages:
            self.outages -= 1
            raise ConnectionError("the store is restarting")
        return self._store.lease(*args, **kwargs)

    def add_events(self, job_id, events):
        if not events[0].message or not events[0].message.startswith("running"):
            raise ConnectionError("the store is restarting")
        self._store.add_events(job_id, events)

    def __getattr__(self, name):
        return getattr(self._store, name)


def test_the_worker_outlives_a_store_outage(store, blobs, engine22):
    job = enqueue(store)
    flaky = OutageStore(store, outages=2)
    runner: Runner

    def on_message(message):
        if store.get(job.id).state is JobState.SUCCEEDED:
            runner.drain()

    runner = make_runner(flaky, blobs, engine22, on_message)
    done = threading.Thread(target=runner.run_forever, kwargs={"poll_seconds": 0.05, "max_backoff": 0.01})
    done.start()
    done.join(timeout=60)
    assert not done.is_alive()
    assert flaky.outages == 0
    assert store.get(job.id).state is JobState.SUCCEEDED  # progress writes failed; the image did not


class GatedBlobs:
    """Blobs whose writes wait (a while at most) for a signal, noting whether it came."""

    def __init__(self, blobs, signal: threading.Event):
        self._blobs = blobs
        self.signal = signal
        self.came_in_time: list[bool] = []

    def put(self, key, data, content_type):
        self.came_in_time.append(self.signal.wait(timeout=30))
        self._blobs.put(key, data, content_type)

    def __getattr__(self, name):
        return getattr(self._blobs, name)


def test_a_batch_is_stored_while_the_next_one_generates(store, blobs, engine22):
    # the GPU's next batch must not wait for the CPU to encode and store the last one
    first, second = enqueue(store, prompt="a fox"), enqueue(store, prompt="a whale", width=128)
    second_batch_started = threading.Event()

    class SignalingEngine(CountingEngine):
        def run_batch(self, requests, *args, **kwargs):
            if self.batches:
                second_batch_started.set()
            return super().run_batch(requests, *args, **kwargs)

    gated = GatedBlobs(blobs, second_batch_started)
    runner: Runner

    def on_message(message):
        if all(store.get(job.id).state is JobState.SUCCEEDED for job in (first, second)):
            runner.drain()

    runner = make_runner(store, gated, SignalingEngine(engine22), on_message)
    loop = threading.Thread(target=runner.run_forever, kwargs={"poll_seconds": 0.05})
    loop.start()
    loop.join(timeout=120)
    assert not loop.is_alive()
    assert gated.came_in_time[0], "the first batch's images were stored only after the second batch ran"
    assert [store.get(job.id).state for job in (first, second)] == [JobState.SUCCEEDED] * 2
    assert all(blobs.get(output.key) for job in (first, second) for output in store.get(job.id).outputs)
