"""Engineers on the desk and the offers made to them: an engineer's presence (connections,
status, capacity, the chats and offers they hold) and an offer's lifetime."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .models import Engineer, EngineerStatus


@dataclass(slots=True)
class Offer:
    session_id: str
    engineer_id: str
    made_at: float
    expires_at: float
    transfer_from: str | None = None


@dataclass(slots=True)
class Presence:
    engineer: Engineer
    capacity: int
    last_assigned_at: float
    last_offered_at: float = float("-inf")
    status: EngineerStatus = EngineerStatus.AWAY
    connections: int = 0
    active: set[str] = field(default_factory=set)
    offers: set[str] = field(default_factory=set)
    gone_deadline: float | None = None
    away_since: float | None = None  # when a connected engineer last went from available to away

    def set_status(self, status: EngineerStatus, now: float) -> float | None:
        """Change status; returns how long they were away when they come back from it."""
        back = None
        if status is EngineerStatus.AWAY and self.status is EngineerStatus.AVAILABLE:
            self.away_since = now
        elif status is EngineerStatus.AVAILABLE and self.away_since is not None:
            back = now - self.away_since
            self.away_since = None
        self.status = status
        return back

    @property
    def load(self) -> int:
        return len(self.active) + len(self.offers)

    @property
    def online(self) -> bool:
        return self.connections > 0

    @property
    def eligible(self) -> bool:
        return (
            self.connections > 0
            and self.status is EngineerStatus.AVAILABLE
            and self.load < self.capacity
        )

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.engineer.id,
            "name": self.engineer.name,
            "role": self.engineer.role.value,
            "status": self.status.value,
            "online": self.online,
            "capacity": self.capacity,
            "active": len(self.active),
            "offers": len(self.offers),
        }
