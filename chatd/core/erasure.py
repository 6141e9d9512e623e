"""A customer's records across their chats: which chats are theirs, and the audit line an
erasure leaves (docs/operations.md#erasure-and-export).

A customer who signed in with the widget's token keeps one id across visits; a guest is a
new customer id on every visit, so a guest's chats are found by their email. The audit line
holds no personal data: not the customer's id, not the email, only a keyed hash of what was
asked for (``subject_hash``), so that "was this person erased?" can be answered by whoever
holds the key and by no one else.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import BadRequest
from .models import iso

MAX_CUSTOMER_ID = 200
MAX_EMAIL = 320
# Who asked, as written into the audit line: a name or an account, not a sentence.
MAX_REQUESTED_BY = 100
_PRINTABLE = re.compile(r"^[^\x00-\x1f\x7f]+$")


@dataclass(frozen=True, slots=True)
class CustomerQuery:
    """Exactly one of a customer id (every chat of that id) or an email (every chat whose
    customer gave it, matched without regard to the case of ASCII letters)."""

    customer_id: str | None = None
    email: str | None = None

    @classmethod
    def of(cls, customer_id: str | None = None, email: str | None = None) -> CustomerQuery:
        """A checked query; BadRequest unless exactly one of the two is given and sane."""
        if (customer_id is None) == (email is None):
            raise BadRequest("name the customer by exactly one of customer_id or email")
        if customer_id is not None:
            value = customer_id.strip()
            if not value or len(value) > MAX_CUSTOMER_ID or not _PRINTABLE.match(value):
                raise BadRequest(
                    f"customer_id must be 1 to {MAX_CUSTOMER_ID} printable characters"
                )
            return cls(customer_id=value)
        assert email is not None
        value = email.strip()
        if (
            not value or len(value) > MAX_EMAIL or "@" not in value
            or not _PRINTABLE.match(value)
        ):
            raise BadRequest("email must be an email address (name@domain)")
        return cls(email=value)

    def subject(self) -> str:
        """What the keyed hash is taken of: the kind and the value, emails in lower case."""
        if self.customer_id is not None:
            return "customer_id:" + self.customer_id
        assert self.email is not None
        return "email:" + self.email.lower()


def subject_hash(query: CustomerQuery, key: str) -> str | None:
    """HMAC-SHA256 of the query's subject under ``key``; None without a key (a plain hash
    of an email is no protection: emails are easy to guess and hash)."""
    if not key:
        return None
    return hmac.new(key.encode("utf-8"), query.subject().encode("utf-8"),
                    hashlib.sha256).hexdigest()


def check_requested_by(value: str) -> str:
    value = value.strip()
    if not value or len(value) > MAX_REQUESTED_BY or not _PRINTABLE.match(value):
        raise BadRequest(
            f"say who asked for the erasure in 1 to {MAX_REQUESTED_BY} printable characters"
        )
    return value


@dataclass(frozen=True, slots=True)
class Erasure:
    """The audit line of one erasure. The counts are filled in by the store, in the
    transaction that deletes."""

    id: str
    erased_at: float
    requested_by: str  # the command line's --by, or the lead's account (email)
    via: str  # "cli" or "http"
    subject_hash: str | None
    chats: int = 0
    messages: int = 0
    files: int = 0
    handoffs: int = 0

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "erased_at": iso(self.erased_at),
            "requested_by": self.requested_by,
            "via": self.via,
            "subject_hash": self.subject_hash,
            "chats": self.chats,
            "messages": self.messages,
            "files": self.files,
            "handoffs": self.handoffs,
        }


@dataclass(frozen=True, slots=True)
class Erased:
    """What an erasure removed from the database, and what is left to do outside it."""

    erasure: Erasure
    session_ids: list[str]
    # The upload folder's names of the erased files and thumbnails: removed after commit.
    stored_names: list[str] = field(default_factory=list)
    # Tickets filed for the erased chats: the ticketing system keeps its own copy.
    tickets: list[dict[str, Any]] = field(default_factory=list)
    # Handoffs dropped before they were delivered (pending or dead-lettered): those
    # transcripts never reach the ticketing system.
    undelivered: int = 0
