"""What the desk needs from storage: whole operations, not SQL (docs/design.md#storage).

Every backend (SQLite now) implements this protocol and passes tests/store's contract suite.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Protocol

from .models import (
    Engineer,
    EngineerAccount,
    Message,
    NewMessage,
    Session,
)


class Store(Protocol):
    async def open(self) -> None:
        """Connect and apply migrations."""
        ...

    async def close(self) -> None:
        """Finish writes in flight, then release the database."""
        ...

    async def ready(self) -> bool:
        """True when the database answers and its schema is current."""
        ...

    # Engineers and their API tokens.
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

    # Sessions.
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

    async def resume_token_hash(self, session_id: str) -> str | None: ...

    async def recent_handle_times(self, since: float, limit: int) -> list[float]:
        """Seconds from assignment to end of the latest answered sessions ended since ``since``."""
        ...

    # Messages.
    async def append_message(self, message: NewMessage) -> tuple[Message, bool]:
        """Store a message with the session's next seq; with a client_msg_id already stored
        for the session, return that message and False instead."""
        ...

    async def messages_after(
        self, session_id: str, after_seq: int, limit: int
    ) -> list[Message]: ...
