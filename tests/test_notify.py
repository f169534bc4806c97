"""The notifier keeps progress apart from changes: waits wake on changes only, step watches see every step."""

from __future__ import annotations

import asyncio
import threading

from kandinsky_serve.domain import ProgressEvent, Stage
from kandinsky_serve.notify import LocalNotifier


def step(n: int) -> ProgressEvent:
    return ProgressEvent(Stage.DECODER, n, 50)


def test_steps_do_not_wake_a_wait_but_a_change_does():
    async def main() -> tuple[bool, bool]:
        notifier = LocalNotifier()
        notifier.bind(asyncio.get_running_loop())
        for n in range(1, 11):
            notifier.publish_progress(["a"], step(n))
        woken_by_steps = await _wait_while(notifier, lambda: [notifier.publish_progress(["a"], step(11))])
        woken_by_change = await _wait_while(notifier, lambda: [notifier.publish(["b"]), notifier.publish(["a"])])
        return woken_by_steps, woken_by_change

    assert asyncio.run(main()) == (False, True)


async def _wait_while(notifier: LocalNotifier, act) -> bool:
    waiting = asyncio.create_task(notifier.wait("a", 0.3))
    await asyncio.sleep(0)
    threading.Thread(target=act).start()
    return await waiting


def test_a_step_watch_begun_mid_job_gets_the_latest_step_then_each_later_one_once_in_order():
    async def main() -> list[object]:
        notifier = LocalNotifier()
        notifier.bind(asyncio.get_running_loop())
        notifier.publish_progress(["a"], step(1))
        await asyncio.sleep(0)  # the loop has recorded step 1
        # a publisher thread runs ahead of the loop: steps 2..4 are still on their way when the watch begins
        publisher = threading.Thread(
            target=lambda: [notifier.publish_progress(["a"], step(n), [("a", f"jpeg{n}")]) for n in (2, 3, 4)]
        )
        publisher.start()
        publisher.join()
        seen: list[object] = []
        with notifier.watch("a", steps=True) as watch:
            notifier.publish(["a"])  # then it finishes
            while (update := await watch.next(1.0)) is not None:
                seen.append("changed" if update.changed else (update.progress.step, update.preview))
                if update.changed:
                    break
        return seen

    assert asyncio.run(main()) == [(1, None), (2, "jpeg2"), (3, "jpeg3"), (4, "jpeg4"), "changed"]


def test_a_watch_without_steps_sees_changes_only_and_several_count_as_one():
    async def main() -> tuple[bool, bool]:
        notifier = LocalNotifier()
        notifier.bind(asyncio.get_running_loop())
        with notifier.watch("a") as watch:
            notifier.publish_progress(["a"], step(1))
            notifier.publish(["a"])
            notifier.publish(["a"])
            first = await watch.changed(1.0)
            second = await watch.changed(0.2)  # both changes were seen by the first look
        return first, second

    assert asyncio.run(main()) == (True, False)
