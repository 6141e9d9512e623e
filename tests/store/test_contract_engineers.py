"""Store contract: engineer accounts and their API tokens."""

from __future__ import annotations

import asyncio

import pytest

from chatd.core.errors import Conflict
from chatd.core.models import Role
from tests.store.conftest import Backend
from tests.store.helpers import T0, account, add_engineer


async def test_added_engineer_reads_back_whole(backend: Backend) -> None:
    s = backend.store
    acc = account("lee@vendor.example", name="Lee Lead", role=Role.LEAD, created_at=T0 + 0.25)
    await s.add_engineer(acc)
    assert await s.engineer_account("lee@vendor.example") == acc
    assert await s.engineer_account("nobody@vendor.example") is None


async def test_list_engineers_returns_every_account(backend: Backend) -> None:
    s = backend.store
    assert await s.list_engineers() == []
    accounts = [
        account("b@vendor.example"),
        account("a@vendor.example", role=Role.LEAD),
        account("c@vendor.example", disabled=True),
    ]
    for acc in accounts:
        await s.add_engineer(acc)
    listed = await s.list_engineers()
    assert sorted(listed, key=lambda a: a.engineer.email) == sorted(
        accounts, key=lambda a: a.engineer.email
    )


@pytest.mark.parametrize("taken", ["ana@vendor.example", "Ana@Vendor.Example"])
async def test_duplicate_email_conflicts_and_changes_nothing(backend: Backend, taken: str) -> None:
    s = backend.store
    first = account("ana@vendor.example", name="Ana")
    await s.add_engineer(first)
    with pytest.raises(Conflict):
        await s.add_engineer(account(taken, name="Impostor", role=Role.LEAD))
    assert await s.list_engineers() == [first]
    assert await s.engineer_account("ana@vendor.example") == first


async def test_conflicting_add_fails_alone_among_concurrent_adds(backend: Backend) -> None:
    s = backend.store
    a, dup, b = account("a@vendor.example"), account("A@VENDOR.EXAMPLE"), account("b@v.example")
    results = await asyncio.gather(
        s.add_engineer(a), s.add_engineer(dup), s.add_engineer(b), return_exceptions=True
    )
    # Either of the two racing adds may win, never both.
    assert results[2] is None
    assert sorted(type(r).__name__ for r in results[:2]) == ["Conflict", "NoneType"]
    winner = a if results[0] is None else dup
    listed = sorted(await s.list_engineers(), key=lambda x: x.engineer.email.lower())
    assert listed == [winner, b]


async def test_disable_and_enable_an_engineer(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "dee@vendor.example")
    assert await s.set_engineer_disabled("dee@vendor.example", True) is True
    got = await s.engineer_account("dee@vendor.example")
    assert got is not None and got.disabled is True and got.engineer == eng
    assert await s.set_engineer_disabled("dee@vendor.example", False) is True
    got = await s.engineer_account("dee@vendor.example")
    assert got is not None and got.disabled is False


async def test_disabling_an_unknown_engineer_is_false(backend: Backend) -> None:
    assert await backend.store.set_engineer_disabled("ghost@vendor.example", True) is False
    assert await backend.store.list_engineers() == []


async def test_token_names_its_engineer_until_it_expires(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "tia@vendor.example")
    await s.add_token("h1", eng.id, T0, T0 + 3600)
    assert await s.engineer_for_token("h1", T0) == eng
    assert await s.engineer_for_token("h1", T0 + 3599.5) == eng
    assert await s.engineer_for_token("h1", T0 + 3600) is None
    assert await s.engineer_for_token("h1", T0 + 7200) is None
    assert await s.engineer_for_token("unknown", T0) is None


async def test_revoked_token_is_refused_and_others_stay_live(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "rex@vendor.example")
    await s.add_token("laptop", eng.id, T0, T0 + 3600)
    await s.add_token("phone", eng.id, T0, T0 + 3600)
    await s.revoke_token("laptop")
    assert await s.engineer_for_token("laptop", T0 + 1) is None
    assert await s.engineer_for_token("phone", T0 + 1) == eng
    await s.revoke_token("never-issued")  # logging out twice is harmless
    assert await s.engineer_for_token("phone", T0 + 1) == eng


async def test_disabling_revokes_tokens_for_good(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "dan@vendor.example")
    other = await add_engineer(s, "olu@vendor.example")
    await s.add_token("dan-1", eng.id, T0, T0 + 3600)
    await s.add_token("dan-2", eng.id, T0, T0 + 3600)
    await s.add_token("olu-1", other.id, T0, T0 + 3600)
    await s.set_engineer_disabled("dan@vendor.example", True)
    assert await s.engineer_for_token("dan-1", T0 + 1) is None
    # Enabling the account again must not bring back sessions opened before it was disabled.
    await s.set_engineer_disabled("dan@vendor.example", False)
    assert await s.engineer_for_token("dan-1", T0 + 1) is None
    assert await s.engineer_for_token("dan-2", T0 + 1) is None
    assert await s.live_tokens(["dan-1", "dan-2", "olu-1"], T0 + 1) == {"olu-1"}
    # A fresh login after re-enabling works.
    await s.add_token("dan-3", eng.id, T0 + 2, T0 + 3600)
    assert await s.engineer_for_token("dan-3", T0 + 3) == eng


async def test_token_of_disabled_engineer_is_refused_while_disabled(backend: Backend) -> None:
    s = backend.store
    eng = await add_engineer(s, "dora@vendor.example", disabled=True)
    # A token that exists while the account is disabled (not revoked) must still not pass.
    await s.add_token("dora-1", eng.id, T0, T0 + 3600)
    assert await s.engineer_for_token("dora-1", T0 + 1) is None
    assert await s.live_tokens(["dora-1"], T0 + 1) == set()
    await s.set_engineer_disabled("dora@vendor.example", False)
    assert await s.engineer_for_token("dora-1", T0 + 1) == eng


async def test_live_tokens_is_exactly_the_live_subset_beyond_500(backend: Backend) -> None:
    s = backend.store
    ann = await add_engineer(s, "ann@vendor.example")
    bob = await add_engineer(s, "bob@vendor.example")
    now = T0 + 100
    live = {f"live-{i}" for i in range(620)}
    expired = {f"expired-{i}" for i in range(40)}
    revoked = {f"revoked-{i}" for i in range(40)}
    of_disabled = {f"bob-{i}" for i in range(40)}
    await asyncio.gather(
        *(s.add_token(h, ann.id, T0, T0 + 3600) for h in sorted(live | revoked)),
        *(s.add_token(h, ann.id, T0, now) for h in sorted(expired)),
        *(s.add_token(h, bob.id, T0, T0 + 3600) for h in sorted(of_disabled)),
    )
    await asyncio.gather(*(s.revoke_token(h) for h in sorted(revoked)))
    await s.set_engineer_disabled("bob@vendor.example", True)
    unknown = {f"unknown-{i}" for i in range(300)}
    asked = sorted(live | expired | revoked | of_disabled | unknown)
    assert len(asked) > 1000
    assert await s.live_tokens(asked, now) == live
    assert await s.live_tokens(iter(asked), now) == live  # any iterable, read once
    assert await s.live_tokens([], now) == set()
    # Agrees with engineer_for_token one by one.
    for h in ("live-0", "live-619", "expired-0", "revoked-0", "bob-0", "unknown-0"):
        assert (await s.engineer_for_token(h, now) is not None) == (h in live)


async def test_an_engineers_status_is_kept_and_the_last_one_wins(backend: Backend) -> None:
    """What the next process to run the desk finds (docs/design.md#several-processes)."""
    s = backend.store
    assert await s.engineer_statuses() == {}
    await s.save_engineer_status("e-1", "available", 3, T0)
    await s.save_engineer_status("e-2", "away", 1, T0)
    await s.save_engineer_status("e-1", "away", 5, T0 + 1)
    assert await s.engineer_statuses() == {"e-1": ("away", 5), "e-2": ("away", 1)}
