"""The webhook outbox and the jobs' deadlines, the same on every JobStore backend.

Deliveries are written by the change of a job that calls for them (so by whichever process makes
that change: the worker's completion, the janitor's reclaim, a caller's cancel); senders claim them
for a while, and a claim that runs out passes the delivery on to the next sender.
"""

from __future__ import annotations

from datetime import timedelta

from kandinsky_serve.domain.errors import ErrorCode
from kandinsky_serve.domain.job import Job, JobState, Webhook, WebhookEvent
from kandinsky_serve.store import SqliteJobStore

from . import W1, W2, lease_one, output

HOOK = "https://hooks.example/replicate?ref=42"
OTHER = "https://other.example/done"
ALL = frozenset(WebhookEvent)
CLAIM = 30.0


def hooked(job: Job, *hooks: Webhook) -> Job:
    return job.model_copy(update={"webhooks": hooks or (Webhook(url=HOOK, events=ALL),)})


def claim_all(store) -> list[tuple[str, str]]:
    """(event, url) of every delivery due now, claimed in order."""
    found = []
    while (claimed := store.claim(CLAIM)) is not None:
        found.append((claimed.event.value, claimed.url))
    return found


def test_a_completion_queues_completed_in_the_same_change_and_a_claim_hands_it_to_one_sender(store, make_job, clock):
    job = store.enqueue(hooked(make_job(), Webhook(url=HOOK, events=frozenset({WebhookEvent.COMPLETED}))))
    lease_one(store)
    assert store.pending() == 0  # neither start nor logs asked for
    assert store.complete(job.id, W1, [output(job.id)])
    assert store.pending() == 1

    first = store.claim(CLAIM)
    assert first is not None
    assert (first.job_id, first.event, first.url, first.attempts) == (job.id, WebhookEvent.COMPLETED, HOOK, 1)
    assert first.created_at == clock.now
    assert store.claim(CLAIM) is None  # claimed: no other sender gets it

    clock.advance(CLAIM + 1)  # the first sender died: its claim runs out
    second = store.claim(CLAIM)
    assert second is not None and second.key == first.key and second.attempts == 2
    store.done(first)  # the lost claim's word changes nothing
    assert store.pending() == 1
    store.done(second)
    assert store.pending() == 0
    assert store.claim(CLAIM) is None


def test_a_failed_try_is_due_again_when_retry_says(store, make_job, clock):
    job = store.enqueue(hooked(make_job()))
    store.cancel(job.id)  # queued: canceled at once, and that is its completion
    claimed = store.claim(CLAIM)
    assert claimed is not None and claimed.event is WebhookEvent.COMPLETED
    store.retry(claimed, clock.now + timedelta(seconds=4))
    clock.advance(3)
    assert store.claim(CLAIM) is None
    clock.advance(2)
    again = store.claim(CLAIM)
    assert again is not None and again.attempts == 2
    store.retry(claimed, clock.now)  # a lost claim cannot move it
    assert store.claim(CLAIM) is None


def test_a_job_queues_start_and_logs_as_it_runs_and_completed_when_it_ends(store, make_job):
    job = store.enqueue(hooked(make_job()))
    assert store.pending() == 0  # created: Replicate sends nothing yet
    lease_one(store)
    assert sorted(claim_all(store)) == [("logs", HOOK), ("start", HOOK)]
    assert store.fail(job.id, W1, ErrorCode.GENERATION_FAILED, "boom")
    assert claim_all(store) == [("completed", HOOK)]


def test_pending_deliveries_coalesce_and_a_change_while_claimed_is_sent_again(store, make_job, clock):
    job = store.enqueue(hooked(make_job(), Webhook(url=HOOK, events=frozenset({WebhookEvent.LOGS}))))
    lease_one(store)
    assert store.release(job.id, W1)  # back to the queue: a second change calling for `logs`
    assert store.pending() == 1  # one pending delivery; it is sent with the job as it is then
    claimed = store.claim(CLAIM)
    assert claimed is not None
    lease_one(store, W2)  # the job changes while the delivery is on its way
    store.done(claimed)
    again = store.claim(CLAIM)  # so the newer state is still to be sent
    assert again is not None and again.key == claimed.key and again.attempts == 1
    store.done(again)
    assert store.pending() == 0


def test_start_is_queued_once_and_only_changes_of_state_queue_anything(store, make_job, clock):
    job = store.enqueue(hooked(make_job(), Webhook(url=HOOK, events=frozenset({WebhookEvent.START}))))
    lease_one(store, lease_seconds=5)
    store.heartbeat(W1, [job.id], 5)  # a lease extended is no news
    claimed = store.claim(CLAIM)
    assert claimed is not None and claimed.event is WebhookEvent.START
    assert store.claim(CLAIM) is None
    store.done(claimed)
    clock.advance(6)
    assert [j.id for j in store.reclaim(max_attempts=3)] == [job.id]
    lease_one(store, W2)  # its second start: the webhook heard of the first
    assert store.pending() == 0


def test_each_webhook_gets_what_it_asked_for(store, make_job):
    outputs_only = Webhook(url=HOOK, events=frozenset({WebhookEvent.OUTPUT}))
    completed = Webhook(url=OTHER, events=frozenset({WebhookEvent.COMPLETED}))
    job = store.enqueue(hooked(make_job(), outputs_only, completed))
    plain = store.enqueue(make_job())
    lease_one(store)
    lease_one(store)
    assert store.complete(job.id, W1, [output(job.id)])
    assert store.complete(plain.id, W1, [output(plain.id)])
    # a webhook that wants outputs but not completion is told of the outputs at the end
    assert sorted(claim_all(store)) == [("completed", OTHER), ("output", HOOK)]


def test_a_job_whose_worker_is_lost_for_good_queues_completed(store, make_job, clock):
    store.enqueue(hooked(make_job()))
    lease_one(store, lease_seconds=5)
    claim_all(store)
    clock.advance(CLAIM + 1)
    (failed,) = store.reclaim(max_attempts=1)
    assert failed.state is JobState.FAILED
    assert ("completed", HOOK) in claim_all(store)


def test_the_outbox_outlives_the_store_that_wrote_it(job_backend, make_job, clock):
    first = job_backend(clock)
    job = first.enqueue(hooked(make_job()))
    first.cancel(job.id)
    first.close()
    reopened = job_backend(clock)
    assert claim_all(reopened) == [("completed", HOOK)]


# -- deadlines ---------------------------------------------------------------------------------


def test_overdue_finds_the_jobs_past_their_deadline_that_a_cancel_would_change(store, make_job, clock):
    soon = store.enqueue(make_job().model_copy(update={"cancel_at": clock.now + timedelta(seconds=5)}))
    later = store.enqueue(make_job().model_copy(update={"cancel_at": clock.now + timedelta(seconds=50)}))
    store.enqueue(make_job())  # no deadline
    done = store.enqueue(make_job().model_copy(update={"cancel_at": clock.now + timedelta(seconds=5)}))
    assert store.get(soon.id).cancel_at == soon.cancel_at
    store.cancel(done.id)
    assert store.overdue() == []
    clock.advance(5)
    assert store.overdue() == [soon.id]
    clock.advance(60)
    assert store.overdue() == [soon.id, later.id]  # oldest deadline first

    assert store.cancel(soon.id).state is JobState.CANCELED
    running = lease_one(store)
    assert running.id == later.id
    assert store.cancel(later.id).cancel_requested  # running: its worker stops it
    assert store.overdue() == []  # a cancel would change neither now


def test_a_deadline_outlives_the_store_that_stored_it(job_backend, make_job, clock):
    first = job_backend(clock)
    job = first.enqueue(make_job().model_copy(update={"cancel_at": clock.now + timedelta(seconds=5)}))
    first.close()
    clock.advance(10)
    assert job_backend(clock).overdue() == [job.id]


def test_a_schema_2_database_gains_deadlines_and_the_outbox(tmp_path, make_job, clock):
    path = tmp_path / "jobs.db"
    store = SqliteJobStore(path, clock=clock)
    old = store.enqueue(make_job())
    conn = store._connection()
    conn.execute("DROP INDEX jobs_deadlines")
    conn.execute("DROP TABLE outbox")
    conn.execute("ALTER TABLE jobs DROP COLUMN cancel_at")
    conn.execute("PRAGMA user_version = 2")
    store.close()

    store = SqliteJobStore(path, clock=clock)
    assert store.pragmas()["schema_version"] == 3
    assert store.get(old.id) == old and store.get(old.id).cancel_at is None
    new = store.enqueue(hooked(make_job()).model_copy(update={"cancel_at": clock.now}))
    assert store.overdue() == [new.id]
    store.cancel(new.id)
    assert claim_all(store) == [("completed", HOOK)]
    store.close()


def test_a_claim_lasts_as_long_as_asked(store, make_job, clock):
    job = store.enqueue(hooked(make_job()))
    store.cancel(job.id)
    claimed = store.claim(0.5)
    assert claimed is not None and claimed.claimed_until == clock.now + timedelta(seconds=0.5)
    assert store.claim(CLAIM) is None
    clock.advance(0.5)
    assert store.claim(CLAIM) is not None
