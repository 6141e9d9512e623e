"""What a ticket backend is, and how an HTTP answer is judged
(docs/handoff.md#failures-and-retries).

A backend delivers one transcript and returns ``Delivered``, or raises ``RetryableError``
(try again later) or ``PermanentError`` (dead-letter now, keeping the answer for the
operator). Any other exception is a bug or an unforeseen network failure: it is retried.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from ..core.transcript import Handoff, Transcript
from .policy import parse_retry_after

# Reads the bytes of an attachment by id, if it is no larger than ``limit`` bytes; None
# when it is gone or too large.
AttachmentReader = Callable[[str, int], Awaitable[bytes | None]]


@dataclass(frozen=True, slots=True)
class Job:
    handoff: Handoff
    transcript: Transcript

    @property
    def key(self) -> str:
        """The idempotency key: the same for every attempt of this delivery."""
        return self.handoff.id


@dataclass(frozen=True, slots=True)
class Delivered:
    result: str  # a short line for operators, e.g. "created RT ticket 42"
    ticket: dict[str, Any] | None = None  # {"backend", "id", "url"} when a ticket exists
    status: int | None = None
    response: str | None = None


class DeliveryError(Exception):
    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        response: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.response = response
        self.retry_after = retry_after


class RetryableError(DeliveryError):
    """Network trouble, a timeout, 408, 429 or 5xx: the same delivery is tried again."""


class PermanentError(DeliveryError):
    """Any other refusal (e.g. 400, 401, 404): retrying cannot help; dead-letter now."""


class Backend(Protocol):
    name: str

    async def deliver(self, job: Job) -> Delivered: ...

    async def close(self) -> None: ...


RETRY_STATUSES = frozenset({408, 429})


def check_status(status: int, body: str, retry_after: str | None, now: float, what: str) -> None:
    """Raise for an HTTP answer that is not a success; return for 2xx."""
    if 200 <= status < 300:
        return
    snippet = body[:500]
    if status in RETRY_STATUSES or status >= 500:
        raise RetryableError(
            f"{what} answered {status}",
            status=status,
            response=snippet,
            retry_after=parse_retry_after(retry_after, now),
        )
    raise PermanentError(f"{what} refused the delivery with {status}", status=status,
                         response=snippet)
