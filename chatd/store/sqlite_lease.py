"""The desk's lease on SQLite: a lock on a file beside the database (``chatd.db.lock``).

A SQLite desk runs in one process (docs/scaling.md#one-desk-per-database). The lock is
``flock``'s: the kernel releases it when its holder exits, however it exits (``kill -9``
too), so a process that finds it held knows another ``chatd serve`` is alive on the same
database file. It is never lost while held, so there is nothing to fence.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable
from pathlib import Path


class FileLease:
    def __init__(self, database: Path, node: str) -> None:
        self.path = database.with_name(database.name + ".lock")
        self.node = node
        self._fd: int | None = None
        self._holder = ""

    async def acquire(self) -> int | None:
        if self._fd is not None:
            return 1
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            with contextlib.suppress(OSError):
                self._holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip()
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{self.node}\n".encode(), 0)
        self._fd = fd
        return 1

    async def renew(self) -> bool:
        return self._fd is not None

    async def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the only descriptor releases the lock

    def describe(self) -> str:
        who = f" ({self._holder})" if self._holder else ""
        return f"another chatd serve{who} is running on this database (lock {self.path})"


def file_lease(database: Path, node: str, on_lost: Callable[[], None]) -> FileLease:
    del on_lost  # a file lock is never lost while its holder lives
    return FileLease(database, node)
