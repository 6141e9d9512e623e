"""Structured logs: JSON lines in production, readable text in development.

Log calls pass ids as ``extra`` fields (session_id, engineer_id, ...); never tokens,
passwords or message bodies.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Any

from .core.models import Session
from .core.observer import NullObserver, abandon_wait, answer_wait, outcome

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in record.__dict__.items() if k not in _STANDARD}


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        out.update(_extras(record))
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)-7s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = _extras(record)
        if extras:
            text += " " + " ".join(f"{k}={v}" for k, v in extras.items())
        return text


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JSONFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # aiohttp's access log would print every polling request; keep it at warnings.
    logging.getLogger("aiohttp.access").setLevel(logging.WARNING)


class DeskLog(NullObserver):
    """A desk observer that logs the moments of a chat's life: requested, answered, ended
    or abandoned, and queue alerts. Ids and numbers only: no names, tokens or bodies."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger("chatd.desk")

    def session_requested(self, session: Session) -> None:
        self.log.info("chat requested", extra={
            "session_id": session.id, "severity": session.severity,
            "tier": session.customer.tier.value,
        })

    def session_answered(self, session: Session) -> None:
        wait = answer_wait(session)
        self.log.info("chat answered", extra={
            "session_id": session.id,
            "engineer_id": session.engineer.id if session.engineer else None,
            "wait_seconds": None if wait is None else round(wait, 1),
        })

    def session_closed(self, session: Session) -> None:
        result = outcome(session)
        extra: dict[str, Any] = {
            "session_id": session.id,
            "outcome": result,
            "ended_by": session.ended_by,
            "engineer_id": session.engineer.id if session.engineer else None,
        }
        waited = abandon_wait(session)
        if waited is not None:
            extra["wait_seconds"] = round(waited, 1)
        if session.ended_at is not None and session.first_assigned_at is not None:
            extra["handle_seconds"] = round(session.ended_at - session.first_assigned_at, 1)
        self.log.info("chat %s", result, extra=extra)

    def queue_alert(self, alert: dict[str, Any]) -> None:
        level = alert.get("level")
        self.log.log(
            logging.INFO if level == "clear" else logging.WARNING,
            "queue alert: %s", level,
            extra={k: alert.get(k) for k in
                   ("oldest_wait_seconds", "threshold_seconds", "predicted_wait_seconds",
                    "queue_length", "engineers_online")},
        )
