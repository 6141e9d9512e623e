"""How a process learns it is in a cluster, and what it refuses
(docs/scaling.md#running-several-processes)."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench.server_process import free_port
from tests.process import Server

pytestmark = pytest.mark.slow


def test_a_redis_url_with_sqlite_is_refused(tmp_path: Path) -> None:
    server = Server(tmp_path, {"CHATD_REDIS_URL": "redis://127.0.0.1:6379/0"})
    server.spawn()
    assert server.proc is not None
    assert server.proc.wait(timeout=30) == 1
    log = server.log.read_text(errors="replace")
    assert "cannot start: CHATD_REDIS_URL runs several processes on one desk" in log
    assert "needs PostgreSQL" in log


@pytest.mark.parametrize("db_backend", ["postgres"])
def test_an_unreachable_redis_is_refused_at_start(tmp_path: Path, database_url: str) -> None:
    url = f"redis://:secret-word@127.0.0.1:{free_port()}/0"  # nothing listens there
    server = Server(tmp_path, {"CHATD_REDIS_URL": url}, database_url)
    server.spawn()
    assert server.proc is not None
    assert server.proc.wait(timeout=60) == 1
    log = server.log.read_text(errors="replace")
    assert "cannot start: cannot reach Redis at redis://" in log
    assert "secret-word" not in log  # the password is never printed
