"""Store contract: attachment records and the per-session limits checked as they are stored."""

from __future__ import annotations

import asyncio

import pytest

from chatd.core.errors import Conflict, SessionClosed, TooLarge
from chatd.core.ports import AttachmentRecord
from tests.store.conftest import Backend
from tests.store.helpers import T0, create, end_note, ended, new_id, waiting_session

MANY = 1_000
HUGE = 1 << 40


def record(session_id: str, *, size: int = 1000, at: float = T0, image: bool = False,
           name: str = "app.log") -> AttachmentRecord:
    stored = new_id()
    return AttachmentRecord(
        id=new_id(), session_id=session_id, uploader_role="customer", uploader_id="cust-1",
        filename=name, content_type="image/png" if image else "text/plain", size=size,
        sha256="0f" * 32, stored_name=stored,
        thumbnail_name=f"{stored}.thumb" if image else None,
        thumbnail_type="image/webp" if image else None, created_at=at,
    )


async def test_attachment_round_trips(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    shot = record(session.id, image=True, name="Screenshot 2026-01-01 ü.png", at=T0 + 0.25)
    log = record(session.id, at=T0 + 1.5)
    await s.add_attachment(shot, MANY, HUGE)
    await s.add_attachment(log, MANY, HUGE)
    assert await s.get_attachment(shot.id) == shot
    assert await s.get_attachment(log.id) == log
    assert await s.get_attachment("no-such-attachment") is None


async def test_session_attachments_oldest_first_and_usage(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    other, _ = await create(s, waiting_session(arrival_seq=2))
    late = record(session.id, size=300, at=T0 + 30)
    early = record(session.id, size=100, at=T0 + 10)
    middle = record(session.id, size=200, at=T0 + 20)
    elsewhere = record(other.id, size=5000, at=T0 + 15)
    for r in (late, early, elsewhere, middle):
        await s.add_attachment(r, MANY, HUGE)
    assert await s.session_attachments(session.id) == [early, middle, late]
    assert await s.session_attachment_usage(session.id) == (3, 600)
    assert await s.session_attachment_usage(other.id) == (1, 5000)
    assert await s.session_attachments("no-such-session") == []
    assert await s.session_attachment_usage("no-such-session") == (0, 0)


async def test_delete_attachment_frees_its_share(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    keep, drop = record(session.id, size=10), record(session.id, size=20, at=T0 + 1)
    await s.add_attachment(keep, 2, HUGE)
    await s.add_attachment(drop, 2, HUGE)
    await s.delete_attachment(drop.id)
    await s.delete_attachment("no-such-attachment")  # forgetting twice is harmless
    assert await s.get_attachment(drop.id) is None
    assert await s.session_attachments(session.id) == [keep]
    assert await s.session_attachment_usage(session.id) == (1, 10)
    # The slot it held is free again.
    await s.add_attachment(record(session.id, size=20, at=T0 + 2), 2, HUGE)


async def test_count_limit_refuses_with_conflict_and_stores_nothing(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    for i in range(3):
        await s.add_attachment(record(session.id, at=T0 + i), 3, HUGE)
    extra = record(session.id, at=T0 + 9)
    with pytest.raises(Conflict):
        await s.add_attachment(extra, 3, HUGE)
    assert await s.get_attachment(extra.id) is None
    assert await s.session_attachment_usage(session.id) == (3, 3000)


async def test_byte_limit_refuses_with_too_large_and_stores_nothing(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    await s.add_attachment(record(session.id, size=600), MANY, 1000)
    exactly_full = record(session.id, size=400, at=T0 + 1)
    await s.add_attachment(exactly_full, MANY, 1000)  # reaching the limit is allowed
    one_more = record(session.id, size=1, at=T0 + 2)
    with pytest.raises(TooLarge):
        await s.add_attachment(one_more, MANY, 1000)
    assert await s.get_attachment(one_more.id) is None
    assert await s.session_attachment_usage(session.id) == (2, 1000)


async def test_attachment_to_closed_session_is_refused(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    await s.end_session(ended(session, T0 + 5), end_note(session.id, ts=T0 + 5), [])
    late = record(session.id, at=T0 + 6)
    with pytest.raises(SessionClosed):
        await s.add_attachment(late, MANY, HUGE)
    assert await s.get_attachment(late.id) is None
    with pytest.raises(SessionClosed):
        await s.add_attachment(record("no-such-session"), MANY, HUGE)


async def test_concurrent_uploads_cannot_pass_the_limits_together(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    by_count = await asyncio.gather(
        *(s.add_attachment(record(session.id, size=1, at=T0 + i), 4, HUGE) for i in range(10)),
        return_exceptions=True,
    )
    assert sum(r is None for r in by_count) == 4
    assert all(isinstance(r, Conflict) for r in by_count if r is not None)

    other, _ = await create(s, waiting_session(arrival_seq=2))
    by_bytes = await asyncio.gather(
        *(s.add_attachment(record(other.id, size=300, at=T0 + i), MANY, 1000)
          for i in range(10)),
        return_exceptions=True,
    )
    assert sum(r is None for r in by_bytes) == 3
    assert all(isinstance(r, TooLarge) for r in by_bytes if r is not None)
    assert await s.session_attachment_usage(session.id) == (4, 4)
    assert await s.session_attachment_usage(other.id) == (3, 900)


async def test_attachments_survive_a_new_instance(backend: Backend) -> None:
    s = backend.store
    session, _ = await create(s)
    shot = record(session.id, image=True, at=T0 + 1)
    await s.add_attachment(shot, MANY, HUGE)
    s = await backend.reopen()
    assert await s.session_attachments(session.id) == [shot]
    assert await s.get_attachment(shot.id) == shot
