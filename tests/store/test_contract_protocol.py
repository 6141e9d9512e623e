"""Store contract: every backend offers the whole protocol, with the same signatures."""

from __future__ import annotations

import inspect

from chatd.core.ports import Store
from tests.store.conftest import Backend

# Store is made of narrow ports (chatd/core/ports.py): its operations are theirs.
PROTOCOL_METHODS = sorted({
    name
    for port in Store.__mro__
    for name, value in vars(port).items()
    if not name.startswith("_") and inspect.iscoroutinefunction(value)
})


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


# Each port of chatd/core/ports.py and the files of this suite that hold its contract.
CONTRACT = {
    "Lifecycle": ("conftest.py", "test_contract_durability.py", "test_contract_writes.py"),
    "LeaseStore": ("test_contract_lease.py",),
    "AccountStore": ("test_contract_engineers.py",),
    "EngineerStatusStore": ("test_contract_engineers.py",),
    "SessionStore": ("test_contract_sessions.py",),
    "MessageStore": ("test_contract_messages.py", "test_contract_writes.py"),
    "ReadMarkStore": ("test_contract_receipts.py",),
    "AttachmentStore": ("test_contract_attachments.py",),
    "OutboxStore": ("test_contract_outbox.py",),
    "StatsStore": ("test_contract_stats.py",),
    "CustomerStore": ("test_contract_customers.py",),
    "UploadStore": ("test_contract_customers.py",),
    "RetentionStore": ("test_contract_retention.py",),
}


def port_methods(port: type) -> list[str]:
    return sorted(
        name for name, value in vars(port).items()
        if not name.startswith("_") and inspect.iscoroutinefunction(value)
    )


def test_the_ports_make_up_the_store_and_do_not_overlap() -> None:
    from chatd.core import ports

    seen: dict[str, str] = {}
    for name in CONTRACT:
        for method in port_methods(getattr(ports, name)):
            assert method not in seen, f"{method} is in {seen[method]} and {name}"
            seen[method] = name
    assert set(seen) == set(PROTOCOL_METHODS)


def test_every_operation_of_a_port_is_exercised_by_its_part_of_the_suite() -> None:
    from pathlib import Path

    from chatd.core import ports

    here = Path(__file__).parent
    for name, files in CONTRACT.items():
        text = "".join((here / f).read_text() for f in files)
        missing = [m for m in port_methods(getattr(ports, name)) if f".{m}(" not in text]
        assert not missing, f"{name}: {missing} not exercised in {', '.join(files)}"
