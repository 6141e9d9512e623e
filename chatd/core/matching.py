"""Who is offered a waiting chat: the pure choice among the engineers who can take one
(docs/protocol.md#matching-and-offers). The desk walks the queue in arrival order and asks
this for each chat."""

from __future__ import annotations

from collections.abc import Collection, Sequence

from .presence import Presence


def choose_engineer(eligible: Sequence[Presence], declined: Collection[str]) -> Presence:
    """The engineer longest without a new chat among ``eligible`` (non-empty), preferring
    those who have not declined this one. "Longest without a new chat" counts offers too,
    so that several waiting chats are spread over idle engineers instead of all going to
    the first one; ties go to the longest since their last offer, then by id."""
    candidates = [p for p in eligible if p.engineer.id not in declined] or list(eligible)
    return min(
        candidates,
        key=lambda p: (
            max(p.last_assigned_at, p.last_offered_at),
            p.last_offered_at,
            p.engineer.id,
        ),
    )
