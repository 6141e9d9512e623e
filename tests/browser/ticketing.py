"""A ticketing system for the browser tests, behind chatd's webhook handoff backend."""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web


class Ticketing:
    """A ticketing system behind chatd's webhook backend: it files every transcript it gets
    and answers with the ticket's id and link, as a real one would."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.url = ""

    def settings(self) -> dict[str, Any]:
        return {
            "handoff_backends": ("webhook",),
            "handoff_webhook_url": self.url,
            "handoff_webhook_secret": "whsec_" + base64.b64encode(b"k" * 32).decode(),
        }

    async def hook(self, request: web.Request) -> web.Response:
        self.received.append(json.loads(await request.read()))
        number = f"SUP-{1041 + len(self.received)}"
        return web.json_response(
            {"ticket": {"id": number, "url": f"https://tickets.example/{number}"}}
        )
