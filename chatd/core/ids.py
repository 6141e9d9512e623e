"""Where new ids and tokens come from. The desk takes both as injectable sources (tests use
predictable ones); these are the defaults: random UUIDs, and URL-safe tokens of 32 random
bytes stored only as their SHA-256."""

from __future__ import annotations

import hashlib
import os
import secrets


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    return secrets.token_urlsafe(32)


class RandomIds:
    """Random (version 4) UUIDs as strings, as ``str(uuid.uuid4())`` makes them, with the
    operating system's randomness read 4 KiB at a time: one system call per 256 ids
    rather than one each. Each such call lets go of the GIL, and taking it back from the
    database thread stalls the event loop, once per message."""

    def __init__(self) -> None:
        self._pool = b""
        self._at = 0

    def __call__(self) -> str:
        at = self._at
        if at + 16 > len(self._pool):
            self._pool, at = os.urandom(4096), 0
        self._at = at + 16
        h = self._pool[at:at + 16].hex()
        # the version (4) and variant (10xx) bits, as uuid.UUID(..., version=4) sets them
        return (f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}")


_VARIANT = {f"{n:x}": f"{8 + n % 4:x}" for n in range(16)}
new_id = RandomIds()  # the desk's default source of ids
