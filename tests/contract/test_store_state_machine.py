"""Every JobStore against one small model of the job state machine, under random sequences of events.

Hypothesis drives a store (a real SQLite file, a real redis-server) through enqueues, leases by two
workers, heartbeats, completions, failures, cancels, releases, clock jumps with reclaims, and expiry.
The model below is written apart from domain/transitions.py, in its own plain terms, so a mistake
there shows up as a disagreement here. After every step each job's state, attempts, times, flags
and lease holder, and counts(), must match the model.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from kandinsky_serve.domain.errors import ErrorCode
from kandinsky_serve.domain.job import Job, JobState, Output
from kandinsky_serve.domain.request import GenerationRequest
from kandinsky_serve.store import JobStore

from . import JOB_BACKENDS, FakeClock, lease_holder, open_job_store

MODELS = ("model-a", "model-b")
WORKERS = ("w1", "w2")
LEASE_SECONDS = 30
MAX_ATTEMPTS = 2
SERVED = st.sampled_from([None, (), ("model-a",), ("model-b",), MODELS])
TERMINAL = {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELED}


@dataclass
class Expected:
    """What the model says one job is."""

    id: str
    model: str
    width: int  # with the model, the job's batch key: nothing else varies
    created: datetime
    state: JobState = JobState.QUEUED
    attempts: int = 0
    started: datetime | None = None
    completed: datetime | None = None
    worker: str | None = None
    expires: datetime | None = None
    cancel_requested: bool = False
    error: ErrorCode | None = None
    outputs: list[str] = field(default_factory=list)
    data_removed: bool = False

    def end(self, state: JobState, now: datetime, error: ErrorCode | None = None) -> None:
        assert self.state not in TERMINAL, "the model would change a terminal job"
        self.state, self.completed, self.error, self.worker, self.expires = state, now, error, None, None


class StoreMachine(RuleBasedStateMachine):
    """One store of one backend; subclasses say which (see `machine_for`)."""

    open_store: Callable[[FakeClock], JobStore]

    jobs = Bundle("jobs")

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.store = type(self).open_store(self.clock)
        self.expected: dict[str, Expected] = {}
        self.final: dict[str, tuple[JobState, datetime | None, ErrorCode | None]] = {}  # terminal, as first seen

    def teardown(self) -> None:
        self.store.close()

    # -- rules ----------------------------------------------------------------------------------

    @rule(target=jobs, model=st.sampled_from(MODELS), width=st.sampled_from([512, 768]))
    def enqueue(self, model: str, width: int) -> str:
        created = datetime(2025, 1, 1, tzinfo=UTC) + timedelta(seconds=len(self.expected))
        request = GenerationRequest(prompt="a fox", model=model, width=width)
        job = Job(owner="alice", request=request, created_at=created)
        assert self.store.enqueue(job) == job
        self.expected[job.id] = Expected(job.id, model, width, created)
        return job.id

    @rule(worker=st.sampled_from(WORKERS), max_batch=st.integers(1, 3), models=SERVED)
    def lease(self, worker: str, max_batch: int, models: tuple[str, ...] | None) -> None:
        queued = sorted(
            (job for job in self.expected.values() if job.state is JobState.QUEUED), key=lambda j: (j.created, j.id)
        )
        served = [job for job in queued if models is None or job.model in models]
        batch = [job for job in queued if served and (job.model, job.width) == (served[0].model, served[0].width)]
        want = batch[:max_batch]

        got = self.store.lease(worker, max_batch=max_batch, lease_seconds=LEASE_SECONDS, models=models)
        assert [job.id for job in got] == [job.id for job in want]
        now = self.clock.now
        for job in want:
            assert job.worker is None, "a job already leased was handed out again"
            job.state, job.attempts, job.worker = JobState.RUNNING, job.attempts + 1, worker
            job.started = job.started or now
            job.expires = now + timedelta(seconds=LEASE_SECONDS)
        for job in got:
            self.check(job)

    @rule(worker=st.sampled_from(WORKERS), ids=st.lists(jobs, max_size=3))
    def heartbeat(self, worker: str, ids: list[str]) -> None:
        held = {i for i in ids if self.held_by(i, worker)}
        beat = self.store.heartbeat(worker, ids, LEASE_SECONDS)
        assert beat.held == held
        assert beat.cancel_requested == {i for i in held if self.expected[i].cancel_requested}
        for i in held:
            self.expected[i].expires = self.clock.now + timedelta(seconds=LEASE_SECONDS)

    @rule(job_id=jobs, worker=st.sampled_from(WORKERS))
    def complete(self, job_id: str, worker: str) -> None:
        held = self.held_by(job_id, worker)
        assert self.store.complete(job_id, worker, [self.output(job_id)]) is held
        if held:
            self.expected[job_id].end(JobState.SUCCEEDED, self.clock.now)
            self.expected[job_id].outputs = [self.output(job_id).key]

    @rule(job_id=jobs, worker=st.sampled_from(WORKERS))
    def fail(self, job_id: str, worker: str) -> None:
        held = self.held_by(job_id, worker)
        assert self.store.fail(job_id, worker, ErrorCode.INTERNAL, "broken") is held
        if held:
            self.expected[job_id].end(JobState.FAILED, self.clock.now, ErrorCode.INTERNAL)

    @rule(job_id=jobs, worker=st.sampled_from(WORKERS))
    def finish_canceled(self, job_id: str, worker: str) -> None:
        held = self.held_by(job_id, worker)
        assert self.store.finish_canceled(job_id, worker) is held
        if held:
            self.expected[job_id].end(JobState.CANCELED, self.clock.now)

    @rule(job_id=jobs, worker=st.sampled_from(WORKERS))
    def release(self, job_id: str, worker: str) -> None:
        held = self.held_by(job_id, worker)
        assert self.store.release(job_id, worker) is held
        job = self.expected[job_id]
        if held and job.cancel_requested:
            job.end(JobState.CANCELED, self.clock.now)
        elif held:  # back in the queue, the attempt not counted
            job.state, job.worker, job.expires, job.attempts = JobState.QUEUED, None, None, job.attempts - 1
            job.started = job.started if job.attempts else None

    @rule(job_id=jobs)
    def cancel(self, job_id: str) -> None:
        job = self.expected[job_id]
        if job.state is JobState.QUEUED:
            job.end(JobState.CANCELED, self.clock.now)
        elif job.state is JobState.RUNNING:
            job.cancel_requested = True
        answer = self.store.cancel(job_id)
        assert answer is not None
        self.check(answer)

    @rule(seconds=st.sampled_from([1, 29, 30, 31, 45]))
    def advance_and_reclaim(self, seconds: int) -> None:
        self.clock.advance(seconds)
        now = self.clock.now
        lost = [
            job
            for job in self.expected.values()
            if job.state is JobState.RUNNING and job.expires is not None and job.expires < now
        ]
        for job in lost:
            if job.cancel_requested:
                job.end(JobState.CANCELED, now)
            elif job.attempts >= MAX_ATTEMPTS:
                job.end(JobState.FAILED, now, ErrorCode.WORKER_LOST)
            else:
                job.state, job.worker, job.expires = JobState.QUEUED, None, None
        changed = self.store.reclaim(max_attempts=MAX_ATTEMPTS)
        assert sorted(job.id for job in changed) == sorted(job.id for job in lost)
        for job in changed:
            self.check(job)

    @rule(age=st.sampled_from([0, 5, 60]))
    def expire(self, age: int) -> None:
        cutoff = self.clock.now - timedelta(seconds=age)
        old = [
            job
            for job in self.expected.values()
            if job.state in TERMINAL and not job.data_removed and job.completed is not None and job.completed < cutoff
        ]
        keys = sorted(key for job in old for key in job.outputs)
        for job in old:
            job.data_removed, job.outputs = True, []
        assert sorted(self.store.expire(cutoff)) == keys

    # -- checks ---------------------------------------------------------------------------------

    @invariant()
    def every_job_is_as_the_model_says(self) -> None:
        for job_id, job in self.expected.items():
            stored = self.store.get(job_id)
            assert stored is not None
            self.check(stored)
            assert lease_holder(self.store, job_id) == job.worker  # one holder at most, and only while running
            if job.state in TERMINAL:
                final = self.final.setdefault(job_id, (stored.state, stored.completed_at, stored.error_code))
                assert (stored.state, stored.completed_at, stored.error_code) == final, "a terminal job changed"

    @invariant()
    def counts_match(self) -> None:
        want = {state: sum(job.state is state for job in self.expected.values()) for state in JobState}
        assert self.store.counts() == want

    def check(self, stored: Job) -> None:
        job = self.expected[stored.id]
        assert stored.state is job.state, stored.id
        assert stored.attempts == job.attempts
        assert stored.started_at == job.started
        assert stored.completed_at == job.completed
        assert stored.cancel_requested is job.cancel_requested
        assert stored.error_code is job.error
        assert [output.key for output in stored.outputs] == job.outputs
        assert stored.data_removed is job.data_removed

    def held_by(self, job_id: str, worker: str) -> bool:
        job = self.expected[job_id]
        return job.state is JobState.RUNNING and job.worker == worker

    @staticmethod
    def output(job_id: str) -> Output:
        return Output(key=f"outputs/{job_id}/0.webp", seed=1, content_type="image/webp")


def machine_for(backend: str, location: Callable[[], str]) -> type[StoreMachine]:
    """A StoreMachine whose every run opens a store of `backend` on fresh data."""

    def open_store(clock: FakeClock) -> JobStore:
        return open_job_store(backend, location(), clock)

    return type(f"StoreMachine_{backend}", (StoreMachine,), {"open_store": staticmethod(open_store)})


@pytest.mark.parametrize("backend", JOB_BACKENDS)
def test_every_store_follows_the_job_state_machine(backend, request, tmp_path_factory):
    if backend == "redis":
        url = request.getfixturevalue("redis_server").url

        def location() -> str:
            return f"{url}#machine-{uuid.uuid4().hex[:12]}"
    else:

        def location() -> str:
            return str(tmp_path_factory.mktemp("machine"))

    run_state_machine_as_test(
        machine_for(backend, location),
        settings=settings(
            max_examples=60,
            stateful_step_count=40,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        ),
    )
