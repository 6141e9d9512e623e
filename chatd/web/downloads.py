"""HTTP routes that serve an attachment and its thumbnail to the chat's participants.

``GET /api/attachments/{id}`` and ``.../thumbnail`` answer the session's customer (by
resume token), its engineer and leads; everyone else gets 404, as if it did not exist
(docs/attachments.md). :class:`StoredFileResponse` sends the already opened file, with
ranges and a strong ETag: a file of the upload folder by sendfile where the loop can, an
object of the object store (chatd/objects.py) streamed from a ranged GET, a chunk at a
time; the headers and statuses are the same either way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re

from aiohttp import hdrs, web
from aiohttp.abc import AbstractStreamWriter

from .. import accounts
from ..core.desk import ResumeTokenExpired
from ..core.errors import Forbidden, NotFound, Unauthorized
from ..core.ports import AttachmentRecord
from ..files import StoredFile, content_disposition
from . import keys
from .http import request_token
from .uploads import UPLOADS

log = logging.getLogger(__name__)

CSP = "sandbox; default-src 'none'"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


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
    desk = request.app[keys.LINK]
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
    stored = await request.app[UPLOADS].folder.open_stored(name)
    if stored is None:
        log.warning("stored file %s is missing or not a regular file", name)
        raise NotFound("no such attachment")
    return StoredFileResponse(
        stored,
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
    """A stored file already opened (a local one without following symlinks), with
    single-range requests, ``If-None-Match`` and ``If-Range`` on its strong ETag (the
    SHA-256); sent with sendfile when it is a local file, else streamed.

    aiohttp's FileResponse opens by path, which would follow a symlink swapped in between a
    check and the open; this one never holds a path at all.
    """

    def __init__(self, stored: StoredFile, *, etag: str, headers: dict[str, str]) -> None:
        super().__init__(headers=headers)
        self._stored = stored
        self._size = stored.size
        self._mtime = stored.mtime
        self._etag_value = etag

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        try:
            return await self._send(request)
        finally:
            self._stored.close()

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
        fileobj = self._stored.fileobj
        sent = False
        if fileobj is not None:
            with contextlib.suppress(NotImplementedError):
                await asyncio.get_running_loop().sendfile(transport, fileobj, start, count)
                sent = True
        if not sent:
            async with contextlib.aclosing(self._stored.chunks(start, count)) as chunks:
                async for chunk in chunks:
                    await writer.write(chunk)
        await super().write_eof()
        return writer

    async def _unsatisfiable(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        self.set_status(416)
        self.headers[hdrs.CONTENT_RANGE] = f"bytes */{self._size}"
        self.content_length = 0
        return await super().prepare(request)


def _etag_listed(header: str, quoted: str) -> bool:
    tags = [t.strip().removeprefix("W/") for t in header.split(",")]
    return "*" in tags or quoted in tags
