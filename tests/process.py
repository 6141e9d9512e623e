"""A real ``python -m chatd serve`` process for tests that kill, restart or measure it."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import socketio

from tests.conftest import WIDGET_SECRET


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            # The test run's own CHATD_* knobs (CHATD_TEST_SKIP_RT, CHATD_CRASH_STORM_*)
            # are not chatd settings: a chatd given them refuses to start.
            **{k: v for k, v in os.environ.items() if not k.startswith("CHATD_")},
            "CHATD_DATABASE_URL": f"sqlite:///{tmp / 'chatd.db'}",
            "CHATD_UPLOAD_DIR": str(tmp / "uploads"),
            "CHATD_WIDGET_SECRET": WIDGET_SECRET,
            "CHATD_ALLOW_GUESTS": "true",
            "CHATD_LOG_LEVEL": "warning",
            **env,
        }
        self.log = tmp / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def cli(self, *args: str, stdin: str = "", check: bool = True) -> str:
        out = subprocess.run(
            [sys.executable, "-m", "chatd", *args],
            input=stdin.encode(),
            env=self.env,
            capture_output=True,
            timeout=60,
            check=check,
        )
        return out.stdout.decode()

    async def start(self) -> None:
        self.spawn()
        await self.wait_ready()

    def spawn(self) -> None:
        """Start the process without waiting for it to be ready."""
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "chatd",
                    "serve",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                ],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    async def wait_ready(self, poll: float = 0.1, timeout: float = 20.0) -> None:
        """Wait until ``/readyz`` answers 200 (``poll`` apart, at most ``timeout`` s)."""
        assert self.proc is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        async with aiohttp.ClientSession() as http:
            while loop.time() < deadline:
                try:
                    async with http.get(self.url + "/readyz") as r:
                        if r.status == 200:
                            return
                except aiohttp.ClientError:
                    pass
                if self.proc.poll() is not None:
                    break
                await asyncio.sleep(poll)
        raise AssertionError("chatd did not start: " + self.log.read_text()[-2000:])

    def kill9(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None


async def connect(url: str, ns: str, auth: Any) -> socketio.AsyncClient:
    c = socketio.AsyncClient(reconnection=False)
    await c.connect(url, namespaces=[ns], auth=auth, transports=["websocket"], wait_timeout=10)
    return c
