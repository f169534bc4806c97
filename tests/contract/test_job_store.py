"""The JobStore contract: what every backend must do, as the protocol's docstrings say.

Leasing, heartbeats and reclaiming are in test_job_store_leases.py."""

from __future__ import annotations

from datetime import timedelta

import pytest

import kandinsky_serve.domain.request as request_module
from kandinsky_serve.domain.errors import ErrorCode, ServeError
from kandinsky_serve.domain.job import JobEvent, JobState
from kandinsky_serve.domain.request import FuseItem, Task

from . import LEASE, W1, W2, as_read, ids, image_bytes_in, inputs_kept, lease_one, output

# -- enqueue and get --------------------------------------------------------------------------


def test_a_job_is_read_without_its_input_images_and_leased_with_them(store, make_job, photo, mask):
    job = make_job(task="inpaint", image=photo, mask=mask, seed=7, meta={"version": "abc", "webhook": None})
    assert store.enqueue(job) == job
    stored = store.get(job.id)
    assert stored == as_read(job)
    assert image_bytes_in(stored) == [] and stored.request.task is Task.INPAINT and stored.request.seed == 7
    assert store.list_jobs("alice").jobs == [stored]

    leased = lease_one(store)
    assert leased.request == job.request
    assert leased.request.image == photo and leased.request.mask == mask  # byte for byte
    assert store.get(job.id).request == stored.request  # the lease read them; the job still reads without


def test_fuse_items_are_read_without_images_and_leased_with_them(store, make_job, photo):
    job = make_job(task="fuse", fuse=(FuseItem(image=photo, weight=0.3), FuseItem(prompt="snow", weight=0.7)))
    store.enqueue(job)
    fuse = store.get(job.id).request.fuse
    assert [(item.prompt, item.image, item.weight) for item in fuse] == [(None, None, 0.3), ("snow", None, 0.7)]
    assert store.get(job.id) == as_read(job)
    assert lease_one(store).request.fuse == job.request.fuse


def test_reads_never_decode_input_images(store, make_job, photo, mask, depth, monkeypatch):
    """A status read of a job with an 18 MiB input once took 50 ms and lists of such jobs gigabytes:
    every read parsed the request whole, base64 and image decoding included. Only lease may."""
    jobs = [
        store.enqueue(make_job(task="img2img", image=photo)),
        store.enqueue(make_job(task="inpaint", image=photo, mask=mask)),
        store.enqueue(make_job(task="controlnet", hint=depth)),
        store.enqueue(make_job(task="fuse", fuse=(FuseItem(image=photo), FuseItem(prompt="snow")))),
    ]
    decoded: list[int] = []
    monkeypatch.setattr(request_module, "check_image_bytes", lambda data: decoded.append(len(data)))

    read = [store.get(job.id) for job in jobs]
    read += store.list_jobs("alice").jobs
    read.append(store.enqueue(jobs[0]))  # the existing job, as stored
    read.append(store.cancel(jobs[3].id))
    assert decoded == []
    assert all(image_bytes_in(job) == [] for job in read) and len(read) == 10

    leased = store.lease(W1, max_batch=1, lease_seconds=LEASE)
    assert [job.request for job in leased] == [jobs[0].request]
    assert decoded == [len(photo)]  # the probe sees the lease decode what it returns


def test_unknown_ids_are_absent(store):
    assert store.get("nope") is None
    assert store.cancel("nope") is None
    assert store.events("nope") == []
    assert not store.complete("nope", W1, [])


def test_enqueueing_an_existing_id_keeps_the_first_job(store, make_job):
    job = store.enqueue(make_job(prompt="first"))
    again = store.enqueue(job.model_copy(update={"request": make_job(prompt="second").request}))
    assert again == job
    assert store.get(job.id).request.prompt == "first"
    assert store.counts()[JobState.QUEUED] == 1


def test_a_running_job_cannot_be_enqueued(store, make_job):
    with pytest.raises(ValueError, match="running"):
        store.enqueue(make_job().model_copy(update={"state": JobState.RUNNING}))


# -- list_jobs --------------------------------------------------------------------------------


def test_list_pages_newest_first_and_stays_stable_while_jobs_arrive(store, make_job):
    mine = []
    for i in range(10):
        job = store.enqueue(make_job("alice" if i % 3 else "bob"))
        if job.owner == "alice":
            mine.append(job)
    newest_first = ids(reversed(mine))  # 6 jobs

    first = store.list_jobs("alice", limit=4)
    assert ids(first.jobs) == newest_first[:4]
    store.enqueue(make_job("alice"))  # newer than every listed job: later pages must not shift
    second = store.list_jobs("alice", limit=4, cursor=first.next_cursor)
    assert ids(second.jobs) == newest_first[4:]
    assert second.next_cursor is None


def test_a_page_that_ends_exactly_at_the_last_job_has_no_cursor(store, make_job):
    for _ in range(4):
        store.enqueue(make_job())
    first = store.list_jobs("alice", limit=2)
    second = store.list_jobs("alice", limit=2, cursor=first.next_cursor)
    assert len(second.jobs) == 2 and second.next_cursor is None
    assert store.list_jobs("nobody").jobs == []


def test_jobs_created_at_the_same_moment_page_without_loss_or_repeats(store, make_job):
    twins = [make_job() for _ in range(5)]
    moment = twins[0].created_at
    for job in twins:
        store.enqueue(job.model_copy(update={"created_at": moment}))
    seen, cursor = [], None
    while True:
        page = store.list_jobs("alice", limit=1, cursor=cursor)
        seen += ids(page.jobs)
        if (cursor := page.next_cursor) is None:
            break
    assert sorted(seen) == sorted(ids(twins)) and len(seen) == 5


def test_owners_never_see_each_others_jobs(store, make_job):
    alice = [store.enqueue(make_job("alice")) for _ in range(3)]
    bob = [store.enqueue(make_job("bob")) for _ in range(2)]
    assert set(ids(store.list_jobs("bob", limit=100).jobs)) == set(ids(bob))
    assert set(ids(store.list_jobs("alice").jobs)) == set(ids(alice))
    with pytest.raises(ServeError) as info:  # alice's job id is no cursor for bob
        store.list_jobs("bob", cursor=alice[0].id)
    assert info.value.code is ErrorCode.INVALID_INPUT and info.value.field == "cursor"


# -- finishing a job --------------------------------------------------------------------------

FINISHES = {
    "complete": (lambda store, job_id, worker: store.complete(job_id, worker, [output(job_id)]), JobState.SUCCEEDED),
    "fail": (
        lambda store, job_id, worker: store.fail(job_id, worker, ErrorCode.OUT_OF_MEMORY, "no memory"),
        JobState.FAILED,
    ),
    "finish_canceled": (lambda store, job_id, worker: store.finish_canceled(job_id, worker), JobState.CANCELED),
    "release": (lambda store, job_id, worker: store.release(job_id, worker), JobState.QUEUED),
}


@pytest.mark.parametrize("action", FINISHES)
def test_only_the_lease_holder_finishes_a_running_job(store, make_job, action):
    finish, to = FINISHES[action]
    job = store.enqueue(make_job())
    assert not finish(store, job.id, W1)  # queued: nobody holds it
    assert store.get(job.id) == job

    running = lease_one(store, W1)
    assert not finish(store, job.id, W2)
    assert store.get(job.id) == running
    assert finish(store, job.id, W1)
    after = store.get(job.id)
    assert after.state is to
    assert not finish(store, job.id, W1)  # no longer running
    assert store.get(job.id) == after


def test_finishing_records_outputs_errors_and_times(store, make_job, clock):
    done, failed, canceled = (store.enqueue(make_job(width=w)) for w in (512, 768, 1024))
    for _ in range(3):
        lease_one(store)
    clock.advance(5)
    store.complete(done.id, W1, [output(done.id, 0), output(done.id, 1)])
    store.fail(failed.id, W1, ErrorCode.OUT_OF_MEMORY, "the image needs more memory than the GPU has")
    store.finish_canceled(canceled.id, W1)

    done, failed, canceled = (store.get(job.id) for job in (done, failed, canceled))
    assert done.outputs == [output(done.id, 0), output(done.id, 1)] and done.error_code is None
    assert failed.error_code is ErrorCode.OUT_OF_MEMORY and failed.error_message.startswith("the image")
    assert canceled.state is JobState.CANCELED
    assert all(job.completed_at == clock.now for job in (done, failed, canceled))
    assert done.predict_time == 5.0
    assert not store.fail(done.id, W1, ErrorCode.INTERNAL, "again")  # terminal stays terminal
    assert store.get(done.id) == done


def test_release_gives_the_job_back_without_counting_the_attempt(store, make_job):
    job = store.enqueue(make_job())
    lease_one(store, W1)
    assert store.release(job.id, W1)
    back = store.get(job.id)
    assert back.state is JobState.QUEUED and back.attempts == 0 and back.started_at is None
    assert lease_one(store, W2).attempts == 1
    assert not store.complete(job.id, W1, [])


def test_releasing_a_job_whose_cancel_was_requested_cancels_it(store, make_job):
    job = store.enqueue(make_job())
    lease_one(store, W1)
    store.cancel(job.id)
    assert store.release(job.id, W1)
    assert store.get(job.id).state is JobState.CANCELED


# -- cancel -----------------------------------------------------------------------------------


def test_cancel_a_queued_job_ends_it_at_once(store, make_job, clock):
    job = store.enqueue(make_job())
    canceled = store.cancel(job.id)
    assert canceled.state is JobState.CANCELED and canceled.completed_at == clock.now
    assert store.get(job.id) == canceled
    assert store.lease(W1, max_batch=1, lease_seconds=LEASE) == []


def test_cancel_a_running_job_asks_its_worker_to_stop(store, make_job):
    job = store.enqueue(make_job())
    lease_one(store, W1)
    asked = store.cancel(job.id)
    assert asked.state is JobState.RUNNING and asked.cancel_requested
    assert store.get(job.id) == asked
    assert store.heartbeat(W1, [job.id], LEASE).held == {job.id}  # still W1's until it stops
    assert store.finish_canceled(job.id, W1)
    assert store.get(job.id).state is JobState.CANCELED


def test_cancel_leaves_a_finished_job_alone(store, make_job):
    job = store.enqueue(make_job())
    lease_one(store, W1)
    store.complete(job.id, W1, [output(job.id)])
    done = store.get(job.id)
    assert store.cancel(job.id) == done
    assert store.get(job.id) == done


# -- events -----------------------------------------------------------------------------------


def test_events_are_numbered_per_job_and_read_after_a_seq(store, make_job):
    a, b = store.enqueue(make_job()), store.enqueue(make_job())
    store.add_events(a.id, [JobEvent(message="loading"), JobEvent(message="prior")])
    store.add_events(b.id, [JobEvent(message="other job")])
    store.add_events(a.id, [JobEvent(message="decoder", step=3, total=10), JobEvent(message="done")])
    store.add_events(a.id, [])

    events = store.events(a.id)
    assert [(e.seq, e.message) for e in events] == [(1, "loading"), (2, "prior"), (3, "decoder"), (4, "done")]
    assert (events[2].step, events[2].total) == (3, 10)
    assert [e.seq for e in store.events(a.id, after=2)] == [3, 4]
    assert store.events(a.id, after=4) == []
    assert [(e.seq, e.message) for e in store.events(b.id)] == [(1, "other job")]


def test_events_for_an_unknown_job_are_dropped(store):
    store.add_events("nope", [JobEvent(message="lost")])
    assert store.events("nope") == []


# -- expire -----------------------------------------------------------------------------------


def test_expire_removes_inputs_and_outputs_of_old_finished_jobs(store, make_job, clock, photo, mask):
    old = store.enqueue(make_job(task="inpaint", image=photo, mask=mask))
    fused = store.enqueue(make_job(task="fuse", fuse=(FuseItem(image=photo, weight=0.4), FuseItem(prompt="snow"))))
    recent = store.enqueue(make_job(task="img2img", image=photo, width=768))
    waiting = store.enqueue(make_job(task="img2img", image=photo, width=1024))
    store.lease(W1, max_batch=1, lease_seconds=LEASE)
    store.lease(W1, max_batch=1, lease_seconds=LEASE)
    store.complete(old.id, W1, [output(old.id, 0), output(old.id, 1)])
    store.fail(fused.id, W1, ErrorCode.GENERATION_FAILED, "it broke")
    cutoff = clock.now + timedelta(seconds=1)
    clock.advance(10)
    lease_one(store, W1)
    store.complete(recent.id, W1, [output(recent.id)])

    assert all(inputs_kept(store, job.id) for job in (old, fused, recent, waiting))
    assert sorted(store.expire(cutoff)) == sorted([output(old.id, 0).key, output(old.id, 1).key])
    assert not inputs_kept(store, old.id) and not inputs_kept(store, fused.id)
    stripped = store.get(old.id)
    assert stripped.data_removed and stripped.outputs == []
    assert stripped.request.image is None and stripped.request.mask is None
    assert stripped.request.task is Task.INPAINT and stripped.request.prompt == old.request.prompt
    assert stripped.state is JobState.SUCCEEDED
    fuse = store.get(fused.id).request.fuse
    assert [(item.prompt, item.image, item.weight) for item in fuse] == [(None, None, 0.4), ("snow", None, 1.0)]
    assert inputs_kept(store, recent.id) and not store.get(recent.id).data_removed
    assert store.get(waiting.id) == as_read(waiting)

    assert store.expire(cutoff) == []  # once only
    assert store.expire(clock.now + timedelta(days=1)) == [output(recent.id).key]
    assert not inputs_kept(store, recent.id)
    assert store.get(waiting.id) == as_read(waiting)  # never a job that has not finished
    assert inputs_kept(store, waiting.id)
    assert lease_one(store).request.image == photo


def test_expire_includes_jobs_canceled_while_queued(store, make_job, clock, photo):
    job = store.enqueue(make_job(task="img2img", image=photo))
    store.cancel(job.id)
    assert store.expire(clock.now) == []  # completed exactly at the cutoff: not before it
    clock.advance(1)
    assert store.expire(clock.now) == []
    assert store.get(job.id).data_removed and store.get(job.id).request.image is None
    assert not inputs_kept(store, job.id)


# -- counts and durability --------------------------------------------------------------------


def test_counts_every_state(store, make_job):
    assert store.counts() == dict.fromkeys(JobState, 0)
    jobs = [store.enqueue(make_job(width=512 + 64 * i)) for i in range(6)]
    for _ in range(4):
        lease_one(store)
    store.complete(jobs[0].id, W1, [])
    store.fail(jobs[1].id, W1, ErrorCode.INTERNAL, "broken")
    store.cancel(jobs[5].id)
    assert store.counts() == {
        JobState.QUEUED: 1,
        JobState.RUNNING: 2,
        JobState.SUCCEEDED: 1,
        JobState.FAILED: 1,
        JobState.CANCELED: 1,
    }


def test_everything_survives_closing_and_reopening_the_store(job_backend, clock, make_job, photo):
    store = job_backend(clock)
    running = store.enqueue(make_job(task="img2img", image=photo))
    done = store.enqueue(make_job(width=768))
    queued = store.enqueue(make_job(width=1024))
    lease_one(store, W1)
    lease_one(store, W1)
    store.complete(done.id, W1, [output(done.id)])
    store.add_events(running.id, [JobEvent(message="step 1")])
    before = {job.id: store.get(job.id) for job in (running, done, queued)}
    counts = store.counts()
    store.close()

    reopened = job_backend(clock)
    assert {job_id: reopened.get(job_id) for job_id in before} == before
    assert reopened.counts() == counts
    assert [e.message for e in reopened.events(running.id)] == ["step 1"]
    assert reopened.complete(running.id, W1, [output(running.id)])  # the lease survived too
