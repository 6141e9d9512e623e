"""The garbage collector's policy for ``chatd serve``: a server holding thousands of
connections must not stop for a full collection each time its heap grows by a quarter
(docs/design.md#the-garbage-collector).

Python's cycle collector stops the process while it walks every object of the generation
it collects; with 10,000 customers connected a full collection walks millions of objects
and took up to 2.4 s, in which nothing was answered. Here:

- young collections are rarer (``GEN0``): a server allocates in bursts, and most of what a
  burst makes is freed by reference counting anyway;
- what survives a full collection is frozen (``gc.freeze``): later collections walk only
  what came since, so their cost follows the churn, not the size of the heap;
- every ``FULL_EVERY`` seconds everything is unfrozen and collected once, so that cycles
  among objects that died after they were frozen (a closed connection's) are freed: one
  pause an hour instead of a pause at every step of a surge.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import AsyncIterator
from typing import Any

log = logging.getLogger(__name__)

GEN0 = 50_000  # allocations between young collections (Python's default is 700)
FULL_EVERY = 3600.0


LONG_PAUSE = 0.05  # a collection that stops the server longer than this is logged


def tune() -> None:
    """Apply the policy to this process (``chatd serve`` does, at start)."""
    gc.set_threshold(GEN0, 20, 20)
    gc.freeze()  # what start-up made lives as long as the process
    if _freeze_survivors not in gc.callbacks:
        gc.callbacks.append(_freeze_survivors)


_started = 0.0


def _freeze_survivors(phase: str, info: dict[str, Any]) -> None:
    global _started
    if phase == "start":
        _started = time.perf_counter()
        return
    took = time.perf_counter() - _started
    if info["generation"] == 2:
        gc.freeze()
    if took > LONG_PAUSE:
        log.warning("a garbage collection stopped the server", extra={
            "generation": info["generation"], "seconds": round(took, 3),
            "collected": info["collected"],
        })


def full_collection() -> float:
    """Unfreeze and collect everything once; the seconds it took."""
    started = time.perf_counter()
    gc.unfreeze()
    gc.collect()
    gc.freeze()
    return time.perf_counter() - started


async def full_collections(app: Any) -> AsyncIterator[None]:
    """An aiohttp cleanup context: ``full_collection`` every ``FULL_EVERY`` seconds."""

    async def loop() -> None:
        while True:
            await asyncio.sleep(FULL_EVERY)
            took = full_collection()
            log.info("full garbage collection", extra={"seconds": round(took, 3)})

    task = asyncio.create_task(loop(), name="chatd-full-gc")
    yield
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
