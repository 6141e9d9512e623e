"""The alert webhook's line for the early ``predicted`` alert, and for its clearing."""

from __future__ import annotations

import asyncio
from typing import Any

from chatd.alert_webhook import AlertWebhook, alert_text
from chatd.core.clock import FakeClock
from tests.e2e.helpers import call, engineer, guest, start_chat
from tests.monitoring.test_alert_webhook import Receiver, ServerFactory

PREDICTED = {
    "level": "predicted", "oldest_wait_seconds": 35.0, "threshold_seconds": 240.0,
    "warning_seconds": 240, "target_seconds": 300, "predicted_wait_seconds": 431,
    "queue_length": 3, "engineers_online": 1, "at": "2027-01-15T08:00:00.000Z",
}
CLEAR = {**PREDICTED, "level": "clear", "queue_length": 1, "predicted_wait_seconds": 120}


def test_predicted_names_the_target_and_the_predicted_wait() -> None:
    text = alert_text(PREDICTED, "https://chat.example.com/monitor/")
    assert text == (
        ":hourglass_flowing_sand: chatd: heads-up, waits are heading past the 5m 00s target: "
        "a customer is predicted to wait about 7m in all; the oldest has waited 35s so far "
        "(3 waiting, 1 engineer online). https://chat.example.com/monitor/"
    )
    # Not the all-clear it used to fall through to.
    assert "no customer has waited" not in text


def test_predicted_without_a_figure_says_nobody_is_there_to_answer() -> None:
    # No figure: customers wait and no engineer is available or expected back.
    text = alert_text({**PREDICTED, "predicted_wait_seconds": None, "engineers_online": 0})
    assert text.startswith(":hourglass_flowing_sand: chatd: heads-up, waits are heading past "
                           "the 5m 00s target: no engineer is available to answer; the oldest "
                           "has waited 35s so far (3 waiting, 0 engineers online).")


def test_a_clear_after_a_prediction_says_the_prediction_recovered() -> None:
    assert alert_text(CLEAR, previous="predicted").startswith(
        ":white_check_mark: chatd: the predicted waits are back within the 5m 00s target "
        "(1 waiting")
    assert alert_text(CLEAR, previous="warning").startswith(
        ":white_check_mark: chatd: no customer has waited 4m 00s any more")


async def test_the_webhook_posts_the_prediction_and_its_clearing_in_order(
    aiohttp_server: ServerFactory,
) -> None:
    receiver = Receiver([])
    webhook = AlertWebhook(await receiver.start(aiohttp_server), FakeClock())
    webhook.start()
    try:
        for alert in (PREDICTED, CLEAR, {**PREDICTED, "level": "warning"}, CLEAR):
            webhook.queue_alert(alert)
        for _ in range(200):
            if len(receiver.bodies) == 4:
                break
            await asyncio.sleep(0.05)
    finally:
        await webhook.stop()
    texts = [b["text"] for b in receiver.bodies]
    assert [t.split(":")[1] for t in texts] == [
        "hourglass_flowing_sand", "white_check_mark", "warning", "white_check_mark"]
    assert "predicted waits are back" in texts[1]
    assert "no customer has waited 4m 00s any more" in texts[3]


async def test_a_long_chat_on_the_only_slot_posts_a_predicted_alert(
    chatd_factory: Any, aiohttp_server: ServerFactory,
) -> None:
    receiver = Receiver([])
    clock = FakeClock()
    chatd = await chatd_factory(clock=clock, alert_webhook_url=await receiver.start(aiohttp_server),
                                default_handle_seconds=1200)
    alex, alex_in = await engineer(chatd, "alex@example.com")
    r = await call(alex, "/engineer", "engineer:status", {"status": "available", "capacity": 1})
    assert r["ok"], r
    busy, _ = await guest(chatd, "Priya")
    await start_chat(chatd, alex, alex_in, busy)
    waiting, _ = await guest(chatd, "Bob")
    await call(waiting, "/customer", "chat:request", {"topic": "Waiting"})

    # Nobody has waited at all on this clock, yet the next slot is about 20 minutes away.
    alert = await alex_in.wait_for("queue:alert", timeout=10)
    assert alert["level"] == "predicted" and alert["oldest_wait_seconds"] == 0, alert
    assert alert["predicted_wait_seconds"] >= 240, alert
    for _ in range(100):
        if receiver.bodies:
            break
        await asyncio.sleep(0.05)
    [body] = receiver.bodies
    assert body["text"].startswith(
        ":hourglass_flowing_sand: chatd: heads-up, waits are heading past the 5m 00s target")
