"""Ids the desk makes: random version-4 UUIDs, however many are drawn."""

from __future__ import annotations

import uuid

import pytest

from chatd.core.ids import RandomIds
from chatd.core.models import iso


def test_ids_are_distinct_version_4_uuids_across_refills() -> None:
    ids = RandomIds()
    drawn = [ids() for _ in range(1000)]  # several 256-id pools
    assert len(set(drawn)) == len(drawn)
    for value in drawn:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122


def test_iso_is_the_same_string_every_time() -> None:
    assert iso(1_767_225_600.5) == "2026-01-01T00:00:00.500Z"
    assert iso(1_767_225_600.5) == "2026-01-01T00:00:00.500Z"
    assert iso(None) is None


def test_ids_are_what_uuid_makes_of_the_same_bytes(monkeypatch: pytest.MonkeyPatch) -> None:
    pool = bytes(k for k in range(256) for _ in range(16))  # id k: sixteen bytes k
    monkeypatch.setattr("chatd.core.ids.os.urandom", lambda n: pool[:n])
    ids = RandomIds()
    for k in range(256):
        expected = uuid.UUID(bytes=pool[16 * k:16 * k + 16], version=4)
        assert ids() == str(expected)
