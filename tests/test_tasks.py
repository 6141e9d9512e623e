"""cancel_and_wait: how every background loop of the server is stopped."""

from __future__ import annotations

import asyncio

import pytest

from chatd.tasks import cancel_and_wait


async def forever() -> None:
    await asyncio.Event().wait()


async def started(coro: object) -> asyncio.Task[None]:
    task: asyncio.Task[None] = asyncio.create_task(coro)  # type: ignore[arg-type]
    await asyncio.sleep(0)  # let it reach its first await
    return task


async def test_a_running_task_is_cancelled_and_awaited() -> None:
    task = await started(forever())
    await cancel_and_wait(task)
    assert task.cancelled()


async def test_several_tasks_are_all_cancelled_and_awaited() -> None:
    tasks = [await started(forever()) for _ in range(3)]
    await cancel_and_wait(*tasks)
    assert all(t.cancelled() for t in tasks)


async def test_cleanup_the_task_does_on_cancel_is_waited_for() -> None:
    cleaned = False

    async def loop() -> None:
        nonlocal cleaned
        try:
            await forever()
        finally:
            await asyncio.sleep(0)
            cleaned = True

    await cancel_and_wait(await started(loop()))
    assert cleaned


async def test_none_and_nothing_are_fine() -> None:
    await cancel_and_wait(None)
    await cancel_and_wait()
    task = await started(forever())
    await cancel_and_wait(None, task, None)
    assert task.cancelled()


async def test_an_already_finished_task_is_fine() -> None:
    async def quick() -> None:
        return None

    task = asyncio.create_task(quick())
    await task
    await cancel_and_wait(task)
    assert not task.cancelled()


async def test_an_already_cancelled_task_is_fine() -> None:
    task = await started(forever())
    task.cancel()
    await asyncio.sleep(0)
    assert task.cancelled()
    await cancel_and_wait(task)


async def test_a_task_that_raised_raises_its_error_as_await_would() -> None:
    async def broken() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(broken())
    await asyncio.sleep(0)
    assert task.done()
    with pytest.raises(RuntimeError, match="boom"):
        await cancel_and_wait(task)
    # The error was retrieved: no "exception was never retrieved" at garbage collection.
    with pytest.raises(RuntimeError, match="boom"):
        task.result()


async def test_the_caller_cancelled_while_waiting_still_gets_cancelled_error() -> None:
    cleaning = asyncio.Event()

    async def slow_to_stop() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            cleaning.set()
            await forever()  # its clean-up is still running when the caller is cancelled
            raise

    task = await started(slow_to_stop())
    caller = asyncio.create_task(cancel_and_wait(task))
    await cleaning.wait()
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()
    assert task.cancelled()


async def test_the_caller_cancelled_while_waiting_is_not_lost_on_a_task_that_returns() -> None:
    # The caller's cancellation is passed on to the task it waits for; a task that swallows
    # it and returns must not swallow the caller's too.
    cleaning = asyncio.Event()
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await forever()
        except asyncio.CancelledError:
            cleaning.set()
            while not release.is_set():
                try:
                    await release.wait()
                except asyncio.CancelledError:
                    pass

    task = await started(stubborn())
    caller = asyncio.create_task(cancel_and_wait(task))
    await cleaning.wait()
    caller.cancel()
    release.set()
    with pytest.raises(asyncio.CancelledError):
        await caller
    assert caller.cancelled()
    assert task.done() and not task.cancelled()


async def test_a_caller_unwinding_an_earlier_cancellation_still_stops_its_tasks() -> None:
    # stop() called from the clean-up of a task that was cancelled itself: the tasks'
    # CancelledError is theirs, not a new one for the caller.
    stopped: list[asyncio.Task[None]] = []
    waiting = asyncio.Event()

    async def owner() -> str:
        worker = await started(forever())
        try:
            waiting.set()
            await forever()
        except asyncio.CancelledError:
            await cancel_and_wait(worker)
            stopped.append(worker)
            return "unwound"
        return "not reached"

    task = asyncio.create_task(owner())
    await waiting.wait()
    task.cancel()
    assert await task == "unwound"
    assert stopped and stopped[0].cancelled()
