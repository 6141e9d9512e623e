"""Several real ``chatd serve`` processes on one PostgreSQL desk behind HAProxy, with the
configuration shipped in deploy/haproxy/chatd.cfg (docs/scaling.md#behind-a-load-balancer)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest

from bench.server_process import free_port, stop_process
from tests.process import Server

CONFIG = Path(__file__).parents[1] / "deploy" / "haproxy" / "chatd.cfg"
LEASE = 2.0


class Cluster:
    def __init__(self, servers: list[Server], lb_port: int) -> None:
        self.servers = servers
        self.url = f"http://127.0.0.1:{lb_port}"

    async def leader(self) -> Server:
        """The process that runs the desk now (the one whose /readyz answers 200)."""
        async with aiohttp.ClientSession() as http:
            for s in self.servers:
                if await status(http, s.url + "/readyz") == 200:
                    return s
        raise AssertionError("no process runs the desk")


async def status(http: aiohttp.ClientSession, url: str) -> int:
    try:
        async with http.get(url, timeout=aiohttp.ClientTimeout(total=2)) as r:
            return r.status
    except (TimeoutError, aiohttp.ClientError):
        return 0


async def until(pred: Callable[[], Awaitable[bool]], limit: float, what: str) -> float:
    """Seconds until ``pred()`` holds (fails after ``limit``)."""
    started = time.monotonic()
    while not await pred():
        assert time.monotonic() - started < limit, what
        await asyncio.sleep(0.05)
    return time.monotonic() - started


@contextlib.asynccontextmanager
async def cluster(
    tmp_path: Path, database_url: str, *, engineers: list[tuple[str, str]], password: str,
) -> AsyncIterator[Cluster]:
    """Two processes (the first runs the desk, the second stands by) behind HAProxy, with
    ``engineers`` (email, name) added; HAProxy's third server never comes up."""
    if shutil.which("haproxy") is None:
        pytest.skip("HAProxy is not installed (make test installs it)")
    env = {"CHATD_DESK_LEASE_SECONDS": str(LEASE), "CHATD_GRACE_SECONDS": "60",
           "CHATD_TRUSTED_PROXIES": "127.0.0.1"}
    servers = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        servers.append(Server(tmp_path / name, env, database_url))
    for email, who in engineers:
        servers[0].cli("engineer", "add", email, "--name", who, "--password-stdin",
                       stdin=password + "\n")
    lb: subprocess.Popen[bytes] | None = None
    log = (tmp_path / "haproxy.log").open("ab")
    try:
        await servers[0].start()
        servers[1].spawn()
        async with aiohttp.ClientSession() as http:
            await until(lambda: _is(http, servers[1].url + "/healthz", 200), 20,
                        "the standby did not start")
        lb_port = free_port()
        lb_env = {**os.environ, "CHATD_LB_PORT": str(lb_port),
                  "CHATD_PORT_1": str(servers[0].port), "CHATD_PORT_2": str(servers[1].port),
                  "CHATD_PORT_3": str(free_port())}
        lb = subprocess.Popen(["haproxy", "-db", "-f", str(CONFIG)], env=lb_env, stdout=log,
                              stderr=subprocess.STDOUT)
        c = Cluster(servers, lb_port)
        async with aiohttp.ClientSession() as http:
            await until(lambda: _is(http, c.url + "/readyz", 200), 20,
                        "HAProxy did not come up")
        # HAProxy counts every server up until its first check: let a few checks pass.
        await asyncio.sleep(1.5)
        yield c
    finally:
        if lb is not None:
            stop_process(lb, grace=5)
        log.close()
        for s in servers:
            s.stop()


async def _is(http: aiohttp.ClientSession, url: str, code: int) -> bool:
    return await status(http, url) == code


class PrivateRedis:
    """A redis-server of the test's own, on a free port: stopped, restarted and removed
    by the test, never the machine's shared one."""

    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.tmp = tmp
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            pytest.skip("redis-server is not installed (make test installs it)")
        self.proc = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(self.tmp)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not self._answers():
            assert time.monotonic() < deadline, "redis-server did not start"
            time.sleep(0.05)

    def _answers(self) -> bool:
        import socket

        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                return s.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, grace=5)
            self.proc = None


class Trio:
    """Three ``chatd serve`` processes on one PostgreSQL desk sharing a Redis; ``url`` is
    HAProxy's in front of them (with ``lb``), else the first process's."""

    def __init__(self, servers: list[Server], redis: PrivateRedis, url: str) -> None:
        self.servers = servers
        self.redis = redis
        self.url = url

    async def leader(self) -> Server:
        """The live process that took the desk's lease last (the highest term its log
        says it runs the desk with)."""
        import re

        best: tuple[int, Server] | None = None
        for s in self.servers:
            if s.proc is None or s.proc.poll() is not None:
                continue
            terms = re.findall(r"running the desk term=(\d+)", s.log.read_text(errors="replace"))
            if terms and (best is None or int(terms[-1]) > best[0]):
                best = (int(terms[-1]), s)
        if best is None:
            raise AssertionError("no process runs the desk")
        return best[1]


@contextlib.asynccontextmanager
async def trio(
    tmp_path: Path, database_url: str, *, engineers: list[tuple[str, str]], password: str,
    env: dict[str, str] | None = None, lb: bool = False,
) -> AsyncIterator[Trio]:
    """Three processes with ``CHATD_REDIS_URL`` (the first runs the desk), each with its own
    upload folder; every one serves clients. With ``lb``, HAProxy in front of them with the
    configuration shipped in deploy/haproxy/chatd.cfg."""
    if lb and shutil.which("haproxy") is None:
        pytest.skip("HAProxy is not installed (make test installs it)")
    redis = PrivateRedis(tmp_path)
    redis.start()
    env = {"CHATD_DESK_LEASE_SECONDS": str(LEASE), "CHATD_GRACE_SECONDS": "60",
           "CHATD_REDIS_URL": redis.url, "CHATD_LOG_LEVEL": "info",
           "CHATD_TRUSTED_PROXIES": "127.0.0.1", **(env or {})}
    servers = []
    for name in ("a", "b", "c"):
        (tmp_path / name).mkdir()
        servers.append(Server(tmp_path / name, env, database_url))
    for email, who in engineers:
        servers[0].cli("engineer", "add", email, "--name", who, "--password-stdin",
                       stdin=password + "\n")
    proxy: subprocess.Popen[bytes] | None = None
    lb_log = (tmp_path / "haproxy.log").open("ab")
    try:
        await servers[0].start()
        for s in servers[1:]:
            s.spawn()
        for s in servers[1:]:
            await s.wait_ready()
        url = servers[0].url
        if lb:
            lb_port = free_port()
            lb_env = {**os.environ, "CHATD_LB_PORT": str(lb_port),
                      **{f"CHATD_PORT_{n}": str(s.port) for n, s in enumerate(servers, 1)}}
            proxy = subprocess.Popen(["haproxy", "-db", "-f", str(CONFIG)], env=lb_env,
                                     stdout=lb_log, stderr=subprocess.STDOUT)
            url = f"http://127.0.0.1:{lb_port}"
            async with aiohttp.ClientSession() as http:
                await until(lambda: _is(http, url + "/readyz", 200), 20, "HAProxy did not come up")
            await asyncio.sleep(1.5)  # HAProxy counts every server up until its first check
        yield Trio(servers, redis, url)
    finally:
        if proxy is not None:
            stop_process(proxy, grace=5)
        lb_log.close()
        for s in servers:
            if s.proc is not None and s.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(s.proc.pid, 18)  # SIGCONT: a paused process cannot stop
            s.stop()
        redis.stop()
