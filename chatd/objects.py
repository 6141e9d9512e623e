"""Attachments in an S3-compatible object store, shared by every chatd process of a desk
(docs/attachments.md#object-store, docs/scaling.md#attachments-on-several-machines).

An upload is still received into the upload folder (size, type and hash checked there, as
always); once complete, :meth:`ObjectStore.keep` puts the file and its thumbnail into the
bucket under their stored names, and only then is the upload recorded and acknowledged.
The local copy is removed after the put: the folder holds uploads in progress only, so no
cache needs bounding, and every process serves every file from the bucket. A file still in
the folder (stored before the object store was configured) is served from there first.

Downloads are streamed from ranged GETs, a chunk at a time; removals delete the objects
(and any local copy). aiobotocore is imported only when the object store is configured
(``pip install 'chatd[s3]'``), as chatd.store imports asyncpg only for PostgreSQL.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncGenerator
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from .config import Settings
from .core.errors import Unavailable
from .files import CHUNK_SIZE, FolderStore, Removal, StoredFile, UploadFolder, is_stored_name

log = logging.getLogger(__name__)

# Files up to this size are put in one request; larger ones in parts of this size. What
# one put holds in memory at a time (S3's smallest part is 5 MiB, its most parts 10,000).
PART_SIZE = 8 * 1024 * 1024
DELETE_BATCH = 1000  # the most keys one DeleteObjects request takes
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 60.0


class ObjectStoreUnavailable(Exception):
    """The object store cannot be used at start (unreachable, no such bucket, refused
    credentials): chatd does not start. The message names the endpoint and bucket, never
    the credentials."""


def upload_folder(settings: Settings) -> UploadFolder:
    """The upload folder of ``settings``, keeping complete files in the object store when
    ``s3_url`` is set, else in the folder itself. Call ``start`` before using it."""
    folder = UploadFolder(settings.upload_dir, min_free_bytes=settings.upload_min_free_bytes)
    if settings.s3_url:
        folder.store = ObjectStore(folder, settings)
    return folder


class ObjectFile:
    """An object of the bucket opened for reading: its size and time from a HEAD, its
    bytes from a ranged GET when they are sent."""

    fileobj: BinaryIO | None = None

    def __init__(self, store: ObjectStore, key: str, size: int, mtime: float) -> None:
        self._store = store
        self._key = key
        self.size = size
        self.mtime = mtime

    async def chunks(self, start: int, count: int) -> AsyncGenerator[bytes, None]:
        if count <= 0:
            return
        response = await self._store.client.get_object(
            Bucket=self._store.bucket, Key=self._key, Range=f"bytes={start}-{start + count - 1}"
        )
        body = response["Body"]
        try:
            while count > 0:
                chunk = await body.read(min(CHUNK_SIZE, count))
                if not chunk:
                    raise ConnectionResetError(f"object {self._key} ended early")
                yield chunk[:count]
                count -= len(chunk)
        finally:
            body.close()

    def close(self) -> None:
        return None


class ObjectStore:
    """The bucket (under ``s3_prefix``) as the store of complete files."""

    def __init__(self, folder: UploadFolder, settings: Settings) -> None:
        self.folder = folder
        self.local = FolderStore(folder)
        self.url = settings.s3_url
        self.bucket = settings.s3_bucket
        self.prefix = settings.s3_prefix
        self._settings = settings
        self._exit: contextlib.AsyncExitStack | None = None
        self._client: Any = None

    def describe(self) -> str:
        return f"bucket {self.bucket!r} at {self.url}"

    @property
    def client(self) -> Any:
        if self._client is None:
            raise RuntimeError("the object store is not started")
        return self._client

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    async def start(self) -> None:
        if not self.bucket:
            raise ObjectStoreUnavailable(
                f"CHATD_S3_BUCKET is empty: name the bucket for attachments at {self.url}"
            )
        try:
            from aiobotocore.config import AioConfig  # type: ignore[import-untyped]
            from aiobotocore.session import get_session  # type: ignore[import-untyped]
        except ImportError:
            raise ObjectStoreUnavailable(
                "CHATD_S3_URL is set but aiobotocore is not installed: "
                "pip install 'chatd[s3]'"
            ) from None
        s = self._settings
        config = AioConfig(
            connect_timeout=CONNECT_TIMEOUT_SECONDS,
            read_timeout=READ_TIMEOUT_SECONDS,
            retries={"max_attempts": 3, "mode": "standard"},
            s3={"addressing_style": "path"},
            # Checksums only where S3 requires them: many S3-compatible servers refuse the
            # ones newer clients add by default.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        credentials: dict[str, str] = {}
        if s.s3_access_key_id or s.s3_secret_access_key:
            credentials = {"aws_access_key_id": s.s3_access_key_id,
                           "aws_secret_access_key": s.s3_secret_access_key}
        stack = contextlib.AsyncExitStack()
        try:
            self._client = await stack.enter_async_context(get_session().create_client(
                "s3", endpoint_url=self.url, region_name=s.s3_region, config=config,
                **credentials,
            ))
            await self.client.head_bucket(Bucket=self.bucket)
        except BaseException as exc:
            await stack.aclose()
            self._client = None
            if isinstance(exc, Exception):
                raise ObjectStoreUnavailable(
                    f"cannot use the object store: {self.describe()}: {_reason(exc)}"
                ) from None
            raise
        self._exit = stack
        log.info("attachments are kept in the object store", extra={
            "s3_url": self.url, "s3_bucket": self.bucket, "s3_prefix": self.prefix,
        })

    async def close(self) -> None:
        stack, self._exit = self._exit, None
        if stack is not None:
            await stack.aclose()
        self._client = None

    async def keep(self, names: list[str]) -> None:
        for name in names:
            path = self.folder.folder / name
            try:
                await self._put(path, self.key(name))
            except Exception as exc:
                log.warning("could not put %s into the object store: %s", name, _reason(exc))
                raise Unavailable(
                    "the file store cannot be reached; send the file again in a moment"
                ) from exc
        # Only once every object is in: the upload folder holds uploads in progress only.
        await self.local.remove(names)

    async def _put(self, path: Path, key: str) -> None:
        loop = asyncio.get_running_loop()
        io = self.folder.io
        with await loop.run_in_executor(io, _open_private, path) as f:
            size = os.fstat(f.fileno()).st_size
            if size <= PART_SIZE:
                body = await loop.run_in_executor(io, f.read, size)
                await self.client.put_object(Bucket=self.bucket, Key=key, Body=body)
                return
            upload = await self.client.create_multipart_upload(Bucket=self.bucket, Key=key)
            upload_id = upload["UploadId"]
            try:
                parts = []
                number = 1
                while part := await loop.run_in_executor(io, f.read, PART_SIZE):
                    sent = await self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                        Body=part,
                    )
                    parts.append({"PartNumber": number, "ETag": sent["ETag"]})
                    number += 1
                await self.client.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id,
                    MultipartUpload={"Parts": parts},
                )
            except BaseException:
                with contextlib.suppress(Exception):
                    await self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=key, UploadId=upload_id
                    )
                raise

    async def open(self, name: str) -> StoredFile | None:
        local = await self.local.open(name)
        if local is not None:
            return local
        key = self.key(name)
        try:
            head = await self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _status(exc) == 404:
                return None
            log.warning("could not read %s from the object store: %s", name, _reason(exc))
            raise Unavailable("the file store cannot be reached; try again in a moment") from exc
        modified = head.get("LastModified")
        mtime = modified.timestamp() if isinstance(modified, datetime) else 0.0
        return ObjectFile(self, key, int(head["ContentLength"]), mtime)

    async def remove(self, names: list[str]) -> Removal:
        removal = await self.local.remove(names)
        removed = set(removal.removed)
        for i in range(0, len(names), DELETE_BATCH):
            batch = names[i:i + DELETE_BATCH]
            try:
                answer = await self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": [{"Key": self.key(n)} for n in batch], "Quiet": False},
                )
            except Exception as exc:
                log.warning("could not delete objects: %s", _reason(exc))
                removal.failed += batch
                continue
            for entry in answer.get("Errors", []):
                log.warning("could not delete object %s: %s", entry.get("Key"),
                            entry.get("Code"))
                removal.failed.append(entry.get("Key", "")[len(self.prefix):])
            for entry in answer.get("Deleted", []):
                removed.add(entry.get("Key", "")[len(self.prefix):])
        removal.removed = sorted(removed - set(removal.failed))
        return removal

    async def stored_before(self, before: float) -> list[tuple[str, int]]:
        found = dict(await self.local.stored_before(before))
        paginator = self.client.get_paginator("list_objects_v2")
        async for page in paginator.paginate(Bucket=self.bucket, Prefix=self.prefix):
            for entry in page.get("Contents", []):
                name = entry["Key"][len(self.prefix):]
                modified = entry.get("LastModified")
                if (
                    is_stored_name(name) and isinstance(modified, datetime)
                    and modified.timestamp() < before
                ):
                    found[name] = int(entry.get("Size", 0))
        return sorted(found.items())


def _open_private(path: Path) -> BinaryIO:
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    return os.fdopen(fd, "rb")


def _status(exc: BaseException) -> int | None:
    """The HTTP status of an S3 error answer, if it is one."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        return None
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return status if isinstance(status, int) else None


def _reason(exc: BaseException) -> str:
    """One line saying why, without credentials (botocore's messages carry none)."""
    status = _status(exc)
    if status == 404:
        return "no such bucket (create it first)"
    if status == 403:
        return "access denied (check CHATD_S3_ACCESS_KEY_ID and CHATD_S3_SECRET_ACCESS_KEY)"
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if status is None else f"HTTP {status}: {text}"
