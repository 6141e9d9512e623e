"""What every benchmark needs: the benchmark registry entry, load processes driven over a
pipe and always stopped by PID, a chatd server started the way an operator starts it (through
bench/server_process.py, which the tests share), and small measures (CPU time of a process,
percentiles)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp

from .server_process import NotReady, ServerProcess, chatd_argv, child_env, free_port

Report = dict[str, Any]
# How long a load process may take to answer a command (set-up, settle, close).
REPLY_TIMEOUT = 120.0


@dataclass(frozen=True)
class Benchmark:
    """One entry of ``bench.__main__.BENCHMARKS``.

    ``add_arguments`` adds the benchmark's own options to its argument group; ``run`` gets
    every parsed option, prints its figures as it goes and returns them for ``--json``. A
    report's ``"passed"`` (True, False or None for "no bar") decides the exit status.
    """

    name: str
    help: str
    run: Callable[[argparse.Namespace], Awaitable[Report]]
    add_arguments: Callable[[argparse._ArgumentGroup], None] = lambda group: None


class BenchError(RuntimeError):
    """The benchmark could not be carried out (a server did not start, a client failed)."""


@dataclass
class Child:
    """A load process this benchmark started, driven over its pipes. ``stop`` ends exactly
    this PID, gracefully first."""

    name: str
    proc: asyncio.subprocess.Process
    stopped: bool = field(default=False)

    @property
    def pid(self) -> int:
        return self.proc.pid

    async def stop(self, grace: float = 15.0) -> int | None:
        if self.stopped:
            return self.proc.returncode
        self.stopped = True
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        return self.proc.returncode


async def serve_commands(
    run: Callable[[str, dict[str, Any]], Awaitable[dict[str, Any]]],
) -> bool:
    """A worker process's side of the driver's pipe: each line on stdin is a JSON command
    ``{"cmd": NAME, ...}``, answered on stdout by one line ``{"ok": true, ...}`` (what
    ``run`` returns) or ``{"ok": false, "error": ...}``. Returns True after ``close``,
    False when the driver has gone away (the worker then cleans up itself)."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=16 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while True:
        line = await reader.readline()
        if not line:
            return False
        cmd = json.loads(line)
        name = cmd["cmd"]
        try:
            reply = {"ok": True, **await run(name, cmd)}
        except Exception as exc:
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
        if name == "close":
            return True


async def start_child(
    name: str,
    argv: Sequence[str],
    *,
    env: Mapping[str, str],
    cwd: Path,
) -> Child:
    """Start the load process ``argv``, driven over its standard input and output."""
    proc = await asyncio.create_subprocess_exec(
        *argv, env=dict(env), cwd=cwd,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        # a worker's result is one JSON line with every latency of the window
        limit=256 * 1024 * 1024,
    )
    return Child(name, proc)


def plain_env() -> dict[str, str]:
    """The environment of a load process or of the relay: no CHATD_* settings, unbuffered
    output, and the bench package importable."""
    env = child_env({"PYTHONUNBUFFERED": "1"})
    # the bench package is found from the folder holding it, wherever the child runs
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


async def command(
    workers: list[Child], commands: list[dict[str, Any]], timeout: float = REPLY_TIMEOUT
) -> list[dict[str, Any]]:
    """Send each worker its command; all answers, or BenchError naming the failure."""

    async def one(w: Child, cmd: dict[str, Any]) -> dict[str, Any]:
        assert w.proc.stdin is not None and w.proc.stdout is not None
        w.proc.stdin.write(json.dumps(cmd).encode() + b"\n")
        await w.proc.stdin.drain()
        try:
            line = await asyncio.wait_for(w.proc.stdout.readline(), timeout)
        except TimeoutError:
            raise BenchError(f"{w.name} did not answer {cmd['cmd']!r} in {timeout:g} s") from None
        if not line:
            raise BenchError(f"{w.name} exited during {cmd['cmd']!r}")
        reply: dict[str, Any] = json.loads(line)
        if not reply.get("ok"):
            raise BenchError(f"{w.name}: {cmd['cmd']!r} failed: {reply.get('error')}")
        return reply

    return list(await asyncio.gather(*(one(w, c) for w, c in zip(workers, commands, strict=True))))


async def close_workers(workers: list[Child]) -> None:
    """Ask each worker still running to ``close`` (it cleans up and exits), 10 s each."""
    for w in workers:
        if w.proc.returncode is not None or w.stopped or w.proc.stdin is None:
            continue
        with contextlib.suppress(Exception):
            w.proc.stdin.write(b'{"cmd": "close"}\n')
            await w.proc.stdin.drain()
            await asyncio.wait_for(w.proc.wait(), 10)


def chatd_env(tmp: Path, **settings: Any) -> dict[str, str]:
    """The environment of a benchmark chatd: its own database and uploads in ``tmp``,
    guests allowed, quiet logs, plus ``settings`` as ``CHATD_<NAME>``."""
    env = child_env({
        "CHATD_DATABASE_URL": f"sqlite:///{tmp / 'bench.db'}",
        "CHATD_UPLOAD_DIR": str(tmp / "uploads"),
        "CHATD_ALLOW_GUESTS": "true",
        "CHATD_LOG_LEVEL": "warning",
        "PYTHONUNBUFFERED": "1",
    })
    for key, value in settings.items():
        env[f"CHATD_{key.upper()}"] = str(value).lower() if isinstance(value, bool) else str(value)
    return env


async def add_engineer(
    env: Mapping[str, str], cwd: Path, email: str, name: str, password: str
) -> None:
    """``chatd engineer add`` as an operator runs it (before the server starts)."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "chatd", "engineer", "add", email, "--name", name,
        "--password-stdin",
        env=dict(env), cwd=cwd,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(password.encode() + b"\n"), 60)
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise BenchError(f"chatd engineer add {email} did not finish in 60 s") from None
    if proc.returncode != 0:
        raise BenchError(f"chatd engineer add {email} failed: {out.decode(errors='replace')}")


async def start_server(
    name: str, argv: Callable[[int], list[str]], ready_path: str, *,
    env: Mapping[str, str], cwd: Path, log: Path,
) -> tuple[ServerProcess, str]:
    """A server process on a free loopback port (``argv(port)``), once ``ready_path``
    answers 200 (within 30 s); stopped again if it does not."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = ServerProcess.start(name, argv(port), url=url, env=env, cwd=cwd, log=log)
    try:
        await server.wait_ready(ready_path, timeout=30.0)
    except NotReady as exc:
        raise BenchError(str(exc)) from None
    return server, url


async def start_chatd(
    tmp: Path, env: Mapping[str, str], *, profile_to: Path | None = None
) -> tuple[ServerProcess, str]:
    """``python -m chatd serve`` on a free loopback port, ready to serve; optionally under
    cProfile (the profile is written when the process is stopped with SIGTERM)."""
    profile = ["-m", "cProfile", "-o", str(profile_to)] if profile_to is not None else []
    return await start_server(
        "chatd",
        lambda port: chatd_argv("serve", "--host", "127.0.0.1", "--port", str(port),
                                python_options=profile),
        "/readyz", env=env, cwd=tmp, log=tmp / "chatd.log",
    )


async def login(
    url: str, email: str, password: str, timeout: float = 120.0,
    headers: Mapping[str, str] | None = None,
) -> str:
    """An engineer API token from ``POST /api/login``. Logins are rate limited per address
    (a burst of 10): past that, wait as the server asks, within ``timeout``. ``headers``
    go with the request (an ``X-Forwarded-For`` address behind a trusted proxy)."""
    deadline = time.monotonic() + timeout
    async with aiohttp.ClientSession() as http:
        while True:
            async with http.post(
                url + "/api/login", json={"email": email, "password": password},
                headers=headers,
            ) as r:
                body = await r.json()
                if r.status == 200:
                    return str(body["token"])
                if r.status != 429 or time.monotonic() > deadline:
                    raise BenchError(f"login {email}: HTTP {r.status} {body}")
            await asyncio.sleep(2.0)


_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a live process (Linux /proc), or None where unknown."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    # after the command name: state is field 3, utime 14 and stime 15 (man 5 proc)
    return (int(fields[11]) + int(fields[12])) / _TICKS


def rss_bytes(pid: int) -> int | None:
    """Resident memory of a live process (``VmRSS`` of /proc/PID/status), or None."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024  # the kernel writes kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def machine_busy_seconds() -> float | None:
    """CPU time all processors spent busy since boot, summed (Linux /proc/stat)."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    # user nice system idle iowait irq softirq steal ...: idle and iowait are not busy
    return (sum(fields[:8]) - fields[3] - fields[4]) / _TICKS


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values."""
    if not sorted_values:
        return None
    rank = max(1, min(len(sorted_values), math.ceil(q / 100 * len(sorted_values))))
    return sorted_values[rank - 1]


# The PostgreSQL server benchmarks make their databases on (each dropped after).
POSTGRES_URL = os.environ.get(
    "CHATD_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)


async def new_postgres_database() -> str:
    """A new database on the benchmark's PostgreSQL server; its URL."""
    import asyncpg

    name = f"chatd_bench_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=10)
    except (OSError, asyncpg.PostgresError) as exc:
        raise BenchError(f"no PostgreSQL at CHATD_BENCH_POSTGRES_URL ({exc})") from None
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()
    parts = urlsplit(POSTGRES_URL)
    return urlunsplit(parts._replace(path="/" + name))


async def drop_postgres_database(url: str) -> None:
    """Drop a database new_postgres_database made."""
    import asyncpg

    name = urlsplit(url).path.lstrip("/")
    conn = await asyncpg.connect(POSTGRES_URL, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()
