"""One way to start, wait for and stop a server process (``python -m chatd serve`` above all),
shared by the benchmarks and the tests.

It owns the whole life of such a process: the environment it gets (this process's, without
its ``CHATD_*`` variables, plus the given ones), its start with its output in a log file,
the wait until a readiness URL (``/readyz``) answers 200, and its stop by PID: SIGTERM,
SIGKILL after a grace period, and always reaped.

Why here: the benchmarks cannot import from ``tests/`` (a benchmark runs without the test
suite), while the tests may import from ``bench/``. The module imports neither ``chatd`` nor
``tests`` (only the standard library and aiohttp), so it starts any server, not only chatd.
It is built on ``subprocess.Popen``, not asyncio's subprocesses, because tests stop their
servers from synchronous fixtures after the event loop is gone; async code awaits
``stop_async``, which waits in a thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import aiohttp


class NotReady(RuntimeError):
    """A server exited, or did not answer its readiness URL in time (the log's tail says why)."""


def free_port() -> int:
    # The port is free now; the server binds it a moment later. Good enough on loopback.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without its ``CHATD_*`` variables, plus ``extra``.

    The caller's own CHATD_* (an operator's shell, a test run's knobs such as
    CHATD_TEST_SKIP_RT) are not the child's settings: a chatd given unknown ones refuses to
    start, and known ones would change what is measured or tested."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CHATD_")}
    env.update(extra or {})
    return env


def chatd_argv(*args: str, python_options: Sequence[str] = ()) -> list[str]:
    """``python [python_options] -m chatd ARGS`` with this interpreter."""
    return [sys.executable, *python_options, "-m", "chatd", *args]


@dataclass
class ServerProcess:
    """A server this test or benchmark started, reachable at ``url``. ``group``: it leads a
    process group of its own (a shell script that ends in the server), signalled as a whole.
    ``grace``: how long a stop waits after SIGTERM before SIGKILL."""

    name: str
    proc: subprocess.Popen[bytes]
    url: str
    log: Path
    group: bool = False
    grace: float = 15.0

    @classmethod
    def start(
        cls,
        name: str,
        argv: Sequence[str],
        *,
        url: str,
        log: Path,
        env: Mapping[str, str] | None = None,
        cwd: Path | None = None,
        append: bool = False,
        log_stdout: bool = True,
        stdin: bytes | None = None,
        group: bool = False,
        grace: float = 15.0,
    ) -> ServerProcess:
        """Start ``argv`` with ``child_env(env)`` in ``cwd``. Its standard error, and its
        standard output unless ``log_stdout`` is false, go to ``log`` (appended to with
        ``append``: one log across restarts). ``stdin``, if given, is written to its standard
        input, which is then closed; otherwise it reads nothing."""
        with open(log, "ab" if append else "wb") as out:  # the child keeps its own copy
            proc = subprocess.Popen(
                list(argv),
                env=child_env(env),
                cwd=cwd,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                stdout=out if log_stdout else subprocess.DEVNULL,
                stderr=subprocess.STDOUT if log_stdout else out,
                start_new_session=group,
            )
        if stdin is not None:
            assert proc.stdin is not None
            proc.stdin.write(stdin)
            proc.stdin.close()
        return cls(name, proc, url, log, group, grace)

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """Its exit status, or None while it runs."""
        return self.proc.poll()

    async def wait_ready(
        self, path: str = "/readyz", *, timeout: float = 20.0, poll: float = 0.1
    ) -> None:
        """Wait until ``url + path`` answers 200, asking ``poll`` seconds apart for at most
        ``timeout`` seconds. A process that exits first or does not answer in time is
        stopped and NotReady raised with the tail of its log; a cancelled wait stops it too."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            async with aiohttp.ClientSession() as http:
                while True:
                    # a request may take whatever time is left, never less than a poll
                    budget = aiohttp.ClientTimeout(total=max(deadline - loop.time(), poll))
                    # refused while it starts; TimeoutError is an OSError
                    with contextlib.suppress(aiohttp.ClientError, OSError):
                        async with http.get(self.url + path, timeout=budget) as r:
                            if r.status == 200:
                                return
                    if self.returncode is not None:
                        raise NotReady(f"{self.name} exited with status {self.returncode}"
                                       f" before {path} answered:\n{self.log_tail()}")
                    if loop.time() >= deadline:
                        raise NotReady(f"{self.name} did not answer {self.url}{path} with 200"
                                       f" in {timeout:g} s:\n{self.log_tail()}")
                    await asyncio.sleep(poll)
        except BaseException:
            self.stop()
            raise

    def stop(self, grace: float | None = None) -> int:
        """SIGTERM, then SIGKILL if it is still running after ``grace`` seconds (``self.grace``
        unless given); returns its exit status once reaped. Stopping a stopped process only
        returns its status."""
        return stop_process(self.proc, self.grace if grace is None else grace, group=self.group)

    async def stop_async(self, grace: float | None = None) -> int:
        """``stop`` for async code: the wait runs in a thread, the event loop goes on."""
        return await asyncio.to_thread(self.stop, grace)

    def kill(self) -> int:
        """SIGKILL now (a crash, as tests simulate it); returns once it is reaped."""
        if self.proc.poll() is None:
            _signal(self.proc, signal.SIGKILL, self.group)
        return self.proc.wait()

    def log_tail(self, lines: int = 30) -> str:
        if not self.log.exists():
            return ""
        text = self.log.read_text(encoding="utf-8", errors="replace").splitlines()
        return "\n".join(text[-lines:])


def stop_process(proc: subprocess.Popen[bytes], grace: float = 15.0, *,
                 group: bool = False) -> int:
    """Stop ``proc`` by its PID (its process group with ``group``): SIGTERM, then SIGKILL if
    it still runs after ``grace`` seconds; always reaped. Returns its exit status."""
    if proc.poll() is None:
        _signal(proc, signal.SIGTERM, group)
        try:
            return proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            _signal(proc, signal.SIGKILL, group)
    return proc.wait()


def _signal(proc: subprocess.Popen[bytes], sig: signal.Signals, group: bool) -> None:
    if group:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
    else:
        proc.send_signal(sig)  # a no-op once it is reaped: its PID may be reused by then
