"""Several chatd processes on one desk: python-socketio's Redis manager for the fan-out of
events, and the calls of the processes that do not run the desk to the one that does
(docs/design.md#several-processes)."""

from __future__ import annotations

import asyncio
from typing import TypeVar

T = TypeVar("T")

# The most a process puts in one Redis message: what was queued together goes as one.
BATCH_MAX = 500


async def next_batch(queue: asyncio.Queue[T]) -> list[T]:
    """What waits in ``queue``, in order: at least one item (waited for), at most
    BATCH_MAX. Each process publishes what it queued meanwhile as one Redis message, so
    that the others read and parse one instead of one per event or call."""
    batch = [await queue.get()]
    while not queue.empty() and len(batch) < BATCH_MAX:
        batch.append(queue.get_nowait())
    return batch
