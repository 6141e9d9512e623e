"""The state shared by the attachment routes, and the upload slots it holds.

:class:`Uploads` (under the app key ``UPLOADS``) is the upload folder, the per-client rate,
the slots and the limits from the settings. :class:`UploadSlots` counts the uploads in
progress per chat, per uploader and per client address; a :class:`Slot` is one of them,
held until the upload ends (docs/security.md).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from ..core.errors import RateLimited
from ..core.ratelimit import KeyedLimiter
from ..files import UploadFolder


class Slot:
    """One upload in progress, counted against its chat, its uploader and its client address
    until released."""

    def __init__(self, slots: UploadSlots, keys: tuple[str, str, str] | None) -> None:
        self._slots = slots
        self._keys = keys
        # Called once with the release (an upload id's mark of being in progress).
        self.on_release: Callable[[], None] | None = None

    def release(self) -> None:
        """Give the slot back; once only, whatever way the upload ended."""
        keys, self._keys = self._keys, None
        if keys is not None:
            self._slots.give_back(*keys)
        done, self.on_release = self.on_release, None
        if done is not None:
            done()

    def hand_over(self) -> Slot:
        """The same slot under a new owner; releasing this one then does nothing."""
        keys, self._keys = self._keys, None
        other = Slot(self._slots, keys)
        other.on_release, self.on_release = self.on_release, None
        return other


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
    # (chat, upload id) of the uploads with an Upload-Id in progress in this process.
    in_flight: set[tuple[str, str]] = field(default_factory=set)


UPLOADS = web.AppKey("uploads", Uploads)
