"""Admission: credits, jobs in flight and queue depth are checked atomically with the enqueue."""

from __future__ import annotations

import pytest

from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.store import Admission
from tests.contract import W1, lease_one, output


def refused(store, job, admission) -> ErrorCode:
    with pytest.raises(ServeError) as info:
        store.enqueue(job, admission)
    assert store.get(job.id) is None
    return info.value.code


def test_a_job_beyond_the_budget_is_refused(store, make_job):
    budget = Admission(budget=2.5)
    store.enqueue(make_job(owner="bob").model_copy(update={"price": 1.0}), budget)
    store.enqueue(make_job(owner="bob").model_copy(update={"price": 1.0}), budget)
    assert store.spent("bob") == 2.0
    assert refused(store, make_job(owner="bob").model_copy(update={"price": 1.0}), budget) is (
        ErrorCode.INSUFFICIENT_CREDITS
    )
    assert store.spent("alice") == 0.0


def test_failed_and_canceled_jobs_cost_nothing(store, make_job):
    failing = store.enqueue(make_job(owner="bob").model_copy(update={"price": 1.0}))
    canceled = store.enqueue(make_job(owner="bob").model_copy(update={"price": 1.0}))
    succeeding = store.enqueue(make_job(owner="bob").model_copy(update={"price": 1.0}))
    assert store.spent("bob") == 3.0
    store.cancel(canceled.id)
    leased = lease_one(store)
    assert leased.id == failing.id
    store.fail(failing.id, W1, ErrorCode.GENERATION_FAILED, "boom")
    store.complete(lease_one(store).id, W1, [output(succeeding.id)])
    assert store.spent("bob") == 1.0


def test_an_owner_may_have_only_so_many_jobs_in_flight(store, make_job):
    limit = Admission(max_active=2)
    store.enqueue(make_job(owner="bob"), limit)
    store.enqueue(make_job(owner="bob"), limit)
    assert refused(store, make_job(owner="bob"), limit) is ErrorCode.RATE_LIMITED
    store.enqueue(make_job(owner="alice"), limit)  # others are not affected


def test_a_full_queue_refuses_new_work(store, make_job):
    full = Admission(max_queued=2)
    store.enqueue(make_job(), full)
    store.enqueue(make_job(), full)
    assert refused(store, make_job(), full) is ErrorCode.OVERLOADED
    lease_one(store)  # one leaves the queue
    store.enqueue(make_job(), full)
