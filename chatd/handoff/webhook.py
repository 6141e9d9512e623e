"""The ``webhook`` backend: the JSON transcript POSTed to a URL, signed per the Standard
Webhooks specification (docs/handoff.md#webhook).

``webhook-id`` is the handoff's id, the same on every attempt, so a receiver that already
accepted it can answer 2xx again without acting twice. The signature covers
``{webhook-id}.{webhook-timestamp}.{body}`` with HMAC-SHA256 under the key in the
``whsec_...`` secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from typing import Any

import aiohttp

from ..core.clock import Clock
from ..core.models import iso
from .base import Delivered, Job, RetryableError, check_status

SECRET_PREFIX = "whsec_"
EVENT_TYPE = "chatd.transcript"


def secret_key(secret: str) -> bytes:
    """The HMAC key in a ``whsec_<base64>`` secret; ValueError when it is not one."""
    if not secret.startswith(SECRET_PREFIX):
        raise ValueError("must look like whsec_<base64 key>")
    try:
        key = base64.b64decode(secret[len(SECRET_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the part after whsec_ must be base64") from None
    if len(key) < 24:
        raise ValueError("the key must be at least 24 bytes (32 are recommended)")
    return key


def sign(key: bytes, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode("ascii")


def _ticket_from(body: str) -> dict[str, Any] | None:
    """A receiver that files tickets may answer {"ticket": {"id": ..., "url": ...}}."""
    try:
        data = json.loads(body)
    except ValueError:
        return None
    ticket = data.get("ticket") if isinstance(data, dict) else None
    if not isinstance(ticket, dict) or not isinstance(ticket.get("id"), str | int):
        return None
    url = ticket.get("url")
    return {
        "backend": "webhook",
        "id": str(ticket["id"])[:200],
        "url": url[:2000] if isinstance(url, str) and url.startswith(("https://", "http://"))
        else None,
    }


class WebhookBackend:
    name = "webhook"

    def __init__(self, url: str, secret: str, clock: Clock, timeout: float = 30.0) -> None:
        self.url = url
        self._key = secret_key(secret)
        self.clock = clock
        self.timeout = timeout
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"User-Agent": "chatd-handoff"},
            )
        return self._http

    def payload(self, job: Job) -> bytes:
        t = job.transcript
        doc = {
            "type": EVENT_TYPE,
            "timestamp": iso(t.session.ended_at or t.session.created_at),
            "data": t.to_json(),
        }
        return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    async def deliver(self, job: Job) -> Delivered:
        body = self.payload(job)
        now = self.clock.now()
        timestamp = int(now)
        headers = {
            "Content-Type": "application/json",
            "webhook-id": job.key,
            "webhook-timestamp": str(timestamp),
            "webhook-signature": sign(self._key, job.key, timestamp, body),
        }
        try:
            async with self._session().post(
                self.url, data=body, headers=headers, allow_redirects=False
            ) as r:
                text = await r.text(errors="replace")
                check_status(r.status, text, r.headers.get("Retry-After"), now, "the webhook")
                return Delivered(
                    result=f"POSTed to the webhook: {r.status}",
                    ticket=_ticket_from(text),
                    status=r.status,
                    response=text[:500] or None,
                )
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableError(f"the webhook could not be reached: {exc!r}") from exc

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None
