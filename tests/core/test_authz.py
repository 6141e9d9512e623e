"""A customer touches only their own session, an engineer only theirs (leads: all)
(docs/design.md#identity-and-authorisation)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from chatd.core.errors import Forbidden, NotFound
from chatd.core.models import Customer, Engineer, Role
from tests.core.helpers import Floor, customer, to_customer, to_engineer


class Scene:
    def __init__(self, floor: Floor) -> None:
        self.floor = floor

    async def build(self) -> None:
        f = self.floor
        self.ann, self.mallory = customer("ann"), customer("mallory")
        self.alex = await f.engineer("alex")
        self.bea = await f.engineer("bea", available=False)
        self.lee = await f.engineer("lee", role=Role.LEAD, available=False)
        self.active = await f.assigned(self.alex, self.ann)
        await f.desk.send_message(self.ann, self.active, "c1", "private details")
        [self.mallorys] = await f.queue(self.mallory)
        await f.away(self.alex)


@pytest.fixture
async def scene(floor: Floor) -> Scene:
    s = Scene(floor)
    await s.build()
    return s


async def _message_count(scene: Scene) -> int:
    return len(await scene.floor.store.messages_after(scene.active, 0, 100))


def _actions(
    scene: Scene, actor: Customer | Engineer
) -> list[tuple[str, Callable[[], Awaitable[Any]]]]:
    d, sid = scene.floor.desk, scene.active

    async def sync(fn: Callable[[], Any]) -> Any:
        return fn()

    actions: list[tuple[str, Callable[[], Awaitable[Any]]]] = [
        ("send", lambda: d.send_message(actor, sid, "x1", "hi")),
        ("history", lambda: d.history(actor, sid)),
        ("find", lambda: d.find_session(actor, sid)),
        ("typing", lambda: sync(lambda: d.typing(actor, sid, True))),
        ("read", lambda: d.mark_read(actor, sid, 1)),
        ("session_for", lambda: sync(lambda: d.session_for(actor, sid))),
        ("end", lambda: d.end(actor, sid)),
    ]
    if isinstance(actor, Customer):
        actions.append(("escalate", lambda: d.escalate(actor, sid, "screen_share", None, None)))
    else:
        actions.append(("transfer", lambda: d.transfer(actor, sid, scene.bea.id)))
    return actions


async def test_customer_touching_another_customers_session_gets_not_found(
    scene: Scene,
) -> None:
    before = await _message_count(scene)
    for name, action in _actions(scene, scene.mallory):
        with pytest.raises(NotFound):
            await action()
        assert await _message_count(scene) == before, name
    assert scene.active in scene.floor.desk.open_session_ids()


async def test_customer_cannot_tell_a_closed_session_of_someone_else_exists(
    scene: Scene,
) -> None:
    await scene.floor.desk.end(scene.alex, scene.active)
    with pytest.raises(NotFound):
        await scene.floor.desk.history(scene.mallory, scene.active)
    with pytest.raises(NotFound):
        await scene.floor.desk.send_message(scene.mallory, scene.active, "x", "hi")
    with pytest.raises(NotFound):
        await scene.floor.desk.history(scene.mallory, "no-such-session")


async def test_engineer_not_assigned_gets_forbidden(scene: Scene) -> None:
    await scene.floor.available(scene.bea)  # eligible for a transfer, but not assigned
    before = await _message_count(scene)
    for name, action in _actions(scene, scene.bea):
        with pytest.raises(Forbidden):
            await action()
        assert await _message_count(scene) == before, name
    # Holding the offer of a waiting session is not being assigned to it.
    assert [o["session_id"] for o in scene.floor.desk.snapshot(scene.bea)["offers"]] == [
        scene.mallorys
    ]
    with pytest.raises(Forbidden):
        await scene.floor.desk.history(scene.bea, scene.mallorys)


async def test_engineer_not_assigned_gets_forbidden_on_a_closed_session(scene: Scene) -> None:
    await scene.floor.desk.end(scene.alex, scene.active)
    with pytest.raises(Forbidden):
        await scene.floor.desk.history(scene.bea, scene.active)
    with pytest.raises(Forbidden):
        await scene.floor.desk.send_message(scene.bea, scene.active, "x", "hi")


async def test_lead_may_act_on_any_session(scene: Scene) -> None:
    d, lee, sid = scene.floor.desk, scene.lee, scene.active
    await scene.floor.available(scene.bea)

    _, messages, _ = await d.history(lee, sid)
    assert "private details" in [m.body for m in messages]
    assert (await d.find_session(lee, sid)).id == sid
    msg, created, fx = await d.send_message(lee, sid, "l1", "Lee from the lead desk here")
    assert created and msg.sender.role == "lead"
    assert to_customer(fx, sid, "message:new") and to_engineer(fx, scene.alex, "message:new")
    assert to_engineer(fx, lee, "message:new")
    assert to_customer(d.typing(lee, sid, True), sid, "typing")

    fx = await d.transfer(lee, sid, scene.bea.id)
    assert to_engineer(fx, scene.bea, "offer:new")
    await d.decline(scene.bea, sid)

    # A lead may also close a chat still waiting in the queue.
    wire, _ = await d.end(lee, scene.mallorys, "duplicate of another ticket")
    assert wire["state"] == "ended"
    wire, fx = await d.end(lee, sid, "resolved")
    assert wire["state"] == "ended"
    assert to_engineer(fx, scene.alex, "session:ended")


async def test_customer_and_assigned_engineer_may_act(scene: Scene) -> None:
    d, sid = scene.floor.desk, scene.active
    for actor in (scene.ann, scene.alex):
        wire, messages, _ = await d.history(actor, sid)
        assert wire["id"] == sid and messages
        assert d.typing(actor, sid, True)
