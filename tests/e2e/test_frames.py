"""Frames of every length form reach a client whole: the server writes each packet's
WebSocket frame itself (chatd.web.engine.ws_frame), with the 7-bit, 16-bit and 64-bit
length forms of RFC 6455."""

from __future__ import annotations

from typing import Any

from chatd.web.engine import ws_frame
from tests.e2e.helpers import call, engineer, guest, start_chat


class _Packet:
    def __init__(self, data: str) -> None:
        self.data = data

    def encode(self) -> str:
        return self.data


def test_the_three_length_forms() -> None:
    assert ws_frame(_Packet("4x")) == b"\x81\x024x"
    medium = ws_frame(_Packet("é" * 100))  # 200 bytes of UTF-8
    assert medium[:4] == b"\x81\x7e\x00\xc8" and len(medium) == 204
    big = ws_frame(_Packet("a" * 70_000))
    assert big[:10] == b"\x81\x7f" + (70_000).to_bytes(8, "big") and len(big) == 70_010


async def test_answers_small_medium_and_large_arrive_whole(chatd_factory: Any) -> None:
    chatd = await chatd_factory()
    eng, eng_in = await engineer(chatd, "alex@example.com")
    cust, _ = await guest(chatd)
    sid, resume = await start_chat(chatd, eng, eng_in, cust)
    body = "ü" + "x" * 3_900
    for i in range(20):  # about 80 KB of history: the resume's answer needs 64-bit lengths
        r = await call(cust, "/customer", "message:send",
                       {"session_id": sid, "client_msg_id": f"c{i}", "body": body})
        assert r["ok"], r
    history = await call(eng, "/engineer", "session:resume", {"session_id": sid, "after_seq": 0})
    texts = [m["body"] for m in history["messages"] if m["kind"] == "text"]
    assert texts == [body] * 20
    small = await call(cust, "/customer", "typing", {"session_id": sid, "typing": True})
    assert small["ok"], small
