"""The optional alert webhook: queue alerts as Slack-compatible JSON, retried a few times."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestServer

from chatd.alert_webhook import AlertWebhook, alert_text
from chatd.core.clock import FakeClock
from tests.e2e.helpers import call, engineer, guest

ALERT = {
    "level": "warning", "oldest_wait_seconds": 245.0, "threshold_seconds": 240,
    "warning_seconds": 240, "target_seconds": 300, "queue_length": 3,
    "engineers_online": 2, "at": "2027-01-15T08:00:00.000Z",
}

ServerFactory = Callable[..., Awaitable[TestServer]]


class Receiver:
    """A chat tool's incoming webhook that answers from a script of statuses."""

    def __init__(self, statuses: list[int], retry_after: str | None = None) -> None:
        self.statuses = statuses
        self.retry_after = retry_after
        self.bodies: list[Any] = []
        self.app = web.Application()
        self.app.router.add_post("/hooks/T000/B000/secret", self.handle)

    async def handle(self, request: web.Request) -> web.Response:
        self.bodies.append(await request.json())
        status = self.statuses.pop(0) if self.statuses else 200
        headers = {"Retry-After": self.retry_after} if self.retry_after else {}
        return web.Response(status=status, text="ok" if status == 200 else "no",
                            headers=headers)

    async def start(self, aiohttp_server: ServerFactory) -> str:
        server = await aiohttp_server(self.app)
        return str(server.make_url("/hooks/T000/B000/secret"))


def hook(url: str, delays: list[float]) -> AlertWebhook:
    async def sleep(seconds: float) -> None:
        delays.append(seconds)

    return AlertWebhook(url, FakeClock(), sleep=sleep, rand=lambda: 1.0,
                        monitor_url="https://chat.example.com/monitor/")


async def test_an_alert_is_posted_as_slack_text_after_retries(
    aiohttp_server: ServerFactory,
) -> None:
    receiver = Receiver([503, 429], retry_after="7")
    delays: list[float] = []
    webhook = hook(await receiver.start(aiohttp_server), delays)
    try:
        assert await webhook.deliver(ALERT)
    finally:
        await webhook.stop()

    assert len(receiver.bodies) == 3
    assert all(b == receiver.bodies[0] for b in receiver.bodies)  # the same alert each time
    [text] = receiver.bodies[0].values()
    assert list(receiver.bodies[0]) == ["text"]
    assert "4m 05s" in text and "5m 00s" in text and "3 waiting" in text
    assert text.endswith("https://chat.example.com/monitor/")
    assert delays == [7.0, 7.0]  # backoff ceilings 2 s and 4 s, Retry-After 7 s wins


async def test_a_refusal_is_not_retried_and_failures_stop_after_a_few_attempts(
    aiohttp_server: ServerFactory,
) -> None:
    refused = Receiver([404])
    delays: list[float] = []
    webhook = hook(await refused.start(aiohttp_server), delays)
    try:
        assert not await webhook.deliver(ALERT)
    finally:
        await webhook.stop()
    assert len(refused.bodies) == 1 and delays == []

    down = Receiver([500] * 10)
    webhook = hook(await down.start(aiohttp_server), delays)
    try:
        assert not await webhook.deliver(ALERT)
    finally:
        await webhook.stop()
    assert len(down.bodies) == webhook.attempts == 5
    assert delays == [2.0, 4.0, 8.0, 16.0]


def test_texts_name_the_level() -> None:
    assert alert_text({**ALERT, "level": "breach", "oldest_wait_seconds": 301}).startswith(
        ":rotating_light: chatd: a customer has waited 5m 01s, past the 5m 00s target")
    assert alert_text({**ALERT, "level": "clear", "queue_length": 0}).startswith(
        ":white_check_mark: chatd: no customer has waited 4m 00s any more (0 waiting")


async def test_a_waiting_customer_past_the_threshold_alerts_consoles_and_the_webhook(
    chatd_factory: Any, aiohttp_server: ServerFactory,
) -> None:
    receiver = Receiver([])
    url = await receiver.start(aiohttp_server)
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock, alert_webhook_url=url)
    _, console = await engineer(chatd, "alex@example.com", available=False)
    cust, _ = await guest(chatd)
    await call(cust, "/customer", "chat:request", {"topic": "Waiting"})

    clock.advance(241)
    alert = await console.wait_for("queue:alert")
    assert alert["level"] == "warning" and alert["oldest_wait_seconds"] >= 240
    for _ in range(100):
        if receiver.bodies:
            break
        await asyncio.sleep(0.05)
    [body] = receiver.bodies
    assert body["text"].startswith(":warning: chatd: a customer has waited 4m 01s")
