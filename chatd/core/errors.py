"""Domain errors. The transport maps ``code`` to the protocol's error codes in one place."""

from __future__ import annotations

from typing import Any


class DeskError(Exception):
    """Base of every error the desk reports to a client."""

    code = "internal"

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class BadRequest(DeskError):
    code = "bad_request"


class Unauthorized(DeskError):
    code = "unauthorized"


class Forbidden(DeskError):
    code = "forbidden"


class NotFound(DeskError):
    code = "not_found"


class Conflict(DeskError):
    code = "conflict"


class SessionClosed(DeskError):
    code = "session_closed"


class RateLimited(DeskError):
    code = "rate_limited"


class TooLarge(DeskError):
    code = "too_large"


class Unavailable(DeskError):
    """Storage cannot be reached (a database server down or restarting): nothing was
    written, and the client may try again."""

    code = "unavailable"


class Fenced(Unavailable):
    """This process no longer holds the desk's lease: another process runs the desk now
    (docs/scaling.md#one-desk-per-database), and nothing more may be written from here."""


class DeskTaken(Exception):
    """Another process runs the desk on this database, and the backend has no standby
    (SQLite): this one must not start (docs/scaling.md#one-desk-per-database)."""


class ClusterError(Exception):
    """This process cannot join a cluster as configured (e.g. Redis unreachable, or SQLite
    with a Redis URL): it must not start (docs/scaling.md#running-several-processes)."""


ERROR_CODES: tuple[str, ...] = (
    "bad_request",
    "unauthorized",
    "forbidden",
    "not_found",
    "conflict",
    "session_closed",
    "rate_limited",
    "too_large",
    "unsupported_type",
    "insufficient_storage",
    "unavailable",
    "internal",
)
