"""``python -m bench [--only NAME] [--json FILE] [options]``: run the benchmarks.

A benchmark is a ``harness.Benchmark`` (a name, a ``run`` coroutine and its options);
adding one is one line in ``BENCHMARKS``. Those of ``ON_REQUEST`` run only when named with
``--only`` (``make bench`` leaves them out). The exit status is 1 when a benchmark misses its
bar, 2 when one could not be carried out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from . import chat_load, cluster, durability, purge, surge, uploads
from .harness import BenchError, Benchmark

BENCHMARKS: list[Benchmark] = [
    chat_load.BENCHMARK,
    uploads.BENCHMARK,
    surge.BENCHMARK,
    durability.HANDOFF,
    durability.RESTART,
]
# Run only when named with --only: not part of a plain `python -m bench` (or `make bench`).
ON_REQUEST: list[Benchmark] = [purge.BENCHMARK, cluster.BENCHMARK]


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", action="append", metavar="NAME",
                   choices=[b.name for b in BENCHMARKS + ON_REQUEST],
                   help="run only this benchmark (repeatable)")
    p.add_argument("--list", action="store_true", help="list the benchmarks and exit")
    p.add_argument("--json", metavar="FILE", help="also write every figure to FILE as JSON")
    p.add_argument("--seconds", type=float, default=10.0,
                   help="measured window of each run (default %(default)s)")
    p.add_argument("--warmup", type=float, default=2.0,
                   help="load before the measured window (default %(default)s)")
    for b in BENCHMARKS + ON_REQUEST:
        b.add_arguments(p.add_argument_group(f"{b.name}: {b.help}"))
    return p


async def run_all(args: argparse.Namespace) -> tuple[dict[str, Any], int]:
    reports: dict[str, Any] = {}
    status = 0
    for b in BENCHMARKS + ON_REQUEST:
        if (args.only or b in ON_REQUEST) and b.name not in (args.only or ()):
            continue
        try:
            report = await b.run(args)
        except BenchError as exc:
            print(f"{b.name}: could not run: {exc}", file=sys.stderr, flush=True)
            reports[b.name] = {"passed": None, "error": str(exc)}
            status = 2
            continue
        reports[b.name] = report
        if report.get("passed") is False and status == 0:
            status = 1
    return reports, status


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        for b in BENCHMARKS + ON_REQUEST:
            print(f"{b.name}\t{b.help}")
        return 0
    if not 0 < args.seconds <= 600 or not 0 <= args.warmup <= 60:
        print("bench: --seconds must be in (0, 600] and --warmup in [0, 60]", file=sys.stderr)
        return 2
    try:
        reports, status = asyncio.run(run_all(args))
    except KeyboardInterrupt:  # every child was stopped on the way out
        print("bench: interrupted", file=sys.stderr)
        return 130
    if args.json:
        Path(args.json).write_text(json.dumps(reports, indent=2) + "\n", encoding="utf-8")
    return status


if __name__ == "__main__":
    sys.exit(main())
