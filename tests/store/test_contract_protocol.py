"""Store contract: every backend offers the whole protocol, with the same signatures."""

from __future__ import annotations

import inspect

from chatd.core.ports import Store
from tests.store.conftest import Backend

PROTOCOL_METHODS = sorted(
    name for name, value in vars(Store).items()
    if not name.startswith("_") and inspect.iscoroutinefunction(value)
)


def test_protocol_lists_the_operations_the_desk_uses() -> None:
    # Guards the check below against silently comparing nothing.
    assert {"append_message", "assign_session", "end_session", "live_tokens"} <= set(
        PROTOCOL_METHODS
    )


async def test_backend_implements_every_protocol_method(backend: Backend) -> None:
    impl = type(backend.store)
    for name in PROTOCOL_METHODS:
        method = getattr(impl, name, None)
        assert method is not None, f"{backend.name} store lacks {name}"
        assert inspect.iscoroutinefunction(method), f"{backend.name}: {name} is not async"
        want = list(inspect.signature(getattr(Store, name)).parameters)
        got = list(inspect.signature(method).parameters)
        assert got == want, f"{backend.name}: {name}{tuple(got)} differs from {tuple(want)}"
