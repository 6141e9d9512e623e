"""The ``file`` backend: the JSON and text transcripts written into a folder.

Each file is written to a temporary name, flushed to disk, then renamed into place, so a
reader (or a crash) never sees half a transcript; writing again replaces it with the same
content, which makes a retried delivery harmless.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import tempfile
from pathlib import Path

from .base import Delivered, Job, PermanentError, RetryableError

_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def write_atomically(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".part", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o640)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    # The rename is durable only once the folder's entry is on disk.
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


class FileBackend:
    name = "file"

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    async def deliver(self, job: Job) -> Delivered:
        sid = job.transcript.session.id
        if not _SAFE_NAME.match(sid):
            raise PermanentError(f"session id {sid!r} is not usable as a file name")
        json_data = job.transcript.to_json_bytes()
        text_data = job.transcript.to_text().encode("utf-8")
        try:
            await asyncio.to_thread(self._write, sid, json_data, text_data)
        except OSError as exc:
            # A full disk or a folder without permission may be fixed by an operator.
            raise RetryableError(f"could not write the transcript: {exc}") from exc
        return Delivered(result=f"wrote {sid}.json and {sid}.txt into {self.folder}")

    def _write(self, sid: str, json_data: bytes, text_data: bytes) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomically(self.folder / f"{sid}.json", json_data)
        write_atomically(self.folder / f"{sid}.txt", text_data)

    async def close(self) -> None:
        return None
