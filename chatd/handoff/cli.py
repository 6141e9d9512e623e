"""``chatd handoff list|show|retry``: the outbox seen and steered by operators."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..core.clock import SystemClock
from ..core.errors import DeskError
from ..core.models import iso
from ..core.ports import Store
from ..core.transcript import HANDOFF_STATES


def add_parser(sub: Any) -> None:
    h = sub.add_parser("handoff", help="inspect and retry transcript handoffs")
    hsub = h.add_subparsers(dest="action", required=True)
    ls = hsub.add_parser("list", help="list handoffs, newest first")
    ls.add_argument("--state", choices=HANDOFF_STATES)
    ls.add_argument("--limit", type=int, default=100)
    show = hsub.add_parser("show", help="everything about one handoff")
    show.add_argument("id", help="a handoff id (or a unique prefix of 8+ characters)")
    retry = hsub.add_parser("retry", help="deliver a dead-lettered handoff again")
    which = retry.add_mutually_exclusive_group(required=True)
    which.add_argument("id", nargs="?", help="a handoff id (or a unique prefix)")
    which.add_argument("--all-failed", action="store_true", help="every dead-lettered one")


def _line(h: Any) -> str:
    ticket = h.ticket.get("id", "") if h.ticket else ""
    when = iso(h.next_attempt_at) if h.state == "pending" else iso(h.updated_at)
    error = (h.last_error or h.result or "").replace("\n", " ")[:80]
    return "\t".join(
        [h.id, h.state, h.backend, h.session_id, str(h.attempts), when or "", str(ticket), error]
    )


async def run(store: Store, args: argparse.Namespace, out: Any, err: Any) -> int:
    try:
        if args.action == "list":
            rows = await store.list_handoffs(args.state, max(1, args.limit))
            if not rows:
                print("no handoffs" + (f" in state {args.state}" if args.state else ""),
                      file=out)
                return 0
            print("id\tstate\tbackend\tsession\tattempts\twhen\tticket\tlast", file=out)
            for h in rows:
                print(_line(h), file=out)
            return 0
        if args.action == "show":
            shown = await store.get_handoff(args.id)
            if shown is None:
                print(f"chatd: no handoff {args.id}", file=err)
                return 1
            print(json.dumps(shown.to_wire(), indent=2, ensure_ascii=False), file=out)
            return 0
        now = SystemClock().now()
        if args.all_failed:
            n = await store.retry_failed_handoffs(now)
            print(f"{n} failed handoff{'s' if n != 1 else ''} queued for delivery again",
                  file=out)
            return 0
        found = await store.get_handoff(args.id)
        if found is None:
            print(f"chatd: no handoff {args.id}", file=err)
            return 1
        h = await store.retry_handoff(found.id, now)
        print(f"handoff {h.id} ({h.backend}) is {h.state}; the server delivers it shortly",
              file=out)
        return 0
    except DeskError as exc:
        print(f"chatd: {exc.message}", file=err)
        return 1
