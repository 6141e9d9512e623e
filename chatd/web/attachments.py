"""HTTP routes of attachments: upload into a chat, download by its participants
(docs/attachments.md).

``POST /api/sessions/{id}/attachments`` streams the multipart field ``file`` to disk
(chatd.files), records it, and announces it in the chat as an ``attachment`` message.
``GET /api/attachments/{id}`` and ``.../thumbnail`` serve it to the session's customer (by
resume token), its engineer and leads; everyone else gets 404, as if it did not exist.

An upload holds a slot of its chat and of its uploader while it runs, and its body must
keep arriving (idle and total deadlines): a hostile client can hold only a few of them, and
not for long (docs/security.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from aiohttp import BodyPartReader, MultipartReader, StreamReader, hdrs, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import HttpVersion11

from .. import accounts
from ..config import Settings
from ..core.clock import Clock
from ..core.desk import Actor, ResumeTokenExpired, hash_token
from ..core.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    NotFound,
    RateLimited,
    SessionClosed,
    TooLarge,
    Unauthorized,
)
from ..core.models import Customer, Engineer, MessageKind, NewMessage, Sender, SessionState
from ..core.ports import AttachmentRecord
from ..core.ratelimit import KeyedLimiter
from ..files import (
    CHUNK_SIZE,
    InsufficientStorage,
    Kind,
    Thumbnail,
    UploadFolder,
    content_disposition,
    detect,
    display_name,
    text_verdict,
)
from . import keys
from .http import address_key, error_response, request_token

log = logging.getLogger(__name__)

# Room for the multipart framing around the file when judging a declared Content-Length.
MULTIPART_SLACK = 64 * 1024
MAX_PARTS = 8
MAX_OTHER_PART_BYTES = 64 * 1024
CSP = "sandbox; default-src 'none'"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


class UploadTimedOut(BadRequest):
    """The body stopped arriving, or took too long in all: answered 408 (the code stays
    ``bad_request``, as for 405: the status says which)."""


class Slot:
    """One upload in progress, counted against its chat, its uploader and its client address
    until released."""

    def __init__(self, slots: UploadSlots, keys: tuple[str, str, str] | None) -> None:
        self._slots = slots
        self._keys = keys

    def release(self) -> None:
        """Give the slot back; once only, whatever way the upload ended."""
        keys, self._keys = self._keys, None
        if keys is not None:
            self._slots.give_back(*keys)

    def hand_over(self) -> Slot:
        """The same slot under a new owner; releasing this one then does nothing."""
        keys, self._keys = self._keys, None
        return Slot(self._slots, keys)


@dataclass
class UploadSlots:
    """Uploads in progress per chat, per uploader (a customer or an engineer, across all
    their chats and connections) and per client address (guests can make new identities,
    and so new chats, but not new addresses)."""

    per_session: int
    per_uploader: int
    per_address: int
    sessions: Counter[str] = field(default_factory=Counter)
    uploaders: Counter[str] = field(default_factory=Counter)
    addresses: Counter[str] = field(default_factory=Counter)

    def take(self, session_id: str, uploader: str, address: str) -> Slot:
        """A slot, or RateLimited at once when the chat, the uploader or the address has
        none left."""
        if self.sessions[session_id] >= self.per_session:
            raise RateLimited(
                f"this chat already has {self.per_session} uploads in progress; "
                "wait for one to finish",
                limit=self.per_session,
            )
        if self.uploaders[uploader] >= self.per_uploader:
            raise RateLimited(
                f"you already have {self.per_uploader} uploads in progress; "
                "wait for one to finish",
                limit=self.per_uploader,
            )
        if self.addresses[address] >= self.per_address:
            raise RateLimited(
                f"your network address already has {self.per_address} uploads in progress; "
                "wait for one to finish",
                limit=self.per_address,
            )
        self.sessions[session_id] += 1
        self.uploaders[uploader] += 1
        self.addresses[address] += 1
        return Slot(self, (session_id, uploader, address))

    def give_back(self, session_id: str, uploader: str, address: str) -> None:
        for counter, key in (
            (self.sessions, session_id), (self.uploaders, uploader), (self.addresses, address)
        ):
            counter[key] -= 1
            if counter[key] <= 0:
                del counter[key]  # keep only the keys that hold something


@dataclass
class Uploads:
    folder: UploadFolder
    limiter: KeyedLimiter  # per API or resume token: one client's uploads
    slots: UploadSlots
    max_bytes: int
    session_max_count: int
    session_max_bytes: int
    kinds: tuple[str, ...]
    idle_timeout: float
    total_timeout: float


UPLOADS = web.AppKey("uploads", Uploads)


def setup_attachments(app: web.Application, settings: Settings, clock: Clock) -> None:
    """Register the attachment routes and the upload folder on ``app``."""
    uploads = Uploads(
        folder=UploadFolder(settings.upload_dir, min_free_bytes=settings.upload_min_free_bytes),
        limiter=KeyedLimiter(clock, settings.upload_rate, settings.upload_burst),
        slots=UploadSlots(
            settings.upload_concurrent_per_session,
            settings.upload_concurrent_per_customer,
            settings.upload_concurrent_per_address,
        ),
        max_bytes=settings.upload_max_bytes,
        session_max_count=settings.upload_session_max_count,
        session_max_bytes=settings.upload_session_max_bytes,
        kinds=settings.upload_types,
        idle_timeout=settings.upload_idle_timeout_seconds,
        total_timeout=settings.upload_total_timeout_seconds,
    )
    app[UPLOADS] = uploads

    async def prepare_folder(app: web.Application) -> None:
        removed = await asyncio.to_thread(uploads.folder.prepare)
        if removed:
            log.info("removed %d unfinished uploads", removed)

    async def close_folder(app: web.Application) -> None:
        uploads.folder.close()

    app.on_startup.append(prepare_folder)
    app.on_cleanup.append(close_folder)
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
    desk = request.app[keys.DESK]
    session_id = request.match_info["session_id"]

    actor, token = await _uploader(request, session_id)
    session = desk.session_for(actor, session_id)
    if session is None:
        await desk.find_session(actor, session_id)  # NotFound or Forbidden when not theirs
        raise SessionClosed("the chat has ended; files can no longer be added to it")
    if isinstance(actor, Engineer) and session.state is not SessionState.ACTIVE:
        raise Conflict("the session is not assigned yet")
    # Taken before the rate limit, so that an upload refused for want of a slot costs the
    # client none of its allowance; given back in every outcome below.
    slot = uploads.slots.take(session_id, _uploader_key(actor), address_key(request.remote))
    try:
        return await _upload(request, uploads, actor, token, session_id, slot)
    finally:
        slot.release()


async def _upload(
    request: web.Request, uploads: Uploads, actor: Actor, token: str, session_id: str,
    slot: Slot,
) -> web.Response:
    store = request.app[keys.STORE]
    uploads.folder.check_space()
    if not uploads.limiter.take(hash_token(token)):
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
    publishing = asyncio.ensure_future(_publish(request, actor, session_id, received))
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
    request: web.Request, actor: Actor, session_id: str, received: Received
) -> web.Response:
    """Record the stored file and announce it in the chat; on any failure, remove both."""
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
        await store.add_attachment(record, uploads.session_max_count, uploads.session_max_bytes)
        try:
            msg, fx = await request.app[keys.DESK].post_message(
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


@dataclass(frozen=True, slots=True)
class Received:
    filename: str
    kind: Kind
    size: int
    sha256: str
    stored_name: str
    thumbnail: Thumbnail | None


class BodyDeadline:
    """The idle and total deadlines of an upload's body, as one ``asyncio.timeout``.

    Idle means no byte of the body arrived (aiohttp's count of bytes received, so a body
    trickling in inside one read still counts as arriving); it is looked at a few times per
    idle period. Time the server itself spends waiting for its disk (``server_busy``) is
    never idle time: a slow disk is not the client's fault.
    """

    CHECKS_PER_IDLE = 4

    def __init__(self, content: StreamReader, idle: float, total: float) -> None:
        self._content = content
        self._idle = idle
        self._total = total
        self._busy = 0
        self._seen = 0
        self._last = 0.0
        self._end = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timeout: asyncio.Timeout | None = None
        self._check_handle: asyncio.TimerHandle | None = None
        self.idle_expired = False

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[BodyDeadline]:
        """UploadTimedOut when a deadline passes inside the block."""
        loop = self._loop = asyncio.get_running_loop()
        now = loop.time()
        self._end = now + self._total
        self._last = now
        self._seen = self._content.total_bytes
        try:
            async with asyncio.timeout_at(self._end) as timeout:
                self._timeout = timeout
                self._schedule(now)
                try:
                    yield self
                finally:
                    if self._check_handle is not None:
                        self._check_handle.cancel()
        except TimeoutError:
            assert self._timeout is not None
            if not self._timeout.expired():
                raise  # not ours
            raise self._error() from None

    @contextlib.contextmanager
    def server_busy(self) -> Iterator[None]:
        self._busy += 1
        try:
            yield
        finally:
            self._busy -= 1
            assert self._loop is not None
            self._last = max(self._last, self._loop.time())

    def _schedule(self, now: float) -> None:
        assert self._loop is not None
        when = min(self._end, now + self._idle / self.CHECKS_PER_IDLE)
        self._check_handle = self._loop.call_at(when, self._check)

    def _check(self) -> None:
        assert self._loop is not None and self._timeout is not None
        now = self._loop.time()
        seen = self._content.total_bytes
        if seen != self._seen or self._busy:
            self._seen, self._last = seen, now
        elif now - self._last >= self._idle:
            self.idle_expired = True
            self._timeout.reschedule(now)
            return
        self._schedule(now)

    def _error(self) -> UploadTimedOut:
        if self.idle_expired:
            return UploadTimedOut(
                f"no data arrived for {self._idle:g} seconds; the upload was abandoned",
                limit=self._idle,
            )
        return UploadTimedOut(
            f"the upload took longer than {self._total:g} seconds; send smaller files or "
            "use a faster connection",
            limit=self._total,
        )


async def _receive(
    request: web.Request, uploads: Uploads, session_id: str, cap: int, too_large: str
) -> Received:
    """Stream the ``file`` field to disk and decide what it is; nothing is left on disk
    unless this returns."""
    try:
        reader = await request.multipart()
    except (ValueError, AssertionError, KeyError) as exc:
        raise BadRequest(f"the multipart body cannot be read: {exc}") from None
    folder = uploads.folder
    deadline = BodyDeadline(request.content, uploads.idle_timeout, uploads.total_timeout)
    async with folder.upload(cap, too_large) as up:
        async with deadline.running():
            part, fields = await _file_part(reader)
            raw_name = part.filename
            checked = False
            while chunk := await _read_chunk(part):
                with deadline.server_busy():
                    await up.write(chunk)
                if not checked and up.head_ready():
                    # Refuse executables and unknown binaries on their first bytes, not
                    # after their last: only text needs to be seen whole.
                    detect(up.head, text_verdict(up.head, final=False), uploads.kinds)
                    checked = True
            await _finish_body(reader, fields)
        sha256 = await up.finish()
        kind = detect(up.head, up.text, uploads.kinds)
        filename = display_name(raw_name, kind, uploads.kinds)
        stored_name = folder.new_name()
        thumbnail = None
        if kind.is_image:
            thumbnail = await folder.thumbnail(
                up.path, stored_name, kind, uploads.kinds, turn=session_id
            )
        try:
            await up.commit(stored_name)
        except BaseException:
            await folder.remove([thumbnail.name if thumbnail else None])
            raise
        return Received(filename, kind, up.size, sha256, stored_name, thumbnail)


async def _read_chunk(part: BodyPartReader) -> bytes:
    try:
        return await part.read_chunk(CHUNK_SIZE)
    except ValueError as exc:  # aiohttp's word for a body that ends without its boundary
        raise BadRequest(f"the multipart body is malformed or incomplete: {exc}") from None


async def _file_part(reader: MultipartReader) -> tuple[BodyPartReader, int]:
    """The ``file`` field, and how many fields were read to reach it."""
    for fields in range(1, MAX_PARTS + 1):
        try:
            part = await reader.next()
        except ValueError as exc:
            raise BadRequest(f"the multipart body is malformed: {exc}") from None
        if part is None:
            break
        if not isinstance(part, BodyPartReader):
            raise BadRequest("nested multipart bodies are not accepted")
        if part.name == "file":
            encoding = part.headers.get(hdrs.CONTENT_TRANSFER_ENCODING, "binary").lower()
            if encoding not in ("binary", "8bit", "7bit"):
                raise BadRequest("send the file as binary, without a Content-Transfer-Encoding")
            return part, fields
        await _skip(part)
    raise BadRequest("no file: send it in a multipart field named 'file'")


async def _skip(part: BodyPartReader) -> None:
    seen = 0
    while chunk := await _read_chunk(part):
        seen += len(chunk)
        if seen > MAX_OTHER_PART_BYTES:
            raise BadRequest(f"form fields other than 'file' are limited to "
                             f"{MAX_OTHER_PART_BYTES} bytes")


async def _finish_body(reader: MultipartReader, fields: int) -> None:
    """Read to the closing boundary, so that a body cut off after the file's bytes is
    refused like one cut off in the middle of them."""
    for _ in range(fields, MAX_PARTS + 1):
        try:
            part = await reader.next()
        except ValueError as exc:
            raise BadRequest(f"the multipart body is malformed or incomplete: {exc}") from None
        if part is None:
            if not reader.at_eof():
                raise BadRequest("the multipart body ends without its closing boundary")
            return
        if not isinstance(part, BodyPartReader):
            raise BadRequest("nested multipart bodies are not accepted")
        if part.name == "file":
            raise BadRequest("send one file per request")
        await _skip(part)
    raise BadRequest(f"at most {MAX_PARTS} multipart fields are accepted")


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
    session = await request.app[keys.DESK].verify_resume_token(session_id, token)
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


# ---------------------------------------------------------------------- download


async def download(request: web.Request) -> web.StreamResponse:
    record = await _readable(request)
    inline = record.content_type.startswith("image/")
    return await _serve(
        request,
        record.stored_name,
        content_type=record.content_type,
        disposition=content_disposition(record.filename, inline=inline),
        etag=record.sha256,
    )


async def download_thumbnail(request: web.Request) -> web.StreamResponse:
    record = await _readable(request)
    if record.thumbnail_name is None or record.thumbnail_type is None:
        raise NotFound("this attachment has no thumbnail")
    stem = record.filename.rsplit(".", 1)[0] or "attachment"
    ext = ".png" if record.thumbnail_type == "image/png" else ".jpg"
    return await _serve(
        request,
        record.thumbnail_name,
        content_type=record.thumbnail_type,
        disposition=content_disposition(f"{stem}-thumbnail{ext}", inline=True),
        etag=f"{record.sha256}-thumb",
    )


async def _readable(request: web.Request) -> AttachmentRecord:
    """The attachment, if the caller may read it; NotFound in every other case, so that
    nobody learns whether an id exists."""
    missing = NotFound("no such attachment")
    attachment_id = request.match_info["attachment_id"]
    token = request_token(request)
    if not token or not _UUID.fullmatch(attachment_id):
        raise missing
    record = await request.app[keys.STORE].get_attachment(attachment_id)
    if record is None or not await _may_read(request, record, token):
        raise missing
    return record


async def _may_read(request: web.Request, record: AttachmentRecord, token: str) -> bool:
    desk = request.app[keys.DESK]
    engineer = await accounts.engineer_for_token(
        request.app[keys.STORE], request.app[keys.CLOCK], token
    )
    if engineer is not None:
        if record.uploader_role != "customer" and engineer.id == record.uploader_id:
            return True  # what they sent stays theirs, also after a transfer
        try:
            await desk.find_session(engineer, record.session_id)
        except (NotFound, Forbidden):
            return False
        return True
    try:
        await desk.verify_resume_token(record.session_id, token)
    except ResumeTokenExpired:
        raise  # only the chat's own token gets here, so saying why hides nothing
    except Unauthorized:
        return False
    return True


async def _serve(
    request: web.Request, name: str, *, content_type: str, disposition: str, etag: str
) -> web.StreamResponse:
    folder = request.app[UPLOADS].folder
    opened = await asyncio.get_running_loop().run_in_executor(folder.io, folder.open, name)
    if opened is None:
        log.warning("stored file %s is missing or not a regular file", name)
        raise NotFound("no such attachment")
    fobj, st = opened
    return StoredFileResponse(
        fobj,
        st.st_size,
        st.st_mtime,
        etag=etag,
        headers={
            hdrs.CONTENT_TYPE: content_type,
            hdrs.CONTENT_DISPOSITION: disposition,
            "X-Content-Type-Options": "nosniff",
            "Content-Security-Policy": CSP,
            hdrs.CACHE_CONTROL: "private, no-cache",
        },
    )


class StoredFileResponse(web.StreamResponse):
    """A file already opened (without following symlinks), with single-range requests,
    ``If-None-Match`` and ``If-Range`` on its strong ETag (the SHA-256), sent with sendfile.

    aiohttp's FileResponse opens by path, which would follow a symlink swapped in between a
    check and the open; this one never holds a path at all.
    """

    def __init__(
        self, fobj: BinaryIO, size: int, mtime: float, *, etag: str, headers: dict[str, str]
    ) -> None:
        super().__init__(headers=headers)
        self._fobj = fobj
        self._size = size
        self._mtime = mtime
        self._etag_value = etag

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            return await self._send(request)
        finally:
            with contextlib.suppress(OSError):
                self._fobj.close()

    async def _send(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        size = self._size
        self.etag = self._etag_value
        self.last_modified = int(self._mtime)  # whole seconds, never in the future
        self.headers[hdrs.ACCEPT_RANGES] = "bytes"
        quoted = f'"{self._etag_value}"'
        if_none_match = request.headers.get(hdrs.IF_NONE_MATCH)
        if if_none_match is not None and _etag_listed(if_none_match, quoted):
            self.set_status(304)
            return await super().prepare(request)
        start, count = 0, size
        if_range = request.headers.get(hdrs.IF_RANGE)
        if hdrs.RANGE in request.headers and (if_range is None or if_range.strip() == quoted):
            try:
                rng = request.http_range
            except ValueError:
                return await self._unsatisfiable(request)
            if rng.start is not None:
                if rng.start < 0:  # the last -start bytes
                    start = max(0, size + rng.start)
                    count = size - start
                else:
                    start = rng.start
                    stop = size if rng.stop is None else min(rng.stop, size)
                    count = stop - start
                if start >= size or count <= 0:
                    return await self._unsatisfiable(request)
                self.set_status(206)
                self.headers[hdrs.CONTENT_RANGE] = f"bytes {start}-{start + count - 1}/{size}"
        self.content_length = count
        writer = await super().prepare(request)
        if count == 0 or request.method == hdrs.METH_HEAD or writer is None:
            return writer
        transport = request.transport
        if transport is None:
            raise ConnectionResetError("connection lost")
        loop = asyncio.get_running_loop()
        try:
            await loop.sendfile(transport, self._fobj, start, count)
        except NotImplementedError:
            await self._copy(writer, start, count)
        await super().write_eof()
        return writer

    async def _copy(self, writer: AbstractStreamWriter, start: int, count: int) -> None:
        def read(offset: int, n: int) -> bytes:
            self._fobj.seek(offset)
            return self._fobj.read(n)

        offset = start
        while count > 0:
            chunk = await asyncio.to_thread(read, offset, min(CHUNK_SIZE, count))
            if not chunk:
                break
            await writer.write(chunk)
            offset += len(chunk)
            count -= len(chunk)

    async def _unsatisfiable(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        self.set_status(416)
        self.headers[hdrs.CONTENT_RANGE] = f"bytes */{self._size}"
        self.content_length = 0
        return await super().prepare(request)


def _etag_listed(header: str, quoted: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or quoted in tags
