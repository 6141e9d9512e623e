"""The transcript model and its renderings: complete, and safe with hostile content."""

from __future__ import annotations

import json
from html.parser import HTMLParser
from typing import Any

from chatd.core.models import (
    SYSTEM_SENDER,
    Customer,
    EndReason,
    Engineer,
    Message,
    MessageKind,
    Role,
    Sender,
    Session,
    SessionState,
    Tier,
)
from chatd.core.transcript import ORIGIN_OFFLINE, Transcript

T0 = 1_800_000_000.0
ALEX = Engineer("e-alex", "alex@example.com", "Alex", Role.ENGINEER)
BEA = Engineer("e-bea", "bea@example.com", "Bea", Role.ENGINEER)
CAROL = Customer("cust-1", "Carol & Co", "carol@client.example", "Client Corp", Tier.PREMIER)
CAROL_SENDER = Sender("customer", CAROL.id, CAROL.name)


def session(**kw: Any) -> Session:
    values: dict[str, Any] = {
        "id": "0b7c4c02-1c55-4a55-9d29-1f0e1f7d6a10",
        "state": SessionState.ENDED,
        "topic": "Cannot log in",
        "severity": 2,
        "customer": CAROL,
        "created_at": T0,
        "arrival_seq": 1,
        "engineer": BEA,
        "assigned_at": T0 + 200,
        "first_assigned_at": T0 + 75,
        "ended_at": T0 + 600,
        "ended_by": "engineer",
        "end_reason": EndReason.ENGINEER_ENDED,
        "resolution": "reset the password",
    }
    values.update(kw)
    return Session(**values)


def msg(seq: int, body: str, *, sender: Sender = CAROL_SENDER, kind: MessageKind = MessageKind.TEXT,
        ts: float | None = None, attachment: dict[str, Any] | None = None,
        event: dict[str, Any] | None = None) -> Message:
    return Message(
        id=f"m{seq}", session_id="s", seq=seq, ts=T0 + seq * 10 if ts is None else ts,
        sender=sender, kind=kind, body=body, attachment=attachment, event=event,
    )


def full_chat() -> list[Message]:
    eng = Sender("engineer", ALEX.id, ALEX.name)
    return [
        msg(1, "Help, I cannot log in"),
        msg(2, "Alex joined the chat", sender=SYSTEM_SENDER, kind=MessageKind.SYSTEM,
            ts=T0 + 75, event={"type": "assigned", "engineer": ALEX.ref()}),
        msg(3, "Hi, Alex here", sender=eng),
        msg(4, "screen.png", kind=MessageKind.ATTACHMENT, attachment={
            "id": "att-1", "filename": "screen.png", "content_type": "image/png",
            "size": 2048, "sha256": "ab" * 32, "url": "/api/attachments/att-1"}),
        msg(5, "Carol asked for a phone call at +1 555 0100: after 3pm", sender=CAROL_SENDER,
            kind=MessageKind.SYSTEM, event={"type": "escalation", "kind": "phone",
                                             "phone": "+1 555 0100", "note": "after 3pm"}),
        msg(6, "The chat was transferred from Alex to Bea", sender=SYSTEM_SENDER,
            kind=MessageKind.SYSTEM, ts=T0 + 200,
            event={"type": "transferred", "from": ALEX.ref(), "to": BEA.ref()}),
        msg(7, "Bea ended the chat", sender=SYSTEM_SENDER, kind=MessageKind.SYSTEM,
            ts=T0 + 600, event={"type": "ended", "reason": "engineer_ended", "by": "engineer"}),
    ]


def test_json_transcript_has_people_times_history_escalations_and_attachments() -> None:
    t = Transcript.build(session(), list(reversed(full_chat())),
                         base_url="https://chat.example.com/")
    doc = t.to_json()
    json.dumps(doc)  # serialisable as it is
    assert doc["kind"] == "chat"
    assert doc["customer"] == CAROL.to_wire()
    s = doc["session"]
    assert (s["topic"], s["severity"], s["severity_label"]) == ("Cannot log in", 2, "high")
    assert s["requested_at"] == "2027-01-15T08:00:00.000Z"
    assert s["wait_seconds"] == 75 and s["answered"] is True
    assert (s["ended_by"], s["end_reason"], s["resolution"]) == (
        "engineer", "engineer_ended", "reset the password")
    assert [m["seq"] for m in doc["messages"]] == [1, 2, 3, 4, 5, 6, 7]
    assert [(e["name"], e["via"], e["left"]) for e in doc["engineers"]] == [
        ("Alex", "offer", "transferred"), ("Bea", "transfer", "ended")]
    assert doc["escalations"] == [{"seq": 5, "ts": "2027-01-15T08:00:50.000Z",
                                   "kind": "phone", "phone": "+1 555 0100",
                                   "note": "after 3pm"}]
    assert doc["attachments"] == [{
        "id": "att-1", "seq": 4, "filename": "screen.png", "content_type": "image/png",
        "size": 2048, "sha256": "ab" * 32,
        "url": "https://chat.example.com/api/attachments/att-1", "sender": "Carol & Co"}]
    assert doc["ticket"] is None


def test_text_transcript_reads_like_a_ticket_body() -> None:
    text = Transcript.build(session(ticket={"backend": "rt", "id": "42", "url": "http://rt/42"}),
                            full_chat()).to_text()
    assert text.startswith("Chat transcript: Cannot log in\n")
    assert "Customer:   Carol & Co <carol@client.example>" in text
    assert "Severity:   2 (high)" in text
    assert "(waited 1 min 15 s)" in text
    assert "Engineers:  Alex from" in text and "Bea (transfer) from" in text
    assert "Ticket:     42 http://rt/42" in text
    assert "- 2027-01-15 08:00:50.000 UTC phone call at +1 555 0100: after 3pm" in text
    assert "#3 Alex (engineer): Hi, Alex here" in text
    assert "Carol & Co (customer) sent screen.png (2.0 KiB)" in text


def test_text_strips_terminal_escapes_and_indents_continuation_lines() -> None:
    body = "first line\x1b[2J\x1b[31m\nsecond line\r\n[2027-01-01] #9 Alex (engineer): fake"
    text = Transcript.build(session(), [msg(1, body)]).to_text()
    assert "\x1b" not in text and "\r" not in text
    assert "#1 Carol & Co (customer): first line[2J[31m\n    second line\n    [2027-01-01]" in text


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[str] = []
        self.attrs: list[tuple[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.attrs.extend(attrs)


def test_html_escapes_every_customer_string() -> None:
    evil_name = 'Mallory"><img src=x onerror=alert(1)>'
    customer = Customer("cust-2", evil_name, "m@x.example", "<b>Acme</b>", Tier.STANDARD)
    s = session(customer=customer, topic="<script>alert('topic')</script>",
                resolution="</td><script>alert(2)</script>")
    sender = Sender("customer", customer.id, evil_name)
    messages = [
        msg(1, "<script>alert(document.cookie)</script>", sender=sender),
        msg(2, 'log "final".txt', kind=MessageKind.ATTACHMENT, sender=sender, attachment={
            "id": "att-2", "filename": 'report" onmouseover="alert(1).log',
            "content_type": "text/plain", "size": 10, "sha256": "cd" * 32,
            "url": "/api/attachments/att-2"}),
        msg(3, "x", kind=MessageKind.ATTACHMENT, sender=sender, attachment={
            "id": "att-3", "filename": "click.png", "content_type": "image/png", "size": 1,
            "sha256": "ef" * 32, "url": "javascript:alert(1)"}),
    ]
    page = Transcript.build(s, messages).to_html()
    parser = _Collect()
    parser.feed(page)
    assert "script" not in parser.tags and "img" not in parser.tags
    assert set(parser.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2",
                                "table", "tr", "th", "td", "ul", "li", "span", "a", "div", "b"}
    names = {name for name, _ in parser.attrs}
    assert not any(n.startswith("on") for n in names), names
    hrefs = [v for n, v in parser.attrs if n == "href"]
    assert hrefs == ["/api/attachments/att-2", "/api/attachments/att-2"]
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in page
    assert "report&quot; onmouseover=&quot;alert(1).log" in page


def test_offline_ticket_has_no_chat_facts() -> None:
    s = session(engineer=None, assigned_at=None, first_assigned_at=None, end_reason=None,
                resolution=None, ended_by="customer", ended_at=T0)
    t = Transcript.build(s, [msg(1, "The export crashes", ts=T0)], origin=ORIGIN_OFFLINE)
    doc = t.to_json()
    assert doc["kind"] == "offline" and doc["session"]["wait_seconds"] is None
    assert doc["engineers"] == []
    text = t.to_text()
    assert text.startswith("Ticket left without a chat: Cannot log in")
    assert "Answered" not in text and "The export crashes" in text
