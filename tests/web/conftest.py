"""Fixtures for HTTP tests that need a real ``python -m chatd serve`` process: its memory is
then its own, not shared with pytest and the test's client, and its peak resident set can
be read (and reset) from /proc."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from bench.server_process import ServerProcess, chatd_argv, free_port, stop_process


def proc_status_kib(pid: int, field: str) -> int:
    """A ``Vm*`` line of /proc/PID/status (VmRSS now, VmHWM the peak), in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False where not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
    except OSError:
        return False
    return True


class PeakRSS:
    """The peak RSS of a process over a block: VmHWM after resetting it, or else the highest
    of frequent VmRSS samples taken from a thread."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before_kib = 0
        self.peak_kib = 0
        self._reset = False
        self._stop = False
        self._sampler: asyncio.Future[None] | None = None

    def _sample(self) -> None:
        import time

        while not self._stop:
            self.peak_kib = max(self.peak_kib, proc_status_kib(self.pid, "VmRSS"))
            time.sleep(0.005)

    async def __aenter__(self) -> PeakRSS:
        self.before_kib = proc_status_kib(self.pid, "VmRSS")
        self.peak_kib = self.before_kib
        self._reset = reset_peak_rss(self.pid)
        if not self._reset:
            self._sampler = asyncio.get_running_loop().run_in_executor(None, self._sample)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._sampler is not None:
            self._stop = True
            await self._sampler
        if self._reset:
            self.peak_kib = proc_status_kib(self.pid, "VmHWM")

    @property
    def growth_mib(self) -> float:
        return (self.peak_kib - self.before_kib) / 1024


class ChatdProcess:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, folder: Path) -> None:
        self.proc = proc
        self.url = url
        self.folder = folder
        self.upload_dir = folder / "uploads"

    @property
    def pid(self) -> int:
        return self.proc.pid


async def start_chatd(folder: Path, env: dict[str, str]) -> ChatdProcess:
    """chatd in ``folder``, configured by its environment alone; its standard error (not
    its output) in ``folder/chatd.stderr``."""
    port = free_port()
    server = ServerProcess.start(
        "chatd",
        chatd_argv("serve"),
        url=f"http://127.0.0.1:{port}",
        env={
            "CHATD_HOST": "127.0.0.1",
            "CHATD_PORT": str(port),
            "CHATD_DATABASE_URL": f"sqlite:///{folder / 'chatd.db'}",
            "CHATD_UPLOAD_DIR": str(folder / "uploads"),
            "CHATD_ALLOW_GUESTS": "true",
            "CHATD_LOG_LEVEL": "warning",
            **env,
        },
        cwd=folder,
        log=folder / "chatd.stderr",
        log_stdout=False,
    )
    await server.wait_ready(timeout=20.0)  # ~20 s on a busy machine
    return ChatdProcess(server.proc, server.url, folder)


def stop_chatd(proc: subprocess.Popen[bytes]) -> None:
    stop_process(proc, grace=15.0)


@pytest.fixture
async def chatd_process(
    tmp_path: Path,
) -> AsyncIterator[Callable[..., Awaitable[ChatdProcess]]]:
    started: list[ChatdProcess] = []

    async def start(**env: str) -> ChatdProcess:
        folder = tmp_path / f"proc{len(started)}"
        folder.mkdir()
        p = await start_chatd(folder, env)
        started.append(p)
        return p

    yield start
    for p in started:
        stop_chatd(p.proc)
