"""The end-to-end tests run on both storage backends."""

from __future__ import annotations

import pytest


@pytest.fixture(params=["sqlite", "postgres"])
def db_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
