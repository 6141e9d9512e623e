"""Store contract: retention (docs/operations.md). Old closed chats go whole (messages,
attachment records, outbox rows) in small transactions; a chat whose handoff is still owed
never goes, nor one dead-lettered too recently; orphaned attachment records are found and
removed, and only they.
"""

from __future__ import annotations

import inspect
import secrets

from chatd.core.models import MessageKind, NewMessage, Sender, Session, SessionState
from chatd.core.ports import (
    AttachmentRecord,
    PurgeCounts,
    PurgeRules,
    RetentionStore,
    Store,
)
from tests.store.conftest import Backend
from tests.store.helpers import (
    T0,
    all_messages,
    create,
    end_note,
    ended,
    new_id,
    text,
    waiting_session,
)

DAY = 86_400.0
NOW = T0 + 400 * DAY
OLD = NOW - 100 * DAY  # closed long ago
RECENT = NOW - 1 * DAY
RULES = PurgeRules(closed_before=NOW - 30 * DAY, dead_letter_before=None)
MANY = 1_000
HUGE = 1 << 40
GUARD = NOW - 3600.0

_arrival = iter(range(1, 1_000_000))


def port(backend: Backend) -> RetentionStore:
    return backend.store


def record(session_id: str, *, at: float, image: bool = False, size: int = 1000
           ) -> AttachmentRecord:
    stored = secrets.token_hex(16)
    return AttachmentRecord(
        id=new_id(), session_id=session_id, uploader_role="customer", uploader_id="cust-1",
        filename="shot.png" if image else "app.log",
        content_type="image/png" if image else "text/plain", size=size, sha256="0f" * 32,
        stored_name=stored, thumbnail_name=f"{stored}-thumb" if image else None,
        thumbnail_type="image/jpeg" if image else None, created_at=at,
    )


def announce(a: AttachmentRecord, ts: float) -> NewMessage:
    return NewMessage(
        id=new_id(), session_id=a.session_id, ts=ts,
        sender=Sender("customer", "cust-1", "Customer 1"), kind=MessageKind.ATTACHMENT,
        body=a.filename, attachment=a.to_wire(),
    )


async def chat(
    store: Store, *, closed_at: float | None, messages: int = 3,
    files: list[AttachmentRecord] | None = None, backends: tuple[str, ...] = ("file",),
    state: SessionState = SessionState.ENDED,
) -> tuple[Session, list[AttachmentRecord]]:
    """A chat opened a minute before ``closed_at`` (or now, if it stays open), with
    ``messages`` texts, an image and a log (announced), closed with one outbox row per
    backend."""
    start = (closed_at or NOW) - 60
    session, _ = await create(
        store, waiting_session(created_at=start, arrival_seq=next(_arrival)), first="hello"
    )
    for i in range(messages - 1):
        await store.append_message(text(session.id, f"line {i}", ts=start + 1))
    atts = files if files is not None else [
        record(session.id, at=start + 2, image=True), record(session.id, at=start + 3)
    ]
    for a in atts:
        await store.add_attachment(a, MANY, HUGE)
        await store.append_message(announce(a, a.created_at))
    if closed_at is not None:
        await store.end_session(
            ended(session, closed_at, state=state), end_note(session.id, ts=closed_at),
            list(backends),
        )
    return session, atts


async def deliver_all(store: Store, at: float) -> None:
    for h in await store.claim_handoffs(at, 10_000, 90.0, ["file", "webhook", "rt"]):
        await store.handoff_delivered(h.id, at, "ok", None, 200, None)


async def fail_all(store: Store, at: float) -> None:
    for h in await store.claim_handoffs(at, 10_000, 90.0, ["file", "webhook", "rt"]):
        await store.handoff_failed(h.id, at, "refused", 400, "no")


async def purge_all(backend: Backend, rules: PurgeRules = RULES, budget: int = 500
                    ) -> tuple[PurgeCounts, list[str], list[str]]:
    """Every candidate purged, as the job does: (counts, files, transcripts)."""
    s = port(backend)
    totals = [0, 0, 0, 0, 0]
    files: list[str] = []
    transcripts: list[str] = []
    after = None
    while page := await s.purge_candidates(rules, after, 50):
        ids: tuple[str, ...] = tuple(sid for _, sid in page)
        while ids:
            batch = await s.purge_chats(ids, rules, budget)
            assert batch.counts.messages <= budget
            totals = [a + b for a, b in zip(totals, (
                batch.counts.chats, batch.counts.messages, batch.counts.attachments,
                batch.counts.attachment_bytes, batch.counts.outbox_rows,
            ), strict=True)]
            files += batch.files
            transcripts += batch.transcripts
            ids = batch.left
        after = page[-1]
    return PurgeCounts(*totals), files, transcripts


async def gone(store: Store, session: Session, atts: list[AttachmentRecord]) -> bool:
    return (
        await store.get_session(session.id) is None
        and await all_messages(store, session.id) == []
        and await store.session_attachments(session.id) == []
        and await store.session_handoffs(session.id) == []
        and all([await store.get_attachment(a.id) is None for a in atts])
    )


async def kept(store: Store, session: Session, n_messages: int) -> bool:
    return (
        await store.get_session(session.id) is not None
        and len(await all_messages(store, session.id)) == n_messages
    )


async def test_backend_implements_the_retention_port(backend: Backend) -> None:
    methods = [n for n, v in vars(RetentionStore).items()
               if not n.startswith("_") and inspect.iscoroutinefunction(v)]
    assert len(methods) == 6
    impl = type(backend.store)
    for name in methods:
        got = getattr(impl, name, None)
        assert inspect.iscoroutinefunction(got), f"{backend.name}: {name}"
        want = list(inspect.signature(getattr(RetentionStore, name)).parameters)
        assert list(inspect.signature(got).parameters) == want, f"{backend.name}: {name}"


async def test_an_old_closed_chat_goes_whole_and_the_others_stay(backend: Backend) -> None:
    s = backend.store
    old, old_files = await chat(s, closed_at=OLD, messages=4)
    abandoned, abandoned_files = await chat(
        s, closed_at=OLD + 5, messages=1, files=[], state=SessionState.ABANDONED,
        backends=(),
    )
    recent, _ = await chat(s, closed_at=RECENT, messages=2)
    still_open, _ = await chat(s, closed_at=None, messages=2)
    await deliver_all(s, OLD + 10)

    counts, files, transcripts = await purge_all(backend)

    # 4 texts + 2 announcements + the end note; 1 + the end note
    assert counts == PurgeCounts(chats=2, messages=7 + 2, attachments=2,
                                 attachment_bytes=2000, outbox_rows=1)
    image, log = old_files
    assert sorted(files) == sorted([image.stored_name, str(image.thumbnail_name),
                                    log.stored_name])
    assert transcripts == [old.id]  # its file handoff was delivered; the other had none
    assert await gone(s, old, old_files)
    assert await gone(s, abandoned, abandoned_files)
    assert await kept(s, recent, 2 + 2 + 1)
    assert await kept(s, still_open, 2 + 2)
    assert len(await s.session_attachments(recent.id)) == 2
    assert (await s.handoff_counts())["pending"] == 1  # the recent chat's row


async def test_a_chat_whose_handoff_is_not_delivered_is_never_purged(backend: Backend) -> None:
    s = backend.store
    owed, _ = await chat(s, closed_at=OLD, backends=("file", "webhook"))
    # One backend delivered, the other still pending (e.g. no longer configured).
    for h in await s.claim_handoffs(OLD + 10, 10, 90.0, ["file"]):
        await s.handoff_delivered(h.id, OLD + 10, "ok", None, 200, None)
    r = port(backend)
    assert await r.purge_preview(RULES) == PurgeCounts()
    assert await r.purge_candidates(RULES, None, 10) == []
    batch = await r.purge_chats([owed.id], RULES, 500)  # even when asked directly
    assert batch.counts == PurgeCounts() and batch.left == () and batch.files == ()
    assert await kept(s, owed, 3 + 2 + 1)
    assert len(await s.session_handoffs(owed.id)) == 2


async def test_dead_lettered_chats_are_kept_until_their_own_period(backend: Backend) -> None:
    s = backend.store
    failed, files = await chat(s, closed_at=OLD)
    await fail_all(s, OLD + 50)  # dead-lettered 100 days ago
    r = port(backend)
    assert await r.purge_candidates(RULES, None, 10) == []  # kept until handled
    too_recent = PurgeRules(RULES.closed_before, dead_letter_before=OLD + 50)
    assert await r.purge_candidates(too_recent, None, 10) == []
    assert await r.purge_chats([failed.id], too_recent, 500) == (
        await r.purge_chats([], too_recent, 500)
    )
    assert await kept(s, failed, 6)
    past = PurgeRules(RULES.closed_before, dead_letter_before=OLD + 51)
    assert [sid for _, sid in await r.purge_candidates(past, None, 10)] == [failed.id]
    counts, _, transcripts = await purge_all(backend, past)
    assert counts.chats == 1 and counts.outbox_rows == 1
    assert transcripts == []  # the file backend never wrote it
    assert await gone(s, failed, files)


async def test_a_retried_dead_letter_is_no_longer_purged(backend: Backend) -> None:
    s = backend.store
    failed, _ = await chat(s, closed_at=OLD)
    await fail_all(s, OLD + 50)
    rules = PurgeRules(RULES.closed_before, dead_letter_before=NOW)
    r = port(backend)
    ids = [sid for _, sid in await r.purge_candidates(rules, None, 10)]
    assert ids == [failed.id]
    # An operator retries it between the search and the purge.
    (h,) = await s.session_handoffs(failed.id)
    await s.retry_handoff(h.id, NOW)
    batch = await r.purge_chats(ids, rules, 500)
    assert batch.counts == PurgeCounts()
    assert await kept(s, failed, 6)
    assert [x.state for x in await s.session_handoffs(failed.id)] == ["pending"]


async def test_preview_counts_what_would_go_and_changes_nothing(backend: Backend) -> None:
    s = backend.store
    a, _ = await chat(s, closed_at=OLD, messages=5)
    b, _ = await chat(s, closed_at=OLD + 1, messages=2, files=[])
    await chat(s, closed_at=RECENT)
    await deliver_all(s, OLD + 10)
    r = port(backend)
    want = PurgeCounts(chats=2, messages=(5 + 2 + 1) + (2 + 1), attachments=2,
                       attachment_bytes=2000, outbox_rows=2)
    assert await r.purge_preview(RULES) == want
    assert await r.purge_preview(RULES) == want  # nothing moved
    assert await kept(s, a, 8) and await kept(s, b, 3)
    counts, _, _ = await purge_all(backend)
    assert counts == want
    assert await r.purge_preview(RULES) == PurgeCounts()


async def test_a_long_chat_goes_in_slices_outbox_rows_first(backend: Backend) -> None:
    s = backend.store
    long, files = await chat(s, closed_at=OLD, messages=25)
    short, _ = await chat(s, closed_at=OLD + 1, messages=1, files=[])
    await deliver_all(s, OLD + 10)
    r = port(backend)
    ids: tuple[str, ...] = (long.id, short.id)
    first = await r.purge_chats(ids, RULES, 10)
    assert first.counts == PurgeCounts(messages=10, outbox_rows=1)
    assert first.left == ids and first.transcripts == (long.id,)
    assert await s.session_handoffs(long.id) == []  # no retry can reopen it now
    assert len(await all_messages(s, long.id)) == 25 + 2 + 1 - 10
    rounds = 1
    done = PurgeCounts()
    while ids:
        batch = await r.purge_chats(ids, RULES, 10)
        assert 0 < batch.counts.messages <= 10 or batch.counts.chats
        done = PurgeCounts(*(x + y for x, y in zip(
            (done.chats, done.messages, done.attachments, done.attachment_bytes,
             done.outbox_rows),
            (batch.counts.chats, batch.counts.messages, batch.counts.attachments,
             batch.counts.attachment_bytes, batch.counts.outbox_rows), strict=True)))
        ids = batch.left
        rounds += 1
        assert rounds < 10
    assert done.chats == 2 and done.messages == 28 - 10 + 2 and done.attachments == 2
    assert await gone(s, long, files) and await gone(s, short, [])


async def test_candidates_come_oldest_first_page_by_page(backend: Backend) -> None:
    s = backend.store
    chats = [(await chat(s, closed_at=OLD + i, messages=1, files=[], backends=()))[0]
             for i in (3, 1, 2)]
    r = port(backend)
    first = await r.purge_candidates(RULES, None, 2)
    assert [sid for _, sid in first] == [chats[1].id, chats[2].id]
    assert [t for t, _ in first] == [OLD + 1, OLD + 2]
    rest = await r.purge_candidates(RULES, first[-1], 2)
    assert [sid for _, sid in rest] == [chats[0].id]
    assert await r.purge_candidates(RULES, rest[-1], 2) == []


async def test_orphaned_attachment_records_are_found_and_only_they_go(backend: Backend
                                                                      ) -> None:
    s = backend.store
    session, announced = await chat(s, closed_at=None, files=[])
    orphan = record(session.id, at=NOW - 7200, image=True)
    young = record(session.id, at=NOW - 60)  # an upload being announced right now
    shown = record(session.id, at=NOW - 7200)
    for a in (orphan, young, shown):
        await s.add_attachment(a, MANY, HUGE)
    await s.append_message(announce(shown, NOW - 7199))
    r = port(backend)
    assert await r.attachment_orphans(GUARD, 10) == [orphan]
    # Asked to delete all three, it deletes the orphan only.
    deleted = await r.delete_attachment_orphans([orphan.id, young.id, shown.id], GUARD)
    assert deleted == [orphan]
    assert await s.get_attachment(orphan.id) is None
    assert await s.get_attachment(young.id) == young
    assert await s.get_attachment(shown.id) == shown
    assert await r.attachment_orphans(GUARD, 10) == []
    assert announced == []


async def test_known_attachment_files_names_files_and_thumbnails(backend: Backend) -> None:
    s = backend.store
    _, (image, log) = await chat(s, closed_at=None)
    stray = secrets.token_hex(16)
    r = port(backend)
    names = [image.stored_name, str(image.thumbnail_name), log.stored_name, stray,
             f"{stray}-thumb"]
    assert await r.known_attachment_files(names) == set(names[:3])
    assert await r.known_attachment_files([]) == set()
