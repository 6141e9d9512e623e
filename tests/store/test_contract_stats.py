"""Store contract: what monitoring reads (docs/monitoring.md), and the status banner."""

from __future__ import annotations

from chatd.core.models import EndReason, SessionState
from tests.store.conftest import Backend
from tests.store.helpers import (
    T0,
    add_engineer,
    assigned,
    create,
    end_note,
    ended,
    waiting_session,
)


async def test_outcomes_are_the_chats_answered_or_closed_since(backend: Backend) -> None:
    store = backend.store
    alex = await add_engineer(store, "alex@vendor.example", name="Alex")
    old, _ = await create(store, waiting_session(created_at=T0 - 7200, arrival_seq=1))
    old_active = assigned(old, alex, T0 - 7000)
    await store.assign_session(old_active, ("waiting",), None)
    await store.end_session(ended(old_active, T0 - 6000), end_note(old.id, ts=T0 - 6000), [])

    late, _ = await create(store, waiting_session(created_at=T0 - 4000.5, arrival_seq=2))
    late_active = assigned(late, alex, T0 - 3000.25)  # answered after the cut, still open
    await store.assign_session(late_active, ("waiting",), None)

    gone, _ = await create(store, waiting_session(created_at=T0 - 100, arrival_seq=3))
    gone_end = ended(gone, T0 - 60.125, state=SessionState.ABANDONED,
                     reason=EndReason.ABANDONED, by="system")
    await store.end_session(gone_end, end_note(gone.id, ts=T0 - 60.125, reason="abandoned"),
                            [])
    await create(store, waiting_session(created_at=T0 - 50, arrival_seq=4))  # still waiting

    rows = await backend.reopen()
    outcomes = await rows.session_outcomes(T0 - 3600)
    assert sorted((o.created_at, o.first_assigned_at, o.ended_at, o.state, o.engineer_id,
                   o.engineer_name) for o in outcomes) == [
        (T0 - 4000.5, T0 - 3000.25, None, "active", alex.id, "Alex"),
        (T0 - 100, None, T0 - 60.125, "abandoned", None, None),
    ]


async def test_the_banner_is_posted_replaced_cleared_and_kept(backend: Backend) -> None:
    assert await backend.store.status_banner() is None
    await backend.store.set_status_banner("Slow logins", None, T0, "eng-1")
    await backend.store.set_status_banner("Logins fixed soon", "https://status.example/1",
                                          T0 + 60.5, "eng-2")
    store = await backend.reopen()
    assert await store.status_banner() == {
        "text": "Logins fixed soon", "link": "https://status.example/1",
        "updated_at": T0 + 60.5, "updated_by": "eng-2",
    }
    await store.set_status_banner(None, None, T0 + 120, "eng-2")
    assert await (await backend.reopen()).status_banner() is None
