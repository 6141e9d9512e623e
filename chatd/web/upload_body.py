"""An upload's body: the multipart field ``file`` streamed to disk under deadlines.

:func:`_receive` reads the multipart body (at most ``MAX_PARTS`` fields, the file in one
named ``file``, other fields small), writes the file through chatd.files' upload folder,
refuses unwanted types on their first bytes, and decides the file's type, name and
thumbnail once it is whole. :class:`BodyDeadline` holds the body to its idle and total
deadlines, raising :class:`UploadTimedOut`. Nothing is left on disk unless it succeeds.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from aiohttp import BodyPartReader, MultipartReader, StreamReader, hdrs, web

from ..core.errors import BadRequest
from ..files import CHUNK_SIZE, Kind, Thumbnail, detect, display_name, text_verdict
from .uploads import Uploads

MAX_PARTS = 8
MAX_OTHER_PART_BYTES = 64 * 1024


class UploadTimedOut(BadRequest):
    """The body stopped arriving, or took too long in all: answered 408 (the code stays
    ``bad_request``, as for 405: the status says which)."""


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
