"""The queue board: what every waiting customer is told, as one broadcast per queue change
(docs/protocol.md#queueboard).

A board carries what changed since the board before it (the arrival numbers of customers
who left the queue, and of those who came back into it ahead of the tail, each list in the
order it happened) and the predicted waits on a grid of positions: every position up to
``EXACT``, then about every tenth. Each customer knows their arrival number, their
position, the board it was counted after and how many of the next board's changes it
already counts; from the boards that follow they keep their own position and pick their
own line of waits. The server computes the waits once per board and encodes the board
once, whatever the length of the queue; with several processes it is one message to fan
out.

``BoardReader`` is a customer's side of it, as the widget does it (static/src/widget): the
simulator and the tests read boards through it.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections.abc import Sequence
from typing import Any

from .waits import Wait

EXACT = 30  # positions told one by one; past them, a line about every STEP
STEP = 1.1


def grid(length: int) -> list[int]:
    """The positions a board has a line for, for a queue of ``length``: 1 … EXACT, then
    about every 10%, the last one at or past ``length``."""
    out = list(range(1, min(length, EXACT) + 1))
    p = EXACT
    while p < length:
        p = max(p + 1, math.ceil(p * STEP))
        out.append(p)
    return out


def line(positions: Sequence[int], position: int) -> int:
    """The index of ``position``'s line: the largest listed position not past it."""
    return max(0, bisect_right(positions, position) - 1)


def waits_wire(positions: Sequence[int], waits: Sequence[Wait]) -> dict[str, list[int]]:
    return {
        "positions": list(positions),
        "seconds": [w.seconds for w in waits],
        "low": [w.low for w in waits],
        "high": [w.high for w in waits],
    }


def moved(left: Sequence[int], back: Sequence[int], mine: int) -> int:
    """How a customer of arrival number ``mine`` moves: forward one place for each arrival
    ahead of them that ``left``, back one for each that came ``back``."""
    return sum(1 for a in back if a < mine) - sum(1 for a in left if a < mine)


class BoardReader:
    """One waiting customer's view of the boards: from the position, the board number and
    the ``seen`` counts an answer gave (the first changes of the next board that the
    position already counts), it follows the boards."""

    def __init__(
        self, arrival: int, position: int, board: int, seen: Sequence[int] = (0, 0)
    ) -> None:
        self.arrival = arrival
        self.position = position
        self.board = board
        self.seen = (seen[0], seen[1])

    def read(self, payload: dict[str, Any]) -> bool:
        """Apply a board; False when one was missed (ask ``queue:position`` then)."""
        if payload["v"] != self.board + 1:
            return False
        skip_left, skip_back = self.seen
        self.position += moved(
            payload["left"][skip_left:], payload["back"][skip_back:], self.arrival
        )
        self.board = payload["v"]
        self.seen = (0, 0)
        return True

    def wait(self, payload: dict[str, Any]) -> Wait | None:
        """This customer's line of the board's waits; None when the board has none."""
        waits = payload.get("waits")
        if not waits:
            return None
        i = line(waits["positions"], self.position)
        return Wait(waits["seconds"][i], waits["low"][i], waits["high"][i])
