"""PostgreSQL itself restarted mid-chat: chatd says it is not ready while the database is
down, refuses writes with ``unavailable`` (clients retry), loses nothing acknowledged, and
recovers by itself when the database is back (docs/scaling.md#when-the-database-goes-away).

The test stops and starts the local PostgreSQL cluster (``pg_ctlcluster``), which needs
root, as CI and ``make test`` on a fresh machine run; elsewhere it is skipped and says why.
Other tests' connections are cut too, so it runs alone, as pytest runs every test.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import pytest

from tests.pg import ADMIN_URL
from tests.process import Server, connect

pytestmark = pytest.mark.slow


@pytest.fixture
def db_backend() -> str:
    return "postgres"


def _cluster() -> list[str]:
    """``[version, name]`` of the local cluster serving the tests, or skip."""
    if os.geteuid() != 0 or shutil.which("pg_lsclusters") is None:
        pytest.skip("restarting PostgreSQL needs root and pg_ctlcluster")
    if urlsplit(ADMIN_URL).hostname not in ("127.0.0.1", "localhost", None):
        pytest.skip("CHATD_TEST_POSTGRES_URL is not the local cluster")
    port = str(urlsplit(ADMIN_URL).port or 5432)
    for line in subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        version, name, cluster_port, status = line.split()[:4]
        if cluster_port == port and status == "online":
            return [version, name]
    pytest.skip(f"no online local cluster on port {port}")


def _pg_ctl(action: str, cluster: list[str]) -> None:
    subprocess.run(["pg_ctlcluster", *cluster, action, *(["-m", "fast"] if action == "stop"
                                                          else [])],
                   check=True, timeout=60)


@pytest.fixture
def server(tmp_path: Path, database_url: str) -> Iterator[Server]:
    s = Server(tmp_path, {"CHATD_GRACE_SECONDS": "60"}, database_url)
    yield s
    s.stop()


async def _ready(http: aiohttp.ClientSession, url: str) -> int:
    async with http.get(url + "/readyz") as r:
        return r.status


async def _call(c: Any, ns: str, event: str, data: Any) -> Any:
    return await c.call(event, data, namespace=ns, timeout=15)


async def test_postgres_restart_mid_chat_loses_nothing_and_recovers(server: Server) -> None:
    cluster = _cluster()
    server.cli("engineer", "add", "alex@example.com", "--name", "Alex", "--password-stdin",
               stdin="correct horse battery\n")
    await server.start()
    http = aiohttp.ClientSession()
    async with http.post(server.url + "/api/login", json={
            "email": "alex@example.com", "password": "correct horse battery"}) as r:
        token = (await r.json())["token"]
    eng = await connect(server.url, "/engineer", {"token": token})
    cust = await connect(server.url, "/customer",
                         {"guest": {"name": "Ann", "email": "ann@x.io"}})
    stopped = False
    try:
        await _call(eng, "/engineer", "engineer:status", {"status": "available"})
        sid = (await _call(cust, "/customer", "chat:request", {"topic": "VPN"}))["session"]["id"]
        for _ in range(100):
            if (await _call(eng, "/engineer", "offer:accept", {"session_id": sid}))["ok"]:
                break
            await asyncio.sleep(0.1)
        acked = {}
        for i in range(10):
            r = await _call(cust, "/customer", "message:send",
                            {"session_id": sid, "client_msg_id": f"c{i}", "body": f"m{i}"})
            assert r["ok"], r
            acked[r["message"]["id"]] = r["message"]["seq"]

        _pg_ctl("stop", cluster)
        stopped = True
        assert await _ready(http, server.url) == 503
        refused = await _call(cust, "/customer", "message:send",
                              {"session_id": sid, "client_msg_id": "c-down", "body": "down"})
        assert refused["ok"] is False
        assert refused["error"]["code"] == "unavailable", refused

        _pg_ctl("start", cluster)
        stopped = False
        deadline = time.monotonic() + 30
        while await _ready(http, server.url) != 200:
            assert time.monotonic() < deadline, "chatd did not recover from the restart"
            await asyncio.sleep(0.2)

        # The client's retry of the refused message is stored once, after the others.
        for _ in range(2):
            again = await _call(cust, "/customer", "message:send",
                                {"session_id": sid, "client_msg_id": "c-down", "body": "down"})
            assert again["ok"], again
            assert again["message"]["seq"] == max(acked.values()) + 1
        history = await _call(eng, "/engineer", "session:resume",
                              {"session_id": sid, "after_seq": 0})
        stored = {m["id"]: m["seq"] for m in history["messages"]}
        assert all(stored.get(mid) == seq for mid, seq in acked.items())
        seqs = [m["seq"] for m in history["messages"]]
        assert seqs == list(range(1, len(seqs) + 1))
        assert [m["body"] for m in history["messages"]].count("down") == 1
    finally:
        if stopped:
            _pg_ctl("start", cluster)
        await cust.disconnect()
        await eng.disconnect()
        await http.close()
    assert "Traceback" not in server.log.read_text(errors="replace")
