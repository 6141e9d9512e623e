"""HTTP routes of attachments: upload into a chat, download by its participants
(docs/attachments.md).

``POST /api/sessions/{id}/attachments`` streams the multipart field ``file`` to disk
(chatd.files), records it, and announces it in the chat as an ``attachment`` message.
``GET /api/attachments/{id}`` and ``.../thumbnail`` serve it to the session's customer (by
resume token), its engineer and leads; everyone else gets 404, as if it did not exist.

An upload holds a slot of its chat and of its uploader while it runs, and its body must
keep arriving (idle and total deadlines): a hostile client can hold only a few of them, and
not for long (docs/security.md).

Here: the routes' setup and the upload, from its checks to the published message. The
body is read in chatd.web.upload_body, the slots and shared state are in
chatd.web.uploads, the downloads in chatd.web.downloads.
"""

from __future__ import annotations

import asyncio
import logging
import re
import uuid
from collections.abc import AsyncIterator

from aiohttp import hdrs, web
from aiohttp.http import HttpVersion11

from .. import accounts
from ..config import Settings
from ..core.clock import Clock
from ..core.desk import Actor, hash_token
from ..core.errors import (
    BadRequest,
    Conflict,
    RateLimited,
    SessionClosed,
    TooLarge,
    Unauthorized,
)
from ..core.models import Customer, Engineer, MessageKind, NewMessage, Sender, SessionState
from ..core.ports import AttachmentRecord
from ..files import InsufficientStorage
from ..objects import upload_folder
from . import keys
from .downloads import download, download_thumbnail
from .http import address_key, error_response, request_token, setup_shared_limits
from .upload_body import Received, UploadTimedOut, _receive
from .uploads import UPLOADS, Slot, Uploads, UploadSlots

log = logging.getLogger(__name__)

# Room for the multipart framing around the file when judging a declared Content-Length.
MULTIPART_SLACK = 64 * 1024
# The client's id for an upload: a retry with it gets the first attempt's answer
# (docs/attachments.md#retrying-an-upload). Long enough to be random, never a counter.
UPLOAD_ID_HEADER = "Upload-Id"
UPLOAD_ID = re.compile(r"[A-Za-z0-9._:-]{16,128}")
# A recorded file whose message is younger than this may still be being announced (by
# another process): a retry waits. Older, the server stopped between the two writes.
ANNOUNCE_GRACE_SECONDS = 60.0


def setup_attachments(app: web.Application, settings: Settings, clock: Clock) -> None:
    """Register the attachment routes and the upload folder on ``app``."""
    shared = setup_shared_limits(app, settings, clock)  # in Redis with several processes
    uploads = Uploads(
        folder=upload_folder(settings),
        limiter=shared.rate("upload", settings.upload_rate, settings.upload_burst),
        slots=UploadSlots(
            settings.upload_concurrent_per_session,
            settings.upload_concurrent_per_customer,
            settings.upload_concurrent_per_address,
            limits=shared,
        ),
        max_bytes=settings.upload_max_bytes,
        session_max_count=settings.upload_session_max_count,
        session_max_bytes=settings.upload_session_max_bytes,
        kinds=settings.upload_types,
        idle_timeout=settings.upload_idle_timeout_seconds,
        total_timeout=settings.upload_total_timeout_seconds,
    )
    app[UPLOADS] = uploads

    async def folder_life(app: web.Application) -> AsyncIterator[None]:
        # A cleanup context set up before the store's: an object store that cannot be
        # used (ObjectStoreUnavailable) stops the start before the desk is taken.
        try:
            await uploads.folder.start()
        except BaseException:
            await uploads.folder.aclose()
            raise
        yield
        await uploads.folder.aclose()

    app.cleanup_ctx.append(folder_life)
    app.router.add_post(
        "/api/sessions/{session_id}/attachments", upload, expect_handler=expect_upload
    )
    app.router.add_get("/api/attachments/{attachment_id}", download)
    app.router.add_get("/api/attachments/{attachment_id}/thumbnail", download_thumbnail)


# ---------------------------------------------------------------------- upload


async def expect_upload(request: web.Request) -> web.StreamResponse | None:
    """``Expect: 100-continue``: refuse a declared oversize body before it is sent."""
    if request.version != HttpVersion11:
        return None
    if request.headers.get(hdrs.EXPECT, "").lower() != "100-continue":
        return error_response("bad_request", "only 'Expect: 100-continue' is understood")
    uploads = request.app[UPLOADS]
    length = request.content_length
    if length is not None and length > uploads.max_bytes + MULTIPART_SLACK:
        response = error_response(
            "too_large", _file_too_large(uploads.max_bytes), limit=uploads.max_bytes
        )
        response.force_close()
        return response
    try:
        uploads.folder.check_space()
    except InsufficientStorage as exc:
        response = error_response(exc.code, exc.message)
        response.force_close()
        return response
    await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    request.writer.output_size = 0
    return None


async def upload(request: web.Request) -> web.Response:
    uploads = request.app[UPLOADS]
    desk = request.app[keys.LINK]
    session_id = request.match_info["session_id"]

    upload_id = _upload_id(request)
    actor, token = await _uploader(request, session_id)
    if upload_id is not None:
        earlier = await _earlier_upload(request, actor, session_id, upload_id)
        if earlier is not None:
            return earlier
    session = await desk.session_for(actor, session_id)
    if session is None:
        await desk.find_session(actor, session_id)  # NotFound or Forbidden when not theirs
        raise SessionClosed("the chat has ended; files can no longer be added to it")
    if isinstance(actor, Engineer) and session.state is not SessionState.ACTIVE:
        raise Conflict("the session is not assigned yet")
    # Taken before the rate limit, so that an upload refused for want of a slot costs the
    # client none of its allowance; given back in every outcome below.
    slot = await uploads.slots.acquire(
        session_id, _uploader_key(actor), address_key(request.remote)
    )
    if upload_id is not None:
        uploads.in_flight.add((session_id, upload_id))
        slot.on_release = lambda: uploads.in_flight.discard((session_id, upload_id))
    try:
        return await _upload(request, uploads, actor, token, session_id, slot, upload_id)
    finally:
        slot.release()


async def _upload(
    request: web.Request, uploads: Uploads, actor: Actor, token: str, session_id: str,
    slot: Slot, upload_id: str | None,
) -> web.Response:
    store = request.app[keys.STORE]
    uploads.folder.check_space()
    if not await uploads.allow_upload(hash_token(token)):
        raise RateLimited("too many uploads; wait a little before sending another file")
    count, used = await store.session_attachment_usage(session_id)
    if count >= uploads.session_max_count:
        raise Conflict(
            f"this chat has reached its limit of {uploads.session_max_count} attachments",
            limit=uploads.session_max_count,
        )
    room = uploads.session_max_bytes - used
    if room < uploads.max_bytes:
        cap, too_large = room, (
            f"this chat's attachments may total {_mib(uploads.session_max_bytes)}; "
            f"{_mib(max(room, 0))} are left"
        )
    else:
        cap, too_large = uploads.max_bytes, _file_too_large(uploads.max_bytes)
    if cap <= 0:
        raise TooLarge(too_large, limit=uploads.session_max_bytes)
    length = request.content_length
    if length is not None and length > cap + MULTIPART_SLACK:
        raise TooLarge(too_large, limit=cap)
    if request.content_type != "multipart/form-data":
        raise BadRequest("send the file as multipart/form-data, in a field named 'file'")

    try:
        received = await _receive(request, uploads, session_id, cap, too_large)
    except (ConnectionError, asyncio.IncompleteReadError):
        log.info("an upload to session %s was cut off", session_id)
        raise BadRequest("the upload was cut off before the end of the file") from None
    except UploadTimedOut as exc:
        log.info("an upload to session %s timed out: %s", session_id, exc.message)
        response = error_response(exc.code, exc.message, **exc.details)
        response.set_status(408)
        response.force_close()  # the rest of the body is not worth waiting for
        return response

    # The file is complete and accepted: from here on the upload is finished even if the
    # client goes away (a half-published attachment is what must never exist).
    publishing = asyncio.ensure_future(
        _publish(request, actor, session_id, received, upload_id)
    )
    try:
        return await asyncio.shield(publishing)
    except asyncio.CancelledError:
        publishing.add_done_callback(_log_failure)
        # The slot goes back when the publishing ends, not when the request does.
        later = slot.hand_over()
        publishing.add_done_callback(lambda _: later.release())
        raise


def _log_failure(task: asyncio.Future[web.Response]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("an attachment could not be published", exc_info=task.exception())


async def _publish(
    request: web.Request, actor: Actor, session_id: str, received: Received,
    upload_id: str | None = None,
) -> web.Response:
    """Record the stored file and announce it in the chat; on any failure, remove both.
    With an upload id another attempt already stored (in another process), this one's
    file goes and the first attempt's answer is given."""
    uploads = request.app[UPLOADS]
    store = request.app[keys.STORE]
    clock = request.app[keys.CLOCK]
    record = AttachmentRecord(
        id=str(uuid.uuid4()),
        session_id=session_id,
        uploader_role=_sender(actor).role,
        uploader_id=actor.id,
        filename=received.filename,
        content_type=received.kind.content_type,
        size=received.size,
        sha256=received.sha256,
        stored_name=received.stored_name,
        thumbnail_name=received.thumbnail.name if received.thumbnail else None,
        thumbnail_type=received.thumbnail.content_type if received.thumbnail else None,
        created_at=clock.now(),
    )
    try:
        # Durable first (in the object store, when there is one): a recorded attachment
        # can be served by every process, and only a durable one is acknowledged.
        await uploads.folder.keep([record.stored_name, record.thumbnail_name])
        if upload_id is None:
            await store.add_attachment(
                record, uploads.session_max_count, uploads.session_max_bytes
            )
        else:
            first = await store.add_attachment_once(
                record, upload_id, uploads.session_max_count, uploads.session_max_bytes
            )
            if first.id != record.id:
                await uploads.folder.remove([record.stored_name, record.thumbnail_name])
                return await _answer_again(request, actor, first)
        try:
            msg, fx = await request.app[keys.LINK].post_message(
                actor,
                NewMessage(
                    id=str(uuid.uuid4()),
                    session_id=session_id,
                    ts=clock.now(),
                    sender=_sender(actor),
                    kind=MessageKind.ATTACHMENT,
                    body=record.filename,
                    attachment=record.to_wire(),
                ),
            )
        except BaseException:
            await store.delete_attachment(record.id)
            raise
    except BaseException:
        await uploads.folder.remove([record.stored_name, record.thumbnail_name])
        raise
    await request.app[keys.SOCKETS].emitter.emit(fx)
    log.info(
        "attachment stored",
        extra={"session_id": session_id, "attachment_id": record.id, "size": record.size},
    )
    return web.json_response(
        {"ok": True, "attachment": record.to_wire(), "message": msg.to_wire()}, status=201
    )


def _upload_id(request: web.Request) -> str | None:
    value = request.headers.get(UPLOAD_ID_HEADER)
    if value is None:
        return None
    if not UPLOAD_ID.fullmatch(value):
        raise BadRequest(
            f"{UPLOAD_ID_HEADER} must be 16 to 128 letters, digits, '.', '_', ':' or '-' "
            "(a random id, e.g. a UUID, new for each file)"
        )
    return value


async def _earlier_upload(
    request: web.Request, actor: Actor, session_id: str, upload_id: str
) -> web.Response | None:
    """The answer to an upload whose id the chat has seen: the first attempt's, or 409
    while it is still in progress here. None when the id is new to the chat."""
    if isinstance(actor, Engineer):
        await request.app[keys.LINK].find_session(actor, session_id)  # theirs, or refused
    uploads = request.app[UPLOADS]
    if (session_id, upload_id) in uploads.in_flight:
        raise _in_progress()
    first = await request.app[keys.STORE].attachment_for_upload(session_id, upload_id)
    if first is None:
        return None
    return await _answer_again(request, actor, first)


async def _answer_again(
    request: web.Request, actor: Actor, first: AttachmentRecord
) -> web.Response:
    """200 with the stored attachment and its message, as the first attempt answered. A
    record whose message was never stored (the server stopped between the two writes) is
    announced now; one just recorded may still be announced by its attempt: 409."""
    store = request.app[keys.STORE]
    message = await store.attachment_message(first.session_id, first.id)
    if message is None:
        clock = request.app[keys.CLOCK]
        if clock.now() - first.created_at < ANNOUNCE_GRACE_SECONDS:
            raise _in_progress()
        message, fx = await request.app[keys.LINK].post_message(
            actor,
            NewMessage(
                id=str(uuid.uuid4()), session_id=first.session_id, ts=clock.now(),
                sender=_sender(actor), kind=MessageKind.ATTACHMENT, body=first.filename,
                attachment=first.to_wire(),
            ),
        )
        await request.app[keys.SOCKETS].emitter.emit(fx)
    response = web.json_response(
        {"ok": True, "attachment": first.to_wire(), "message": message.to_wire()}, status=200
    )
    # The body of this attempt is not needed: it is not read, and the connection closes.
    response.force_close()
    return response


def _in_progress() -> Conflict:
    return Conflict(
        "an upload with this Upload-Id is still in progress in this chat; "
        "retry when it has ended",
        reason="upload_in_progress",
    )


async def _uploader(request: web.Request, session_id: str) -> tuple[Actor, str]:
    token = request_token(request)
    if not token:
        raise Unauthorized(
            "send the engineer token or the chat's resume token as 'Authorization: Bearer …'"
        )
    engineer = await accounts.engineer_for_token(
        request.app[keys.STORE], request.app[keys.CLOCK], token
    )
    if engineer is not None:
        return engineer, token
    session = await request.app[keys.LINK].verify_resume_token(session_id, token)
    return session.customer, token


def _uploader_key(actor: Actor) -> str:
    return f"customer:{actor.id}" if isinstance(actor, Customer) else f"engineer:{actor.id}"


def _sender(actor: Actor) -> Sender:
    if isinstance(actor, Customer):
        return Sender("customer", actor.id, actor.name)
    return Sender(actor.role.value, actor.id, actor.name)


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.1f} MiB".replace(".0 MiB", " MiB")


def _file_too_large(limit: int) -> str:
    return f"the file is larger than {_mib(limit)}, the limit for one file"
