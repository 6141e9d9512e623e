"""The desk's settings: what chatd.config declares for it (``desk=`` there names these
fields, and app.desk_settings derives an instance), with defaults for a desk made directly
(the core's tests, the simulator)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class DeskSettings:
    offer_timeout: float = 30.0
    grace: float = 60.0
    wait_target: float = 300.0
    wait_warning: float = 240.0
    # The service level the staffing forecast aims at: this share answered within wait_target.
    wait_objective: float = 0.9
    default_capacity: int = 3
    max_capacity: int = 20
    default_handle_seconds: float = 600.0
    handle_history: int = 200
    position_interval: float = 1.0  # at most one queue board per interval
    queue_update_interval: float = 1.0
    history_limit: int = 1000
    # Text an answer with history carries (about, in characters of message bodies and their
    # framing); past it the answer stops early with ``more``, so that one answer held for a
    # client that does not read stays small (docs/security.md).
    history_max_chars: int = 256 * 1024
    handoff_backends: tuple[str, ...] = ()
    # Customers' and engineers' messages a chat may hold; system messages (transfers, the
    # end) still go in past it, so a full chat can be handed over and ended.
    chat_max_messages: int = 5000
    resume_token_ttl: float = 86_400.0  # how long a closed chat's resume token still works
