"""Transcripts: one model of an ended session, rendered as JSON, plain text and safe HTML,
and the outbox record that hands it to a ticketing backend (docs/handoff.md).

The model is built from what the store holds (the session and every message); nothing here
touches a network or a database. Every string that came from a customer or an engineer is
escaped in the HTML rendering and stripped of control characters in the text rendering.
"""

from __future__ import annotations

import html
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from .models import Message, MessageKind, Session, iso

TRANSCRIPT_VERSION = 1

SEVERITY_LABELS = {1: "critical", 2: "high", 3: "medium", 4: "low"}

ORIGIN_CHAT = "chat"
ORIGIN_OFFLINE = "offline"

HANDOFF_STATES = ("pending", "delivered", "failed")

# C0/C1 controls except tab and newline: a transcript read in a terminal or a mail client
# must not carry escape sequences that rewrite what the reader sees.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def clean_text(value: str) -> str:
    """Text safe to print: CRLF made LF, other control and bidi-override characters removed."""
    return _CONTROL.sub("", value.replace("\r\n", "\n").replace("\r", "\n"))


def severity_label(severity: int) -> str:
    return SEVERITY_LABELS.get(severity, str(severity))


@dataclass(frozen=True, slots=True)
class Handoff:
    """One outbox row: the transcript of one session for one backend.

    ``id`` is the idempotency key of every attempt (the webhook-id, for example), so a
    delivery retried after a crash is recognisable as the same one by the receiver.
    """

    id: str
    session_id: str
    backend: str
    state: str  # "pending", "delivered" or "failed" (dead-lettered)
    attempts: int
    next_attempt_at: float
    created_at: float
    updated_at: float
    last_error: str | None = None
    result: str | None = None
    claimed_at: float | None = None
    last_status: int | None = None
    last_response: str | None = None
    delivered_at: float | None = None
    requeued_at: float | None = None
    ticket: dict[str, Any] | None = None

    @property
    def horizon_start(self) -> float:
        """Where the dead-letter horizon is counted from: creation, or a manual retry."""
        return max(self.created_at, self.requeued_at or 0.0)

    def to_wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "session_id": self.session_id,
            "backend": self.backend,
            "state": self.state,
            "attempts": self.attempts,
            "next_attempt_at": iso(self.next_attempt_at) if self.state == "pending" else None,
            "created_at": iso(self.created_at),
            "updated_at": iso(self.updated_at),
            "delivered_at": iso(self.delivered_at),
            "in_flight": self.claimed_at is not None,
            "last_error": self.last_error,
            "last_status": self.last_status,
            "last_response": self.last_response,
            "result": self.result,
            "ticket": self.ticket,
        }


@dataclass(frozen=True, slots=True)
class Assignment:
    """One engineer's time with the session, in order."""

    engineer_id: str | None
    name: str
    since: float
    until: float | None
    via: str  # "offer" (accepted from the queue) or "transfer"
    left: str | None  # "transferred", "disconnected", "ended" or None while open


@dataclass(frozen=True, slots=True)
class Escalation:
    seq: int
    ts: float
    kind: str
    phone: str | None
    note: str | None


@dataclass(frozen=True, slots=True)
class TranscriptAttachment:
    id: str
    seq: int
    filename: str
    content_type: str
    size: int
    sha256: str
    url: str
    sender: str


@dataclass(frozen=True, slots=True)
class Transcript:
    session: Session
    messages: tuple[Message, ...]
    origin: str = ORIGIN_CHAT
    base_url: str = ""
    assignments: tuple[Assignment, ...] = field(default=())
    escalations: tuple[Escalation, ...] = field(default=())
    attachments: tuple[TranscriptAttachment, ...] = field(default=())

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        session: Session,
        messages: Sequence[Message],
        *,
        origin: str = ORIGIN_CHAT,
        base_url: str = "",
    ) -> Transcript:
        """The transcript of ``session`` from its messages (in any order; sorted by seq).

        ``base_url`` (e.g. https://chat.example.com) makes attachment links absolute, so
        they work from a ticket or a mail client.
        """
        ordered = tuple(sorted(messages, key=lambda m: m.seq))
        base = base_url.rstrip("/")
        return cls(
            session=session,
            messages=ordered,
            origin=origin,
            base_url=base,
            assignments=tuple(_assignments(session, ordered)),
            escalations=tuple(_escalations(ordered)),
            attachments=tuple(_attachments(ordered, base)),
        )

    # ------------------------------------------------------------------ facts

    @property
    def answered(self) -> bool:
        return self.session.first_assigned_at is not None

    @property
    def wait_seconds(self) -> float | None:
        """Request to first answer; for an unanswered chat, request to its end."""
        s = self.session
        if self.origin == ORIGIN_OFFLINE:
            return None
        until = s.first_assigned_at if s.first_assigned_at is not None else s.ended_at
        return None if until is None else round(until - s.created_at, 3)

    @property
    def title(self) -> str:
        c = self.session.customer
        who = f"{c.name}, {c.account}" if c.account else c.name
        return f"{self.session.topic} ({who})"

    # ------------------------------------------------------------------ JSON

    def to_json(self) -> dict[str, Any]:
        s = self.session
        return {
            "version": TRANSCRIPT_VERSION,
            "kind": self.origin,
            "session": {
                "id": s.id,
                "state": s.state.value,
                "topic": s.topic,
                "severity": s.severity,
                "severity_label": severity_label(s.severity),
                "requested_at": iso(s.created_at),
                "assigned_at": iso(s.first_assigned_at),
                "ended_at": iso(s.ended_at),
                "wait_seconds": self.wait_seconds,
                "answered": self.answered,
                "ended_by": s.ended_by,
                "end_reason": s.end_reason.value if s.end_reason else None,
                "resolution": s.resolution,
            },
            "customer": s.customer.to_wire(),
            "engineers": [
                {
                    "id": a.engineer_id,
                    "name": a.name,
                    "since": iso(a.since),
                    "until": iso(a.until),
                    "via": a.via,
                    "left": a.left,
                }
                for a in self.assignments
            ],
            "messages": [m.to_wire() for m in self.messages],
            "escalations": [
                {"seq": e.seq, "ts": iso(e.ts), "kind": e.kind, "phone": e.phone, "note": e.note}
                for e in self.escalations
            ],
            "attachments": [
                {
                    "id": a.id,
                    "seq": a.seq,
                    "filename": a.filename,
                    "content_type": a.content_type,
                    "size": a.size,
                    "sha256": a.sha256,
                    "url": a.url,
                    "sender": a.sender,
                }
                for a in self.attachments
            ],
            "ticket": s.ticket,
        }

    def to_json_bytes(self) -> bytes:
        return json.dumps(self.to_json(), ensure_ascii=False, indent=2).encode("utf-8") + b"\n"

    # ------------------------------------------------------------------ plain text

    def to_text(self) -> str:
        s = self.session
        c = s.customer
        t = clean_text
        head = "Ticket left without a chat" if self.origin == ORIGIN_OFFLINE else "Chat transcript"
        lines = [f"{head}: {t(s.topic)}", ""]
        facts: list[tuple[str, str]] = [
            ("Session", s.id),
            ("Customer", f"{t(c.name)} <{t(c.email)}>"),
            ("Account", t(c.account) or "-"),
            ("Tier", c.tier.value),
            ("Severity", f"{s.severity} ({severity_label(s.severity)})"),
            ("Requested", _when(s.created_at)),
        ]
        if self.origin != ORIGIN_OFFLINE:
            if s.first_assigned_at is not None:
                facts.append(
                    ("Answered", f"{_when(s.first_assigned_at)} "
                                 f"(waited {_duration(self.wait_seconds or 0)})")
                )
            else:
                facts.append(("Answered", "never"))
            ended = _when(s.ended_at) if s.ended_at is not None else "not yet"
            how = s.end_reason.value.replace("_", " ") if s.end_reason else ""
            facts.append(("Ended", f"{ended}{f' ({how})' if how else ''}"))
            if self.assignments:
                names = ", ".join(_assignment_text(a) for a in self.assignments)
                facts.append(("Engineers", names))
        if s.resolution:
            facts.append(("Resolution", t(s.resolution)))
        if s.ticket:
            facts.append(("Ticket", _ticket_text(s.ticket)))
        width = max(len(k) for k, _ in facts) + 2
        lines += [f"{(k + ':').ljust(width)}{v}" for k, v in facts]
        if self.escalations:
            lines += ["", "Escalations:"]
            for e in self.escalations:
                what = "phone call" if e.kind == "phone" else e.kind.replace("_", " ")
                extra = f" at {t(e.phone)}" if e.phone else ""
                note = f": {t(e.note)}" if e.note else ""
                lines.append(f"- {_clock(e.ts)} {what}{extra}{note}")
        if self.attachments:
            lines += ["", "Attachments:"]
            for a in self.attachments:
                lines.append(
                    f"- {t(a.filename)} ({t(a.content_type)}, {_size(a.size)}, "
                    f"sha256 {t(a.sha256)})"
                )
                lines.append(f"  {t(a.url)}")
        lines += ["", "Messages:" if self.messages else "Messages: none"]
        for m in self.messages:
            lines.append(_message_text(m))
        return "\n".join(lines) + "\n"

    # ------------------------------------------------------------------ HTML

    def to_html(self) -> str:
        s = self.session
        c = s.customer
        e = _esc
        head = "Ticket left without a chat" if self.origin == ORIGIN_OFFLINE else "Chat transcript"
        rows: list[tuple[str, str]] = [
            ("Session", e(s.id)),
            ("Customer", f"{e(c.name)} &lt;{e(c.email)}&gt;"),
            ("Account", e(c.account) or "-"),
            ("Tier", e(c.tier.value)),
            ("Severity", f"{s.severity} ({e(severity_label(s.severity))})"),
            ("Requested", e(_when(s.created_at))),
        ]
        if self.origin != ORIGIN_OFFLINE:
            answered = (
                f"{e(_when(s.first_assigned_at))} (waited {e(_duration(self.wait_seconds or 0))})"
                if s.first_assigned_at is not None
                else "never"
            )
            rows.append(("Answered", answered))
            how = s.end_reason.value.replace("_", " ") if s.end_reason else ""
            ended = e(_when(s.ended_at)) if s.ended_at is not None else "not yet"
            rows.append(("Ended", f"{ended}{f' ({e(how)})' if how else ''}"))
            if self.assignments:
                rows.append(
                    ("Engineers", ", ".join(e(_assignment_text(a)) for a in self.assignments))
                )
        if s.resolution:
            rows.append(("Resolution", e(s.resolution)))
        if s.ticket:
            rows.append(("Ticket", _ticket_html(s.ticket)))
        out = [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{e(head)}: {e(s.topic)}</title>",
            "<style>body{font:14px/1.45 system-ui,sans-serif;margin:2em;max-width:60em}"
            "th{text-align:left;padding-right:1em;vertical-align:top}"
            ".msg{margin:.4em 0}.body{white-space:pre-wrap;margin:.1em 0 0 1em}"
            ".system{color:#555;font-style:italic}.meta{color:#777}</style>",
            "</head><body>",
            f"<h1>{e(head)}: {e(s.topic)}</h1>",
            "<table>",
            *[f"<tr><th>{k}</th><td>{v}</td></tr>" for k, v in rows],
            "</table>",
        ]
        if self.escalations:
            out.append("<h2>Escalations</h2><ul>")
            for esc in self.escalations:
                what = "phone call" if esc.kind == "phone" else esc.kind.replace("_", " ")
                extra = f" at {e(esc.phone)}" if esc.phone else ""
                note = f": {e(esc.note)}" if esc.note else ""
                out.append(f"<li>{e(_clock(esc.ts))} {e(what)}{extra}{note}</li>")
            out.append("</ul>")
        if self.attachments:
            out.append("<h2>Attachments</h2><ul>")
            for a in self.attachments:
                out.append(
                    f"<li>{_link(a.url, a.filename)} <span class=\"meta\">({e(a.content_type)}, "
                    f"{e(_size(a.size))}, sha256 {e(a.sha256)})</span></li>"
                )
            out.append("</ul>")
        out.append("<h2>Messages</h2>")
        for m in self.messages:
            who = f"{e(m.sender.name)} ({e(m.sender.role)})"
            when = e(_clock(m.ts))
            cls = "msg system" if m.kind is MessageKind.SYSTEM else "msg"
            body = e(m.body)
            if m.kind is MessageKind.ATTACHMENT and m.attachment:
                meta = m.attachment
                body = _link(_absolute(str(meta.get("url") or ""), self.base_url),
                             str(meta.get("filename") or "attachment"))
            out.append(
                f'<div class="{cls}"><span class="meta">#{m.seq} {when}</span> <b>{who}</b>'
                f'<div class="body">{body}</div></div>'
            )
        out.append("</body></html>")
        return "\n".join(out) + "\n"


# ---------------------------------------------------------------------- helpers


def _esc(value: str | None) -> str:
    return html.escape(clean_text(value or ""), quote=True)


def _absolute(url: str, base: str) -> str:
    if url.startswith("/") and not url.startswith("//") and base:
        return base + url
    return url


def _safe_href(url: str) -> str | None:
    """Only http(s) links and same-site paths become links; anything else (javascript:,
    data:) is shown as text."""
    if url.startswith("/") and not url.startswith("//"):
        return url
    scheme = urlsplit(url).scheme.lower()
    return url if scheme in ("http", "https") else None


def _link(url: str, label: str) -> str:
    href = _safe_href(url)
    if href is None:
        return _esc(label)
    return f'<a href="{_esc(href)}" rel="noopener noreferrer">{_esc(label)}</a>'


def _when(ts: float | None) -> str:
    text = iso(ts)
    return text.replace("T", " ").replace("Z", " UTC") if text else "-"


def _clock(ts: float) -> str:
    return _when(ts)


def _duration(seconds: float) -> str:
    total = int(round(seconds))
    h, rest = divmod(total, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h} h {m} min"
    if m:
        return f"{m} min {s} s"
    return f"{s} s"


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1024 * 1024:
        return f"{n / 1024:.1f} KiB"
    return f"{n / (1024 * 1024):.1f} MiB"


def _ticket_text(ticket: dict[str, Any]) -> str:
    ref = clean_text(str(ticket.get("id", "")))
    url = clean_text(str(ticket.get("url") or ""))
    return f"{ref} {url}".strip()


def _ticket_html(ticket: dict[str, Any]) -> str:
    ref = str(ticket.get("id", ""))
    url = str(ticket.get("url") or "")
    return _link(url, ref) if url else _esc(ref)


def _assignment_text(a: Assignment) -> str:
    via = " (transfer)" if a.via == "transfer" else ""
    return f"{clean_text(a.name)}{via} from {_clock(a.since)}"


def _message_text(m: Message) -> str:
    who = f"{clean_text(m.sender.name)} ({m.sender.role})"
    prefix = f"[{_clock(m.ts)}] #{m.seq} "
    if m.kind is MessageKind.SYSTEM:
        first, *rest = clean_text(m.body).split("\n")
        text = f"{prefix}* {first}"
    elif m.kind is MessageKind.ATTACHMENT and m.attachment:
        a = m.attachment
        name = clean_text(str(a.get("filename") or "attachment"))
        return f"{prefix}{who} sent {name} ({_size(int(a.get('size') or 0))})"
    else:
        first, *rest = clean_text(m.body).split("\n")
        text = f"{prefix}{who}: {first}"
    # Continuation lines are indented so a reader (or a mail client) never mistakes a line
    # of a message for a new speaker.
    return "\n".join([text, *("    " + line for line in rest)])


def _assignments(session: Session, messages: Sequence[Message]) -> list[Assignment]:
    out: list[Assignment] = []

    def close(ts: float, left: str) -> None:
        if out and out[-1].until is None:
            last = out[-1]
            out[-1] = Assignment(last.engineer_id, last.name, last.since, ts, last.via, left)

    for m in messages:
        event = m.event or {}
        kind = event.get("type")
        if kind == "assigned":
            eng = event.get("engineer") or {}
            close(m.ts, "disconnected")
            out.append(Assignment(eng.get("id"), str(eng.get("name", "")), m.ts, None,
                                  "offer", None))
        elif kind == "transferred":
            to = event.get("to") or {}
            close(m.ts, "transferred")
            out.append(Assignment(to.get("id"), str(to.get("name", "")), m.ts, None,
                                  "transfer", None))
        elif kind == "requeued":
            close(m.ts, "disconnected")
        elif kind == "ended":
            close(m.ts, "ended")
    if out and out[-1].until is None and session.ended_at is not None:
        close(session.ended_at, "ended")
    return out


def _escalations(messages: Sequence[Message]) -> list[Escalation]:
    out = []
    for m in messages:
        event = m.event or {}
        if event.get("type") == "escalation":
            phone = event.get("phone")
            note = event.get("note")
            out.append(
                Escalation(
                    seq=m.seq,
                    ts=m.ts,
                    kind=str(event.get("kind", "")),
                    phone=str(phone) if phone else None,
                    note=str(note) if note else None,
                )
            )
    return out


def _attachments(messages: Sequence[Message], base: str) -> list[TranscriptAttachment]:
    out = []
    for m in messages:
        a = m.attachment
        if m.kind is not MessageKind.ATTACHMENT or not a or not a.get("id"):
            continue
        att_id = str(a["id"])
        url = str(a.get("url") or f"/api/attachments/{att_id}")
        out.append(
            TranscriptAttachment(
                id=att_id,
                seq=m.seq,
                filename=str(a.get("filename") or "attachment"),
                content_type=str(a.get("content_type") or "application/octet-stream"),
                size=int(a.get("size") or 0),
                sha256=str(a.get("sha256") or ""),
                url=_absolute(url, base),
                sender=m.sender.name,
            )
        )
    return out
