"""Store contract: what was acknowledged is there for the next process, unchanged."""

from __future__ import annotations

import pytest

from chatd.core.errors import SessionClosed
from chatd.core.models import EndReason, SessionState
from tests.store.conftest import Backend
from tests.store.helpers import (
    T0,
    add_engineer,
    all_messages,
    assigned,
    create,
    end_note,
    ended,
    system,
    text,
    waiting_session,
)

WAITING_OR_OFFERED = ("offered", "waiting")


async def test_ready_when_open_and_migrated(backend: Backend) -> None:
    assert await backend.store.ready() is True
    # Opening an already migrated database migrates nothing and is ready at once.
    fresh = await backend.reopen()
    assert await fresh.ready() is True


async def test_not_ready_once_closed(backend: Backend) -> None:
    await backend.store.close()
    assert await backend.store.ready() is False


@pytest.mark.parametrize("close_first", [True, False], ids=["closed", "never-closed"])
async def test_everything_acknowledged_survives_a_new_instance(
    backend: Backend, close_first: bool
) -> None:
    s = backend.store
    alex = await add_engineer(s, "alex@vendor.example", name="Alex")
    await add_engineer(s, "gone@vendor.example", disabled=True)
    await s.add_token("alex-live", alex.id, T0, T0 + 3600)
    await s.add_token("alex-revoked", alex.id, T0, T0 + 3600)
    await s.revoke_token("alex-revoked")

    waiting, _ = await create(
        s, waiting_session(created_at=T0 + 1, arrival_seq=1), first="help", resume_hash="rw"
    )
    chat, _ = await create(s, waiting_session(created_at=T0 + 2, arrival_seq=2), first="hi")
    active = assigned(chat, alex, T0 + 10)
    await s.assign_session(
        active, WAITING_OR_OFFERED, system(chat.id, "Alex joined", {"type": "assigned"})
    )
    await s.append_message(text(chat.id, "which version?", ts=T0 + 11, client_msg_id="e-1"))
    await s.append_message(text(chat.id, "which version?", ts=T0 + 12, client_msg_id="e-1"))
    await s.append_message(text(chat.id, "8.2", ts=T0 + 13, client_msg_id="c-1"))
    done_src, _ = await create(s, waiting_session(created_at=T0 + 3, arrival_seq=3), first="x")
    done_active = assigned(done_src, alex, T0 + 20)
    await s.assign_session(done_active, WAITING_OR_OFFERED, None)
    done = ended(done_active, T0 + 80.5, resolution="answered")
    await s.end_session(done, end_note(done.id, ts=T0 + 80.5), ["file", "webhook"])
    abandoned_src, _ = await create(s, waiting_session(created_at=T0 + 4, arrival_seq=4))
    abandoned = ended(abandoned_src, T0 + 90, state=SessionState.ABANDONED,
                      reason=EndReason.ABANDONED, by="system")
    await s.end_session(abandoned, end_note(abandoned.id, ts=T0 + 90), ["file"])

    engineers = await s.list_engineers()
    sessions = {x.id: await s.get_session(x.id) for x in (waiting, chat, done, abandoned)}
    messages = {sid: await all_messages(s, sid) for sid in sessions}
    handoffs = {sid: await backend.handoff_rows(sid) for sid in sessions}
    assert [m.seq for m in messages[chat.id]] == [1, 2, 3, 4]

    s = await backend.reopen(close_first=close_first)

    assert await s.ready() is True
    assert sorted(await s.list_engineers(), key=lambda a: a.engineer.email) == sorted(
        engineers, key=lambda a: a.engineer.email
    )
    assert await s.engineer_for_token("alex-live", T0 + 1) == alex
    assert await s.live_tokens(["alex-live", "alex-revoked"], T0 + 1) == {"alex-live"}
    for sid, session in sessions.items():
        assert await s.get_session(sid) == session
        assert await all_messages(s, sid) == messages[sid]
        assert await backend.handoff_rows(sid) == handoffs[sid]
    assert await s.resume_token_hash(waiting.id) == "rw"
    assert await s.open_sessions() == [waiting, active]
    assert await s.next_arrival_seq() == 4
    assert await s.recent_handle_times(T0, 10) == [60.5]

    # Work carries on where it stopped: next seqs, retries and closed sessions.
    msg, created = await s.append_message(text(chat.id, "8.2 (resent)", client_msg_id="c-1"))
    assert (msg, created) == (messages[chat.id][3], False)
    msg, created = await s.append_message(text(chat.id, "thanks", client_msg_id="e-2"))
    assert (msg.seq, created) == (5, True)
    msg, _ = await s.append_message(text(waiting.id, "still there?"))
    assert msg.seq == 2
    with pytest.raises(SessionClosed):
        await s.append_message(text(done.id, "late"))
    with pytest.raises(SessionClosed):
        await s.end_session(ended(abandoned_src, T0 + 99), end_note(abandoned.id, ts=T0 + 99),
                            ["file"])
