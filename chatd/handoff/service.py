"""The handoff service: backends chosen by settings, the worker, transcripts on demand and
tickets left without a chat (docs/handoff.md)."""

from __future__ import annotations

import contextlib
import random
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from aiohttp import web

from ..config import Settings
from ..core.clock import Clock
from ..core.desk import hash_token, new_token
from ..core.errors import BadRequest, NotFound
from ..core.models import (
    Customer,
    MessageKind,
    NewMessage,
    Sender,
    Session,
    SessionState,
)
from ..core.observer import DeskObserver, NullObserver
from ..core.ports import Store
from ..core.ratelimit import KeyedLimiter
from ..core.transcript import ORIGIN_CHAT, Handoff, Transcript
from .base import Backend
from .file import FileBackend
from .metrics import HandoffMetrics
from .policy import RetryPolicy
from .rt import RTBackend
from .webhook import WebhookBackend
from .worker import HandoffWorker, TicketCallback

PAGE = 1000
MAX_TICKET_ATTACHMENTS = 20


def file_dir(settings: Settings) -> Path:
    """CHATD_HANDOFF_FILE_DIR, or a ``handoff`` folder beside the database's data."""
    if settings.handoff_file_dir:
        return Path(settings.handoff_file_dir)
    from ..store import data_folder

    folder = data_folder(settings.database_url)
    return Path(folder if folder is not None else "var") / "handoff"


def policy_from(settings: Settings) -> RetryPolicy:
    return RetryPolicy(
        base=settings.handoff_retry_base_seconds,
        cap=settings.handoff_retry_max_seconds,
        horizon=settings.handoff_retry_horizon_seconds,
        timeout=settings.handoff_attempt_timeout_seconds,
    )


class HandoffService:
    def __init__(
        self,
        settings: Settings,
        store: Store,
        clock: Clock,
        *,
        backends: Mapping[str, Backend] | None = None,
        rand: Callable[[], float] = random.random,
        poll_interval: float = 1.0,
    ) -> None:
        self.settings = settings
        self.store = store
        self.clock = clock
        self.policy = policy_from(settings)
        self.metrics = HandoffMetrics()
        # POST /api/tickets per client address: a few in a row, then one every 10 s.
        self.ticket_limiter = KeyedLimiter(clock, rate=0.1, burst=5)
        self.backends = dict(backends) if backends is not None else self._backends()
        self.worker = HandoffWorker(
            store,
            self.backends,
            clock,
            self.transcript,
            policy=self.policy,
            metrics=self.metrics,
            rand=rand,
            poll_interval=poll_interval,
        )

    def _backends(self) -> dict[str, Backend]:
        s = self.settings
        out: dict[str, Backend] = {}
        timeout = s.handoff_attempt_timeout_seconds
        for name in s.handoff_backends:
            if name == "file":
                out[name] = FileBackend(file_dir(s))
            elif name == "webhook":
                out[name] = WebhookBackend(
                    s.handoff_webhook_url, s.handoff_webhook_secret, self.clock, timeout
                )
            elif name == "rt":
                out[name] = RTBackend(
                    s.handoff_rt_url,
                    s.handoff_rt_queue,
                    self.clock,
                    self.read_attachment,
                    token=s.handoff_rt_token,
                    user=s.handoff_rt_user,
                    password=s.handoff_rt_password,
                    custom_field=s.handoff_rt_custom_field,
                    attachment_budget=s.handoff_rt_attachment_budget,
                    timeout=timeout,
                )
        return out

    def observer(self) -> DeskObserver:
        """For the desk: wakes the worker as a session closes, so that its handoff goes out
        at once rather than at the worker's next look at the outbox."""
        return _WakeOnClose(self.worker)

    async def start(self, on_ticket: TicketCallback | None = None) -> None:
        self.worker.on_ticket = on_ticket
        await self.worker.start()

    async def stop(self) -> None:
        await self.worker.stop()

    # ------------------------------------------------------------------ transcripts

    async def transcript(self, session_id: str) -> Transcript:
        session = await self.store.get_session(session_id)
        if session is None:
            raise NotFound("no such session")
        messages = []
        after = 0
        while True:
            page = await self.store.messages_after(session_id, after, PAGE)
            messages.extend(page)
            if len(page) < PAGE:
                break
            after = page[-1].seq
        origin = await self.store.session_origin(session_id) or ORIGIN_CHAT
        return Transcript.build(session, messages, origin=origin,
                                base_url=self.settings.public_url)

    async def read_attachment(self, attachment_id: str, limit: int) -> bytes | None:
        """An attachment's bytes from the upload folder or the object store, if it exists
        and fits ``limit``."""
        from ..objects import upload_folder

        record = await self.store.get_attachment(attachment_id)
        if record is None or record.size > limit:
            return None
        folder = upload_folder(self.settings)
        try:
            await folder.store.start()
            stored = await folder.open_stored(record.stored_name)
            if stored is None:
                return None
            try:
                if stored.size > limit:
                    return None
                async with contextlib.aclosing(stored.chunks(0, stored.size)) as chunks:
                    return b"".join([chunk async for chunk in chunks])
            finally:
                stored.close()
        finally:
            await folder.aclose()

    # ------------------------------------------------------------------ offline tickets

    async def create_ticket(
        self,
        customer: Customer,
        topic: str,
        severity: int,
        description: str,
        attachment_ids: list[str],
        chat_id: str | None = None,
    ) -> tuple[dict[str, Any], str, list[Handoff]]:
        """A ticket left without a chat: stored as a closed session of origin 'offline'
        with its outbox rows, so it takes the same road to the backends as a chat.
        ``chat_id`` is a chat the caller proved theirs (by its resume token): its files
        may go with the ticket too, e.g. a guest's, whose identity is new each time."""
        topic = topic.strip()
        if not topic:
            raise BadRequest("topic must not be empty")
        if not description.strip():
            raise BadRequest("description must not be empty")
        if len(set(attachment_ids)) > MAX_TICKET_ATTACHMENTS:
            raise BadRequest(f"at most {MAX_TICKET_ATTACHMENTS} attachments")
        attachments = []
        for att_id in dict.fromkeys(attachment_ids):
            record = await self.store.get_attachment(att_id)
            owner = await self.store.get_session(record.session_id) if record else None
            # Only files the same customer uploaded: an id alone proves nothing.
            if record is None or owner is None or (
                owner.customer.id != customer.id and owner.id != chat_id
            ):
                raise NotFound(f"no attachment {att_id} of yours")
            attachments.append(record)
        now = self.clock.now()
        session = Session(
            id=str(uuid.uuid4()),
            state=SessionState.ENDED,
            topic=topic,
            severity=severity,
            customer=customer,
            created_at=now,
            arrival_seq=0,
            ended_at=now,
            ended_by="customer",
        )
        sender = Sender("customer", customer.id, customer.name)
        messages = [
            NewMessage(id=str(uuid.uuid4()), session_id=session.id, ts=now, sender=sender,
                       kind=MessageKind.TEXT, body=description)
        ]
        for record in attachments:
            messages.append(
                NewMessage(
                    id=str(uuid.uuid4()), session_id=session.id, ts=now, sender=sender,
                    kind=MessageKind.ATTACHMENT, body=record.filename,
                    attachment=record.to_wire(),
                )
            )
        token = new_token()
        await self.store.create_offline_ticket(
            session, hash_token(token), messages, self.settings.handoff_backends
        )
        self.worker.wake()
        handoffs = await self.store.session_handoffs(session.id)
        return session.to_wire(), token, handoffs


HANDOFF = web.AppKey("handoff", HandoffService)


class _WakeOnClose(NullObserver):
    def __init__(self, worker: HandoffWorker) -> None:
        self.worker = worker

    def session_closed(self, session: Session) -> None:
        self.worker.wake()
