"""Stopping background tasks: the one place that cancels a task and waits for it to end.

Every long-running loop of the server (the desk's ticker, the SQLite writer, the handoff
worker, the monitor's sampler…) is stopped the same way, with :func:`cancel_and_wait`.
"""

from __future__ import annotations

import asyncio
from typing import Any


async def cancel_and_wait(*tasks: asyncio.Task[Any] | None) -> None:
    """Cancel every task (None is skipped), then wait for each to end, in order.

    The CancelledError that a task ends with is what was asked for, so it is swallowed;
    any other exception a task ended with is raised, as ``await task`` would (the tasks
    after it are then cancelled but not waited for). A task that had already finished is
    only awaited.

    If the caller is itself cancelled while it waits, the cancellation is its own and
    propagates (the caller's ``cancelling()`` count went up during the wait). A caller
    that was cancelled before, and stops its tasks while it unwinds, still has them
    swallowed.
    """
    current = asyncio.current_task()
    cancels_before = current.cancelling() if current is not None else 0

    def cancelled_meanwhile() -> bool:
        return current is not None and current.cancelling() > cancels_before

    pending = [task for task in tasks if task is not None]
    for task in pending:
        task.cancel()
    for task in pending:
        try:
            await task
        except asyncio.CancelledError:
            if cancelled_meanwhile():
                raise
        else:
            # The task caught its cancellation and returned: the caller's own was spent
            # on it, and is still owed.
            if cancelled_meanwhile():
                raise asyncio.CancelledError
