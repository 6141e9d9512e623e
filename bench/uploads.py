"""The upload benchmark: a large text log through chatd against a bare aiohttp handler.

Both servers run as their own processes, side by side, in the same run. The bare handler
is the least a server can do with the same multipart body: aiohttp's multipart reader,
``read_chunk`` with chatd's chunk size, aiofiles writes to a temporary file, fsync, rename.
chatd does all of that and also authenticates the customer's resume token, hashes the file
(SHA-256), checks every byte against the text rule, stores the attachment and announces it
in the chat. Each round uploads once to each server, back to back (which goes first
alternates), so that both see the same machine; the ratio is the median of the rounds'
ratios, and each server's throughput the median of its rounds.

Memory: the peak resident set of each server process during each upload, less its size
before (Linux VmHWM, reset through /proc/PID/clear_refs; sampled VmRSS where that is not
allowed). The figure is the largest growth over the rounds.

Bars: chatd's throughput >= 0.8 x the bare handler's, and chatd's peak RSS growth <= 16 MiB
for a 100 MiB upload. ``python -m bench.uploads`` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp

from .harness import (
    BenchError,
    Benchmark,
    Report,
    chatd_env,
    cpu_seconds,
    start_chatd,
    start_server,
)
from .server_process import ServerProcess

MiB = 1024 * 1024
RATIO_BAR = 0.8
RSS_BAR_MIB = 16.0
BOUNDARY = "chatd-bench-boundary"
LOG_LINE = (
    b"2026-01-02T03:04:05.678Z INFO  [worker-3] GET /api/v2/items/48213 200 12.4ms "
    b"user=7f3a9c tenant=acme trace=9b1f0c2d\n"
)


def add_arguments(group: argparse._ArgumentGroup) -> None:
    group.add_argument("--upload-mib", type=int, default=100,
                       help="size of the uploaded log in MiB (default %(default)s)")
    group.add_argument("--upload-rounds", type=int, default=5,
                       help="measured uploads to each server (default %(default)s)")


# ---------------------------------------------------------------------- the bare handler


def serve_bare(port: int, folder: Path) -> None:
    """The baseline server (run as ``python -m bench.uploads --serve-bare PORT FOLDER``)."""
    import aiofiles
    import aiofiles.os
    from aiohttp import BodyPartReader, web

    from chatd.files import CHUNK_SIZE

    async def upload(request: web.Request) -> web.Response:
        reader = await request.multipart()
        part = await reader.next()
        assert isinstance(part, BodyPartReader)
        tmp = folder / f".{uuid.uuid4().hex}.part"
        size = 0
        async with aiofiles.open(tmp, "xb") as f:
            while chunk := await part.read_chunk(CHUNK_SIZE):
                size += len(chunk)
                await f.write(chunk)
            await f.flush()
            await asyncio.to_thread(os.fsync, f.fileno())
        await aiofiles.os.replace(tmp, folder / uuid.uuid4().hex)
        return web.json_response({"size": size}, status=201)

    async def ready(request: web.Request) -> web.Response:
        return web.json_response({"status": "ready"})

    folder.mkdir(parents=True, exist_ok=True)
    app = web.Application()
    app.router.add_post("/upload", upload)
    app.router.add_get("/readyz", ready)
    web.run_app(app, host="127.0.0.1", port=port, print=None)


# ---------------------------------------------------------------------- measuring


def _status_kib(pid: int, field: str) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise BenchError(f"/proc/{pid}/status has no {field}")


class PeakRSS:
    """Peak RSS growth of a process over a block (MiB)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.before = 0
        self.peak = 0
        self._hwm = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _status_kib(self.pid, "VmRSS"))

    def __enter__(self) -> PeakRSS:
        self.before = self.peak = _status_kib(self.pid, "VmRSS")
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
            self._hwm = True
        except OSError:
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join()
        if self._hwm:
            self.peak = _status_kib(self.pid, "VmHWM")

    @property
    def growth_mib(self) -> float:
        return (self.peak - self.before) / 1024


async def body(size: int) -> AsyncIterator[bytes]:
    """A multipart body holding ``size`` bytes of log lines, made as it is sent."""
    yield (
        f"--{BOUNDARY}\r\nContent-Disposition: form-data; name=\"file\"; "
        f"filename=\"server.log\"\r\nContent-Type: text/plain\r\n\r\n"
    ).encode()
    block = LOG_LINE * (256 * 1024 // len(LOG_LINE))
    sent = 0
    while sent < size:
        piece = block if size - sent >= len(block) else block[: size - sent]
        sent += len(piece)
        yield piece
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


async def upload_once(
    http: aiohttp.ClientSession, url: str, size: int, token: str | None
) -> tuple[float, Any]:
    headers = {"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    t0 = time.perf_counter()
    async with http.post(url, data=body(size), headers=headers) as r:
        answer = await r.json()
        elapsed = time.perf_counter() - t0
        if r.status != 201:
            raise BenchError(f"upload to {url} answered {r.status}: {answer}")
    return elapsed, answer


async def chatd_session(url: str) -> tuple[Any, str, str]:
    """A waiting chat of a guest customer: (client, session id, resume token)."""
    import socketio

    client = socketio.AsyncClient(reconnection=False)
    await client.connect(url, namespaces=["/customer"], transports=["websocket"],
                         auth={"guest": {"name": "Bench", "email": "bench@example.com"}},
                         wait_timeout=10)
    r = await client.call("chat:request", {"topic": "upload benchmark"},
                          namespace="/customer", timeout=30)
    if not r.get("ok"):
        await client.disconnect()
        raise BenchError(f"chat:request failed: {r}")
    return client, r["session"]["id"], r["resume_token"]


# ---------------------------------------------------------------------- the run


async def run(args: argparse.Namespace) -> Report:
    size = args.upload_mib * MiB
    rounds = args.upload_rounds
    if not 1 <= args.upload_mib <= 4096 or not 1 <= rounds <= 20:
        raise BenchError("need 1 <= --upload-mib <= 4096 and 1 <= --upload-rounds <= 20")
    print(f"uploads: a {args.upload_mib} MiB text log, {rounds} rounds to each server, "
          "alternating", flush=True)
    children: list[ServerProcess] = []
    with tempfile.TemporaryDirectory(prefix="chatd-bench-uploads-") as tmp_name:
        tmp = Path(tmp_name)
        try:
            bare, bare_url = await start_server(
                "bare",
                lambda port: [sys.executable, "-m", "bench.uploads", "--serve-bare",
                              str(port), str(tmp / "bare")],
                "/readyz", env=dict(os.environ), cwd=Path.cwd(), log=tmp / "bare.log",
            )
            children.append(bare)
            env = chatd_env(
                tmp,
                upload_max_bytes=size + MiB,
                upload_session_max_bytes=(rounds + 2) * (size + MiB),
                upload_session_max_count=1000,
                upload_rate=1000,
                upload_burst=1000,
            )
            chatd, chatd_url = await start_chatd(tmp, env)
            children.append(chatd)
            return await _measure(size, rounds, bare, bare_url, chatd, chatd_url)
        finally:
            for child in reversed(children):
                await child.stop_async()


async def _measure(
    size: int, rounds: int, bare: ServerProcess, bare_url: str, chatd: ServerProcess,
    chatd_url: str,
) -> Report:
    client, session_id, token = await chatd_session(chatd_url)
    targets = {
        "bare": (bare, bare_url + "/upload", None),
        "chatd": (chatd, f"{chatd_url}/api/sessions/{session_id}/attachments", token),
    }
    seconds: dict[str, list[float]] = {name: [] for name in targets}
    growth: dict[str, list[float]] = {name: [] for name in targets}
    cpu: dict[str, list[float]] = {name: [] for name in targets}
    timeout = aiohttp.ClientTimeout(total=600)
    try:
        async with aiohttp.ClientSession(timeout=timeout) as http:
            for _, url, tok in targets.values():  # warm up code paths, pools and caches
                await upload_once(http, url, MiB, tok)
            for i in range(rounds):
                order = ["bare", "chatd"] if i % 2 == 0 else ["chatd", "bare"]
                for name in order:
                    child, url, tok = targets[name]
                    cpu0 = cpu_seconds(child.pid)
                    with PeakRSS(child.pid) as rss:
                        elapsed, answer = await upload_once(http, url, size, tok)
                    cpu1 = cpu_seconds(child.pid)
                    if cpu0 is not None and cpu1 is not None:
                        cpu[name].append(cpu1 - cpu0)
                    if name == "chatd" and answer["attachment"]["size"] != size:
                        raise BenchError(f"chatd stored {answer['attachment']['size']} bytes")
                    seconds[name].append(elapsed)
                    growth[name].append(rss.growth_mib)
                print(f"  round {i + 1}: bare {size / MiB / seconds['bare'][-1]:6.1f} MiB/s, "
                      f"chatd {size / MiB / seconds['chatd'][-1]:6.1f} MiB/s "
                      f"(ratio {seconds['bare'][-1] / seconds['chatd'][-1]:.2f}), "
                      f"chatd peak RSS +{growth['chatd'][-1]:.1f} MiB", flush=True)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()
    mibps = {n: size / MiB / statistics.median(s) for n, s in seconds.items()}
    ratio = statistics.median(
        b / c for b, c in zip(seconds["bare"], seconds["chatd"], strict=True)
    )
    chatd_growth = max(growth["chatd"])
    ratio_ok = ratio >= RATIO_BAR
    rss_ok = chatd_growth <= RSS_BAR_MIB
    cpu_median = {n: statistics.median(c) if c else None for n, c in cpu.items()}
    for name, label in (("bare", "bare aiohttp"), ("chatd", "chatd")):
        used = cpu_median[name]
        print(f"  {label:13}: {mibps[name]:7.1f} MiB/s (median), "
              f"peak RSS growth {max(growth[name]):.1f} MiB"
              + (f", server CPU {used:.2f} s per upload" if used is not None else ""),
              flush=True)
    print(f"  load average during the run: {os.getloadavg()[0]:.2f} on "
          f"{os.cpu_count()} CPUs (the ratio needs a CPU free for chatd's hashing)",
          flush=True)
    print(f"  throughput ratio chatd/bare: {ratio:.2f} (bar >= {RATIO_BAR}) "
          f"{'ok' if ratio_ok else 'MISSED'}", flush=True)
    print(f"  chatd peak RSS growth: {chatd_growth:.1f} MiB (bar <= {RSS_BAR_MIB:g} MiB) "
          f"{'ok' if rss_ok else 'MISSED'}", flush=True)
    return {
        "upload_mib": size // MiB,
        "rounds": rounds,
        "bare_mib_per_s": round(mibps["bare"], 1),
        "chatd_mib_per_s": round(mibps["chatd"], 1),
        "ratio": round(ratio, 3),
        "ratio_bar": RATIO_BAR,
        "chatd_peak_rss_growth_mib": round(chatd_growth, 1),
        "bare_peak_rss_growth_mib": round(max(growth["bare"]), 1),
        "bare_cpu_s_per_upload": _rounded(cpu_median["bare"]),
        "chatd_cpu_s_per_upload": _rounded(cpu_median["chatd"]),
        "load_average": round(os.getloadavg()[0], 2),
        "rss_bar_mib": RSS_BAR_MIB,
        "passed": ratio_ok and rss_ok,
    }


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 3)


BENCHMARK = Benchmark(
    name="uploads",
    help="a 100 MiB log upload through chatd against a bare aiohttp handler: "
         "throughput ratio and peak RSS growth",
    run=run,
    add_arguments=add_arguments,
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--serve-bare"]:
        serve_bare(int(argv[1]), Path(argv[2]))
        return 0
    p = argparse.ArgumentParser(prog="python -m bench.uploads", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p.add_argument_group("uploads"))
    args = p.parse_args(argv)
    try:
        report = asyncio.run(run(args))
    except BenchError as exc:
        print(f"uploads: could not run: {exc}", file=sys.stderr)
        return 2
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
