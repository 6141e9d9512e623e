"""The ``rt`` backend: a ticket in Request Tracker 5 through its REST 2.0 API
(docs/handoff.md#request-tracker-rt).

Exactly one ticket per session: every ticket carries the session id (a subject tag, and a
custom field when one is configured), and each attempt first searches for it. An attempt
whose outcome was unknown (a timeout after RT had created the ticket, or a crash before
the answer was recorded) therefore finds the ticket on the next attempt instead of filing
a second one.
"""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote

import aiohttp

from ..core.clock import Clock
from ..core.transcript import ORIGIN_OFFLINE, TranscriptAttachment, clean_text
from .base import (
    AttachmentReader,
    Delivered,
    Job,
    RetryableError,
    check_status,
)

# Severity (1 critical .. 4 low) to RT priority (0..100; RT 5 shows 0 as Low, 50 as Medium
# and 100 as High). The table is in docs/handoff.md.
PRIORITY = {1: 100, 2: 75, 3: 50, 4: 25}
DEFAULT_PRIORITY = 50
MAX_SUBJECT = 200


def subject_tag(session_id: str) -> str:
    return f"[chatd:{session_id}]"


def subject_for(job: Job) -> str:
    t = job.transcript
    s = t.session
    c = s.customer
    who = f"{c.name}, {c.account}" if c.account else c.name
    prefix = "Ticket: " if t.origin == ORIGIN_OFFLINE else ""
    tag = " " + subject_tag(s.id)
    text = " ".join(clean_text(f"{prefix}{s.topic} ({who})").split())
    room = MAX_SUBJECT - len(tag)
    if len(text) > room:
        text = text[: room - 1].rstrip() + "\u2026"
    return text + tag


class RTBackend:
    name = "rt"

    def __init__(
        self,
        url: str,
        queue: str,
        clock: Clock,
        read_attachment: AttachmentReader,
        *,
        token: str = "",
        user: str = "",
        password: str = "",
        custom_field: str = "",
        attachment_budget: int = 5 * 1024 * 1024,
        timeout: float = 30.0,
    ) -> None:
        self.base = url.rstrip("/")
        self.api = self.base + "/REST/2.0"
        self.queue = queue
        self.clock = clock
        self.read_attachment = read_attachment
        self.custom_field = custom_field
        self.attachment_budget = attachment_budget
        self.timeout = timeout
        if token:
            self._auth = {"Authorization": f"token {token}"}
        else:
            basic = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
            self._auth = {"Authorization": f"Basic {basic}"}
        self._http: aiohttp.ClientSession | None = None

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            self._http = aiohttp.ClientSession(
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={**self._auth, "User-Agent": "chatd-handoff"},
            )
        return self._http

    def ticket_ref(self, ticket_id: str) -> dict[str, Any]:
        return {
            "backend": self.name,
            "id": ticket_id,
            "url": f"{self.base}/Ticket/Display.html?id={ticket_id}",
        }

    async def deliver(self, job: Job) -> Delivered:
        try:
            existing = await self.find_ticket(job.transcript.session.id)
            if existing is not None:
                return Delivered(
                    result=f"RT ticket {existing} exists already for this session",
                    ticket=self.ticket_ref(existing),
                )
            payload = await self.ticket_payload(job)
        except (aiohttp.ClientError, OSError) as exc:
            raise RetryableError(f"Request Tracker could not be reached: {exc!r}") from exc
        try:
            async with self._session().post(self.api + "/ticket", json=payload) as r:
                text = await r.text(errors="replace")
                check_status(r.status, text, r.headers.get("Retry-After"),
                             self.clock.now(), "Request Tracker")
                ticket_id = _created_id(text)
                return Delivered(
                    result=f"created RT ticket {ticket_id}",
                    ticket=self.ticket_ref(ticket_id),
                    status=r.status,
                    response=text[:500],
                )
        except (aiohttp.ClientError, OSError) as exc:
            # RT may have created the ticket: let it finish before the next attempt's
            # search looks for it.
            raise RetryableError(f"no answer from Request Tracker: {exc!r}",
                                 retry_after=self.timeout) from exc

    async def find_ticket(self, session_id: str) -> str | None:
        """The id of the ticket already filed for this session, if any."""
        if self.custom_field:
            name = self.custom_field.replace("'", "\\'")
            query = f"'CF.{{{name}}}' = '{session_id}'"
        else:
            query = f"Subject LIKE '{subject_tag(session_id)}'"
        url = f"{self.api}/tickets?query={quote(query)}&fields=Subject&orderby=id&order=ASC"
        async with self._session().get(url) as r:
            text = await r.text(errors="replace")
            check_status(r.status, text, r.headers.get("Retry-After"), self.clock.now(),
                         "Request Tracker's search")
        try:
            items = json.loads(text).get("items") or []
        except (ValueError, AttributeError):
            raise RetryableError("Request Tracker's search answered something not JSON",
                                 response=text[:500]) from None
        tag = subject_tag(session_id)
        for item in items:
            # The subject search is a substring match: confirm the tag really is ours.
            if self.custom_field or tag in str(item.get("Subject", "")):
                return str(item["id"])
        return None

    async def ticket_payload(self, job: Job) -> dict[str, Any]:
        t = job.transcript
        s = t.session
        attached, linked = await self._attachments(list(t.attachments))
        content = t.to_text()
        if linked:
            content += "\nNot attached (over the size budget or unavailable); download:\n"
            content += "".join(f"- {clean_text(a.filename)}: {clean_text(a.url)}\n"
                               for a in linked)
        payload: dict[str, Any] = {
            "Queue": self.queue,
            "Subject": subject_for(job),
            "Requestor": s.customer.email,
            "Priority": PRIORITY.get(s.severity, DEFAULT_PRIORITY),
            "Content": content,
            "ContentType": "text/plain",
        }
        if self.custom_field:
            payload["CustomFields"] = {self.custom_field: s.id}
        if attached:
            payload["Attachments"] = attached
        return payload

    async def _attachments(
        self, items: list[TranscriptAttachment]
    ) -> tuple[list[dict[str, str]], list[TranscriptAttachment]]:
        """Attach files in chat order while they fit the budget; link the others."""
        attached: list[dict[str, str]] = []
        linked: list[TranscriptAttachment] = []
        left = self.attachment_budget
        for a in items:
            data = await self.read_attachment(a.id, left) if a.size <= left else None
            if data is None:
                linked.append(a)
                continue
            left -= len(data)
            attached.append(
                {
                    "FileName": clean_text(a.filename).replace("\n", " ") or "attachment",
                    "FileType": a.content_type,
                    "FileContent": base64.b64encode(data).decode("ascii"),
                }
            )
        return attached, linked

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()
            self._http = None


def _created_id(text: str) -> str:
    try:
        data = json.loads(text)
        return str(int(data["id"]))
    except (ValueError, KeyError, TypeError):
        # RT said yes but not which ticket: the next attempt's search finds it.
        raise RetryableError("Request Tracker created a ticket but did not say which",
                             response=text[:500]) from None
