"""Image decoding: the full decode by Pillow that proves an image is one and makes its
thumbnail, and the fair executor decodes take turns on (docs/attachments.md,
docs/security.md).

Decodes run on a few threads of their own, never on the default executor: each may take
~160 MiB, and a chat that sends twenty images waits behind its own while another chat's
image goes ahead. The upload folder (chatd/files.py) owns the executor and puts the
thumbnails in place.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import struct
from collections import deque
from collections.abc import Callable, Collection
from concurrent.futures import Future as ThreadFuture
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Generic, TypeVar

from .core.errors import TooLarge
from .kinds import Kind, refuse

THUMBNAIL_BOX = (320, 320)
# Images are decoded in full to prove they are images and to make the thumbnail; beyond this
# many pixels the decode alone would cost hundreds of MiB (an 8K screen is 33 megapixels).
MAX_IMAGE_PIXELS = 40_000_000
# Decodes run on this many threads of their own: each may take ~160 MiB at the pixel limit,
# so this bounds their memory, and a second thread keeps one slow image from holding up
# every other chat.
DECODE_WORKERS = 2


def private_opener(path: str, flags: int) -> int:
    """``open``'s opener for every file written in the upload folder: the uploads
    themselves (chatd/files.py) and their thumbnails."""
    # Uploads are the customers' data: readable by the server's user only, and never
    # written through a symlink someone planted.
    return os.open(path, flags | os.O_NOFOLLOW, 0o600)


T = TypeVar("T")


@dataclass(eq=False)
class _Job(Generic[T]):
    call: Callable[[], T]
    future: asyncio.Future[T]
    started: bool = False


@dataclass(eq=False)
class FairExecutor:
    """Blocking jobs on a few threads of their own, taking turns between keys (chats).

    Each key has its own line; a free thread takes the first job of the key whose turn it
    is, and that key goes to the back. So a chat that sends twenty large images waits
    behind its own images, while another chat's one image starts after at most one job of
    each key ahead of it. A job whose caller went away before it started is dropped.
    """

    workers: int
    name: str
    _lines: dict[str, deque[_Job[Any]]] = field(default_factory=dict)  # in turn order
    _running: int = 0
    _pool: ThreadPoolExecutor | None = None
    _loop: asyncio.AbstractEventLoop | None = None

    def waiting(self, key: str | None = None) -> int:
        """Jobs not yet started, of one key or of all."""
        lines = self._lines.values() if key is None else [self._lines.get(key, deque())]
        return sum(1 for line in lines for job in line if not job.future.done())

    @property
    def running(self) -> int:
        return self._running

    async def run(self, key: str, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` on one of the threads, in ``key``'s turn. Cancelled before it
        started, the job is dropped; cancelled while it runs, this waits for it to end
        (a thread cannot be stopped) and then lets the cancellation through."""
        loop = self._loop = asyncio.get_running_loop()
        job: _Job[T] = _Job(functools.partial(fn, *args), loop.create_future())
        self._lines.setdefault(key, deque()).append(job)
        self._dispatch()
        try:
            return await asyncio.shield(job.future)
        except asyncio.CancelledError:
            if job.started:
                with contextlib.suppress(Exception):
                    await job.future
            else:
                job.future.cancel()
            raise

    def _dispatch(self) -> None:
        while self._running < self.workers and self._lines:
            key = next(iter(self._lines))
            line = self._lines.pop(key)
            job = line.popleft()
            if line:
                self._lines[key] = line  # to the back: the next key's turn
            if job.future.done():
                continue
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=self.name)
            job.started = True
            self._running += 1
            self._pool.submit(job.call).add_done_callback(
                functools.partial(self._from_thread, job)
            )

    def _from_thread(self, job: _Job[Any], done: ThreadFuture[Any]) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody is waiting
            self._loop.call_soon_threadsafe(self._finished, job, done)

    def _finished(self, job: _Job[Any], done: ThreadFuture[Any]) -> None:
        self._running -= 1
        if not job.future.done():
            if done.cancelled():
                job.future.cancel()
            elif (exc := done.exception()) is not None:
                job.future.set_exception(exc)
            else:
                job.future.set_result(done.result())
        self._dispatch()

    def close(self) -> None:
        for line in self._lines.values():
            for job in line:
                job.future.cancel()
        self._lines.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)



def make_thumbnail(source: Path, target: Path, kind: Kind, allowed: Collection[str]) -> str:
    """Decode the image at ``source`` and write a thumbnail to ``target``; returns its content
    type. Blocking (Pillow): run it in a thread."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    assert kind.image_format is not None
    invalid = f"this file is not a valid {kind.label}"
    try:
        with Image.open(source, formats=[kind.image_format]) as im:
            width, height = im.size
            if width * height > MAX_IMAGE_PIXELS:
                raise TooLarge(
                    f"the image is {width}x{height} pixels; at most "
                    f"{MAX_IMAGE_PIXELS // 1_000_000} megapixels are accepted"
                )
            if kind.name == "jpeg":
                im.draft("RGB", (THUMBNAIL_BOX[0] * 2, THUMBNAIL_BOX[1] * 2))
            im.load()
            upright = ImageOps.exif_transpose(im)
            alpha = upright.mode in ("RGBA", "LA", "PA") or (
                upright.mode == "P" and "transparency" in upright.info
            )
            frame = upright.convert("RGBA" if alpha else "RGB")
            frame.thumbnail(THUMBNAIL_BOX)
            # A new image holds pixels only: no EXIF, GPS, comments, profiles or trailers.
            clean = Image.new(frame.mode, frame.size)
            clean.paste(frame)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise TooLarge(
            f"the image has too many pixels; at most {MAX_IMAGE_PIXELS // 1_000_000} "
            "megapixels are accepted"
        ) from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError,
            IndexError, struct.error):
        raise refuse(invalid, allowed) from None
    fmt, content_type = ("PNG", "image/png") if alpha else ("JPEG", "image/jpeg")
    with open(target, "xb", opener=private_opener) as out:
        clean.save(out, fmt, **({"quality": 80} if fmt == "JPEG" else {"optimize": True}))
    return content_type
