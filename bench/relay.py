"""A bare python-socketio relay: the floor chatd's messaging is measured against.

Same server stack as chatd (aiohttp + python-socketio ``AsyncServer``), same namespaces
(``/customer``, ``/engineer``) and event names, same shape of acknowledgement and of
``message:new``, and the same fan-out (the session's room in both namespaces, skipping the
sender). What it leaves out is everything chatd is for: no auth, no validation, no desk,
nothing stored. ``join {session_id}`` puts a connection in a session's room.

    python -m bench.relay --host 127.0.0.1 --port 8099
"""

from __future__ import annotations

import argparse
import uuid
from datetime import UTC, datetime
from typing import Any

import socketio
from aiohttp import web

from chatd.cli import event_loop
from chatd.web.sockets import Manager

NAMESPACES = ("/customer", "/engineer")


def _room(session_id: str) -> str:
    return f"session:{session_id}"


def create_app(*, inline_emit: bool = False) -> web.Application:
    # ``inline_emit``: chatd's room manager (an event sent to each member in turn) instead
    # of the library's (a task per recipient), to compare like with like.
    options: dict[str, Any] = {"client_manager": Manager()} if inline_emit else {}
    sio = socketio.AsyncServer(
        async_mode="aiohttp", cors_allowed_origins=[], logger=False, engineio_logger=False,
        **options,
    )
    app = web.Application()
    sio.attach(app)
    seqs: dict[str, int] = {}

    def register(namespace: str) -> None:
        role = namespace.strip("/")

        async def connect(sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
            return True

        async def join(sid: str, data: Any) -> dict[str, Any]:
            await sio.enter_room(sid, _room(data["session_id"]), namespace=namespace)
            return {"ok": True}

        async def message_send(sid: str, data: Any) -> dict[str, Any]:
            session_id = data["session_id"]
            seq = seqs.get(session_id, 0) + 1
            seqs[session_id] = seq
            msg = {
                "id": str(uuid.uuid4()),
                "session_id": session_id,
                "seq": seq,
                "ts": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "sender": {"role": role, "id": sid, "name": role},
                "kind": "text",
                "body": data["body"],
                "client_msg_id": data["client_msg_id"],
            }
            payload = {"session_id": session_id, "message": msg}
            for ns in NAMESPACES:
                await sio.emit(
                    "message:new", payload, room=_room(session_id), namespace=ns, skip_sid=sid
                )
            return {"ok": True, "message": msg, "duplicate": False}

        sio.on("connect", connect, namespace=namespace)
        sio.on("join", join, namespace=namespace)
        sio.on("message:send", message_send, namespace=namespace)

    for ns in NAMESPACES:
        register(ns)

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app.router.add_get("/healthz", healthz)
    return app


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m bench.relay", description=__doc__)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--inline-emit", action="store_true",
                   help="use chatd's room manager (sends to each member in turn)")
    args = p.parse_args(argv)
    web.run_app(create_app(inline_emit=args.inline_emit), host=args.host, port=args.port,
                print=None, access_log=None, shutdown_timeout=5.0,
                loop=event_loop())  # the same loop as chatd


if __name__ == "__main__":
    main()
