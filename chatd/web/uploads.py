"""The state shared by the attachment routes, and the upload slots it holds.

:class:`Uploads` (under the app key ``UPLOADS``) is the upload folder, the per-client rate,
the slots and the limits from the settings. :class:`UploadSlots` counts the uploads in
progress per chat, per uploader and per client address, in this process or, through
chatd.limits, in Redis for every process together; a :class:`Slot` is one of them, held
until the upload ends (docs/security.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from ..core.errors import RateLimited
from ..files import UploadFolder
from ..limits import LocalSlots, RateLimit, SharedLimits, SlotLimit


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
    and so new chats, but not new addresses); in ``limits`` when given (shared by every
    process), else in this process."""

    per_session: int
    per_uploader: int
    per_address: int
    limits: SharedLimits | None = None
    sessions: SlotLimit = field(init=False)
    uploaders: SlotLimit = field(init=False)
    addresses: SlotLimit = field(init=False)

    def __post_init__(self) -> None:
        if self.limits is None:
            self.sessions, self.uploaders, self.addresses = LocalSlots(), LocalSlots(), LocalSlots()
        else:
            self.sessions = self.limits.slots("upload:chat")
            self.uploaders = self.limits.slots("upload:uploader")
            self.addresses = self.limits.slots("upload:address")

    def _checks(self, session_id: str, uploader: str, address: str) -> tuple[
        tuple[SlotLimit, str, int, str], ...
    ]:
        return (
            (self.sessions, session_id, self.per_session,
             f"this chat already has {self.per_session} uploads in progress; "
             "wait for one to finish"),
            (self.uploaders, uploader, self.per_uploader,
             f"you already have {self.per_uploader} uploads in progress; "
             "wait for one to finish"),
            (self.addresses, address, self.per_address,
             f"your network address already has {self.per_address} uploads in progress; "
             "wait for one to finish"),
        )

    async def acquire(self, session_id: str, uploader: str, address: str) -> Slot:
        """A slot, or RateLimited at once when the chat, the uploader or the address has
        none left (then nothing is held)."""
        taken: list[tuple[SlotLimit, str]] = []
        try:
            for slots, key, cap, refusal in self._checks(session_id, uploader, address):
                if not await slots.acquire(key, cap):
                    raise RateLimited(refusal, limit=cap)
                taken.append((slots, key))
        except BaseException:
            for slots, key in taken:
                slots.release(key)
            raise
        return Slot(self, (session_id, uploader, address))

    def give_back(self, session_id: str, uploader: str, address: str) -> None:
        self.sessions.release(session_id)
        self.uploaders.release(uploader)
        self.addresses.release(address)


@dataclass
class Uploads:
    folder: UploadFolder
    # Per API or resume token: one client's uploads (chatd.limits: in Redis with several
    # processes, else this process's).
    limiter: RateLimit
    slots: UploadSlots
    max_bytes: int
    session_max_count: int
    session_max_bytes: int
    kinds: tuple[str, ...]
    idle_timeout: float
    total_timeout: float
    # (chat, upload id) of the uploads with an Upload-Id in progress in this process.
    in_flight: set[tuple[str, str]] = field(default_factory=set)

    async def allow_upload(self, client: str) -> bool:
        """Whether ``client`` (a hashed token) may start an upload now, by ``limiter``."""
        return await self.limiter.take(client)


UPLOADS = web.AppKey("uploads", Uploads)
