"""What chatd needs from storage: whole operations, not SQL (docs/design.md#storage).

The storage interface is cut into narrow ports, one per kind of record, so that each part
of chatd names only what it uses (the desk: sessions and messages; the handoff worker: the
outbox; logins: accounts; …). ``Store`` is all of them: every backend (SQLite now)
implements it and passes tests/store's contract suite, whose files are cut the same way
(``CONTRACT`` in tests/store/test_contract_protocol.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .erasure import CustomerQuery, Erased, Erasure
from .models import (
    Engineer,
    EngineerAccount,
    Message,
    NewMessage,
    Session,
)
from .stats import SessionOutcome
from .transcript import Handoff


class Lifecycle(Protocol):
    async def open(self) -> None:
        """Connect and apply migrations."""
        ...

    async def close(self) -> None:
        """Finish writes in flight, then release the database."""
        ...

    async def ready(self) -> bool:
        """True when the database answers and its schema is current."""
        ...

class DeskLease(Protocol):
    """Which process runs the desk (docs/design.md#one-desk-per-database). A term is the
    number of the lease's holding, higher at every change of holder; the holder's writes
    carry it, and the database refuses them once a later term exists (fencing)."""

    async def acquire(self) -> int | None:
        """Take the lease if nobody holds it: the term now held, or None. From then on
        every write of this store checks the term first, and once another process holds
        the lease the writes are refused (Fenced) and ``on_lost`` is called."""
        ...

    async def renew(self) -> bool:
        """Extend the lease; False once another process has taken it."""
        ...

    async def release(self) -> None:
        """Give the lease up now, if held (a clean stop), so that a standby takes over at
        once; and let go of whatever looking for it kept open."""
        ...

    def describe(self) -> str:
        """Who holds the lease, for a message (the other process's name, or a lock file)."""
        ...


class LeaseStore(Protocol):
    def desk_lease(
        self, node: str, seconds: float, on_lost: Callable[[], None]
    ) -> DeskLease:
        """The desk's lease as ``node`` (this process's name) would hold it, for
        ``seconds`` past each renewal; ``on_lost`` is called when a write finds it has
        passed to another process."""
        ...

    @property
    def standby_possible(self) -> bool:
        """True when a second process on this database waits as a standby; False when it
        must refuse to start (SQLite: one process per database file)."""
        ...


class WriteCounters(Protocol):
    """How well writes are grouped into commits (docs/monitoring.md#metrics)."""

    @property
    def batches(self) -> int:
        """Commits of writes so far."""
        ...

    @property
    def batched_ops(self) -> int:
        """Writes committed so far (message appends among them)."""
        ...


class AccountStore(Protocol):
    """Engineers and their API tokens."""

    async def add_engineer(self, account: EngineerAccount) -> None:
        """Raises Conflict when the email is taken."""
        ...

    async def engineer_account(self, email: str) -> EngineerAccount | None: ...

    async def list_engineers(self) -> list[EngineerAccount]: ...

    async def set_engineer_disabled(self, email: str, disabled: bool) -> bool:
        """Disabling also revokes every token of the engineer. False if unknown."""
        ...

    async def add_token(
        self, token_hash: str, engineer_id: str, created_at: float, expires_at: float
    ) -> None: ...

    async def engineer_for_token(self, token_hash: str, now: float) -> Engineer | None:
        """The engineer of a live token (not expired, not revoked, engineer not disabled)."""
        ...

    async def revoke_token(self, token_hash: str) -> None: ...

    async def live_tokens(self, token_hashes: Iterable[str], now: float) -> set[str]:
        """The subset of ``token_hashes`` that engineer_for_token would still accept."""
        ...

class SessionStore(Protocol):
    """Chats and the queue: sessions, their states, resume tokens and handle times."""

    async def create_session(
        self, session: Session, resume_token_hash: str, first: NewMessage | None
    ) -> Message | None:
        """Store a new waiting session (and its first message) in one transaction."""
        ...

    async def next_arrival_seq(self) -> int:
        """The largest arrival_seq stored so far (0 when there is none)."""
        ...

    async def save_session_state(self, session: Session) -> None:
        """Persist state, engineer and assignment times of an open session."""
        ...

    async def assign_session(
        self, session: Session, expected_states: Sequence[str], message: NewMessage | None
    ) -> Message | None:
        """Persist an assignment only if the stored state is one of ``expected_states``.

        Raises Conflict otherwise: this is what keeps assignment exactly-once even if two
        writers race. The optional system message is stored in the same transaction.
        """
        ...

    async def end_session(
        self, session: Session, message: NewMessage, handoff_backends: Sequence[str]
    ) -> Message:
        """End an open session: its final state, a system message and one outbox row per
        handoff backend, all in one transaction. Raises SessionClosed if already closed."""
        ...

    async def open_sessions(self) -> list[Session]:
        """Every waiting, offered or active session, for a restart."""
        ...

    async def get_session(self, session_id: str) -> Session | None: ...

    async def set_resume_token_hash(self, session_id: str, resume_token_hash: str) -> bool:
        """Replace an open session's resume token; False if it is not open."""
        ...

    async def resume_token_hash(self, session_id: str) -> str | None: ...

    async def recent_handle_times(self, since: float, limit: int) -> list[float]:
        """Seconds from assignment to end of the latest answered sessions ended since ``since``."""
        ...

class MessageStore(Protocol):
    """A chat's messages, in seq order."""

    async def append_message(self, message: NewMessage) -> tuple[Message, bool]:
        """Store a message with the session's next seq; with a client_msg_id already stored
        for the session, return that message and False instead."""
        ...

    async def messages_after(
        self, session_id: str, after_seq: int, limit: int
    ) -> list[Message]: ...

class AttachmentStore(Protocol):
    """Attachments' records (their files are chatd/files.py's; docs/attachments.md)."""

    async def add_attachment(
        self, attachment: AttachmentRecord, max_count: int, max_bytes: int
    ) -> None:
        """Record an uploaded file of an open session. Refuses (before writing anything) with
        SessionClosed when the session is closed, Conflict when it already has ``max_count``
        attachments and TooLarge when its attachments would pass ``max_bytes`` in total."""
        ...

    async def get_attachment(self, attachment_id: str) -> AttachmentRecord | None: ...

    async def session_attachments(self, session_id: str) -> list[AttachmentRecord]:
        """A session's attachments, oldest first (for transcripts and ticket handoff)."""
        ...

    async def session_attachment_usage(self, session_id: str) -> tuple[int, int]:
        """How many attachments a session has and their total size in bytes."""
        ...

    async def delete_attachment(self, attachment_id: str) -> None:
        """Forget an attachment whose announcement could not be stored."""
        ...

class OutboxStore(Protocol):
    """The handoff outbox (docs/handoff.md). Rows are written by end_session and
    create_offline_ticket; these operations deliver and manage them, and file tickets
    left without a chat."""

    async def claim_handoffs(
        self, now: float, limit: int, lease: float, backends: Sequence[str]
    ) -> list[Handoff]:
        """Take due pending rows of these backends, earliest due first: counts the attempt,
        marks the row in flight and makes it due again only after ``lease`` seconds."""
        ...

    async def release_handoff_claims(self, now: float) -> int:
        """At start-up: make rows left in flight by a dead process due now."""
        ...

    async def handoff_delivered(
        self,
        handoff_id: str,
        now: float,
        result: str,
        ticket: dict[str, Any] | None,
        status: int | None,
        response: str | None,
    ) -> bool:
        """Mark delivered; store the ticket on the session unless it has one (True if so).
        This and the two below do nothing to a row that is no longer pending."""
        ...

    async def handoff_retry_later(
        self,
        handoff_id: str,
        now: float,
        next_attempt_at: float,
        error: str,
        status: int | None,
        response: str | None,
    ) -> None: ...

    async def handoff_failed(
        self, handoff_id: str, now: float, error: str, status: int | None, response: str | None
    ) -> None:
        """Dead-letter a row, keeping the backend's last answer."""
        ...

    async def handoff_counts(self) -> dict[str, int]:
        """Rows per state: pending, delivered, failed."""
        ...

    async def next_handoff_due(self, backends: Sequence[str]) -> float | None: ...

    async def list_handoffs(self, state: str | None = None, limit: int = 100) -> list[Handoff]:
        ...

    async def get_handoff(self, handoff_id: str) -> Handoff | None:
        """By id, or by a unique prefix of at least 8 characters."""
        ...

    async def session_handoffs(self, session_id: str) -> list[Handoff]: ...

    async def retry_handoff(self, handoff_id: str, now: float) -> Handoff:
        """Make a failed (or waiting) row due now with a fresh horizon; a row in flight is
        returned as it is; Conflict if delivered, NotFound if unknown."""
        ...

    async def retry_failed_handoffs(self, now: float) -> int: ...

    async def session_origin(self, session_id: str) -> str | None:
        """'chat' or 'offline' (a ticket left with POST /api/tickets); None if unknown."""
        ...

    async def create_offline_ticket(
        self,
        session: Session,
        resume_token_hash: str,
        messages: Sequence[NewMessage],
        handoff_backends: Sequence[str],
    ) -> list[Message]:
        """Store a closed session of origin 'offline', its messages and its outbox rows in
        one transaction."""
        ...

class StatsStore(Protocol):
    """Monitoring (docs/monitoring.md): outcomes for the service level, the status banner."""

    async def session_outcomes(self, since: float) -> list[SessionOutcome]:
        """Chats (not offline tickets) first answered or closed after ``since``, for the
        service level."""
        ...

    async def status_banner(self) -> dict[str, Any] | None:
        """The status banner in force ({text, link, updated_at, updated_by}), if any."""
        ...

    async def set_status_banner(
        self, text: str | None, link: str | None, now: float, by: str | None
    ) -> None:
        """Post (or with ``text`` None, clear) the status banner."""
        ...


class CustomerStore(Protocol):
    """A customer's chats across visits: export and erasure
    (docs/operations.md#erasure-and-export)."""

    async def customer_sessions(self, query: CustomerQuery) -> list[Session]:
        """The customer's chats (every state, offline tickets too), oldest first."""
        ...

    async def erase_customer(self, query: CustomerQuery, erasure: Erasure) -> Erased:
        """Delete the customer's chats with their messages, attachment records and outbox
        rows, and record ``erasure`` with the counts, in one transaction. Raises NotFound
        when no chat matches and Conflict (changing nothing) while one is still open."""
        ...

    async def list_erasures(self, limit: int = 100) -> list[Erasure]:
        """The audit lines, newest first."""
        ...


class UploadStore(Protocol):
    """Uploads recognised by the client's upload id, so that a retry stores nothing new
    (docs/attachments.md#retrying-an-upload)."""

    async def add_attachment_once(
        self, attachment: AttachmentRecord, upload_id: str, max_count: int, max_bytes: int
    ) -> AttachmentRecord:
        """add_attachment, remembering ``upload_id`` for the chat; when the chat already has
        an attachment of that upload id, that one is returned and nothing is written."""
        ...

    async def attachment_for_upload(
        self, session_id: str, upload_id: str
    ) -> AttachmentRecord | None: ...

    async def attachment_message(self, session_id: str, attachment_id: str) -> Message | None:
        """The ``attachment`` message announcing an attachment, if it was stored."""
        ...


class ReadMarkStore(Protocol):
    """How far each side of a chat has read (docs/protocol.md#read-marks)."""

    async def mark_read(self, session_id: str, side: str, seq: int) -> None:
        """Raise the read mark of ``side`` ("customer" or "engineer") in the chat to
        ``seq``: never lowered, at most the chat's last seq, nothing for a chat without
        messages. Returns once stored; marks arriving together are written together."""
        ...

    async def read_marks(self, session_id: str) -> dict[str, int]:
        """``{"customer": seq, "engineer": seq}``, 0 for a side that has marked nothing."""
        ...


class EngineerStatusStore(Protocol):
    """Each engineer's status and capacity as last set, kept across restarts and takeovers
    (docs/design.md#several-processes)."""

    async def save_engineer_status(
        self, engineer_id: str, status: str, capacity: int, now: float
    ) -> None:
        ...

    async def engineer_statuses(self) -> dict[str, tuple[str, int]]:
        """``{engineer_id: (status, capacity)}`` for every engineer that set one."""
        ...


class DeskStore(SessionStore, MessageStore, ReadMarkStore, EngineerStatusStore, Protocol):
    """What the desk uses: sessions, messages, read marks and engineers' statuses."""




@dataclass(frozen=True, slots=True)
class AttachmentRecord:
    """An uploaded file as stored: metadata here, the bytes in the upload folder under the
    random ``stored_name`` (the customer's filename is display metadata only)."""

    id: str
    session_id: str
    uploader_role: str  # "customer", "engineer" or "lead"
    uploader_id: str | None
    filename: str
    content_type: str
    size: int
    sha256: str
    stored_name: str
    thumbnail_name: str | None
    thumbnail_type: str | None
    created_at: float

    @property
    def url(self) -> str:
        return f"/api/attachments/{self.id}"

    def to_wire(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "filename": self.filename,
            "content_type": self.content_type,
            "size": self.size,
            "sha256": self.sha256,
            "url": self.url,
        }
        if self.thumbnail_name is not None:
            out["thumbnail_url"] = self.url + "/thumbnail"
        return out


# ---------------------------------------------------------------------- retention


@dataclass(frozen=True, slots=True)
class PurgeRules:
    """Which closed chats may go (docs/operations.md#retention): those closed before
    ``closed_before`` with no pending handoff, and whose dead-lettered handoffs (if any)
    were dead-lettered before ``dead_letter_before`` (None: such chats are kept)."""

    closed_before: float
    dead_letter_before: float | None


@dataclass(frozen=True, slots=True)
class PurgeCounts:
    """What a purge removes (or, previewed, would remove)."""

    chats: int = 0
    messages: int = 0
    attachments: int = 0
    attachment_bytes: int = 0
    outbox_rows: int = 0


@dataclass(frozen=True, slots=True)
class PurgeBatch:
    """One purge transaction: what went, the stored files of the attachments that went
    (``files``: stored and thumbnail names, to remove from the upload folder), the chats
    whose ``file`` handoff had been delivered (their transcript files go too), and ``left``:
    the chats asked for that this transaction did not finish, in order."""

    counts: PurgeCounts
    files: tuple[str, ...]
    transcripts: tuple[str, ...]
    left: tuple[str, ...]


class RetentionStore(Protocol):
    """The purge of old closed chats and of attachment records without their message
    (docs/operations.md). Writes go through the store's writer, a few hundred messages per
    transaction; the searches are reads."""

    async def purge_preview(self, rules: PurgeRules) -> PurgeCounts:
        """What a full purge under ``rules`` would remove now; changes nothing."""
        ...

    async def purge_candidates(
        self, rules: PurgeRules, after: tuple[float, str] | None, limit: int
    ) -> list[tuple[float, str]]:
        """Chats that may go under ``rules``, as (ended_at, id), oldest end first, after
        the chat ``after`` (keyset paging)."""
        ...

    async def purge_chats(
        self, session_ids: Sequence[str], rules: PurgeRules, max_messages: int
    ) -> PurgeBatch:
        """In one transaction, purge these chats in order (each re-checked against
        ``rules``: one that no longer qualifies is skipped), deleting at most
        ``max_messages`` messages; a chat cut short loses its outbox rows first and is
        finished by a later call."""
        ...

    async def attachment_orphans(
        self, created_before: float, limit: int
    ) -> list[AttachmentRecord]:
        """Attachment records made before ``created_before`` whose message is missing."""
        ...

    async def delete_attachment_orphans(
        self, attachment_ids: Sequence[str], created_before: float
    ) -> list[AttachmentRecord]:
        """Delete those of these records that are still orphans; the deleted records."""
        ...

    async def known_attachment_files(self, names: Sequence[str]) -> set[str]:
        """The names among ``names`` that an attachment record holds (file or thumbnail)."""
        ...


class Store(
    Lifecycle, LeaseStore, WriteCounters, AccountStore, SessionStore, MessageStore,
    ReadMarkStore, EngineerStatusStore, AttachmentStore, OutboxStore, StatsStore,
    CustomerStore, UploadStore, RetentionStore, Protocol,
):
    """Every port: what a backend implements."""
