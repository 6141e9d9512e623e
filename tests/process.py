"""A real ``python -m chatd serve`` process for tests that kill, restart or measure it."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import socketio

from bench.server_process import ServerProcess, chatd_argv, child_env, free_port
from tests.conftest import WIDGET_SECRET


class Server:
    """One chatd, restartable: every start is a new process on the same port, database,
    uploads and log (``server.log``, appended to)."""

    def __init__(self, tmp: Path, env: dict[str, str], database_url: str | None = None) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # Without the test run's own CHATD_* knobs (CHATD_TEST_SKIP_RT, CHATD_CRASH_STORM_*):
        # they are not chatd settings, and a chatd given them refuses to start.
        self.env = child_env({
            "CHATD_DATABASE_URL": database_url or f"sqlite:///{tmp / 'chatd.db'}",
            "CHATD_HANDOFF_FILE_DIR": str(tmp / "handoff"),
            "CHATD_UPLOAD_DIR": str(tmp / "uploads"),
            "CHATD_WIDGET_SECRET": WIDGET_SECRET,
            "CHATD_ALLOW_GUESTS": "true",
            "CHATD_LOG_LEVEL": "warning",
            **env,
        })
        self.log = tmp / "server.log"
        self.process: ServerProcess | None = None

    @property
    def proc(self) -> subprocess.Popen[bytes] | None:
        return None if self.process is None else self.process.proc

    def cli(self, *args: str, stdin: str = "", check: bool = True) -> str:
        out = subprocess.run(
            chatd_argv(*args),
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
        self.process = ServerProcess.start(
            "chatd",
            chatd_argv("serve", "--host", "127.0.0.1", "--port", str(self.port)),
            url=self.url,
            env=self.env,
            log=self.log,
            append=True,
        )

    async def wait_ready(self, poll: float = 0.1, timeout: float = 20.0) -> None:
        """Wait until ``/readyz`` answers 200 (``poll`` apart, at most ``timeout`` s)."""
        assert self.process is not None
        await self.process.wait_ready(timeout=timeout, poll=poll)

    def kill9(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop(grace=15.0)
        self.process = None


async def connect(url: str, ns: str, auth: Any) -> socketio.AsyncClient:
    c = socketio.AsyncClient(reconnection=False)
    await c.connect(url, namespaces=[ns], auth=auth, transports=["websocket"], wait_timeout=10)
    return c
