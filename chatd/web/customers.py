"""``POST /api/customers/erase``: a lead erases a customer (docs/operations.md#erasure-and-export).

With ``force``, the customer's open chat is first ended through the desk, as a lead ending
it from the console would: both sides are told it ended, and the desk lets it go. Then the
chats are erased (chatd.erasure). A chat this process's desk does not hold (another process
of a shared desk) cannot be ended here: the erasure is then refused like one without
``force``, and changes nothing.
"""

from __future__ import annotations

import logging
from typing import Annotated

import msgspec
from aiohttp import web

from ..core.erasure import MAX_CUSTOMER_ID, MAX_EMAIL, CustomerQuery
from ..core.errors import Forbidden, NotFound, SessionClosed
from ..core.models import SessionState
from ..erasure import erase_customer
from . import keys
from .http import current_engineer, json_body

log = logging.getLogger(__name__)

OPEN = (SessionState.WAITING, SessionState.OFFERED, SessionState.ACTIVE)


CustomerId = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_CUSTOMER_ID)]
Email = Annotated[str, msgspec.Meta(min_length=3, max_length=MAX_EMAIL)]


class EraseRequest(msgspec.Struct, forbid_unknown_fields=True):
    customer_id: CustomerId | None = None
    email: Email | None = None
    force: bool = False


def setup_customers(app: web.Application) -> None:
    app.router.add_post("/api/customers/erase", erase)


async def erase(request: web.Request) -> web.Response:
    lead, _ = await current_engineer(request)
    if not lead.is_lead:
        raise Forbidden("only a lead may erase a customer")
    body = await json_body(request, EraseRequest)
    query = CustomerQuery.of(body.customer_id, body.email)
    store = request.app[keys.STORE]
    if body.force:
        desk = request.app[keys.LINK]
        emitter = request.app[keys.SOCKETS].emitter
        for session in await store.customer_sessions(query):
            if session.state not in OPEN:
                continue
            try:
                _, fx = await desk.end(lead, session.id, "ended to erase the customer's data")
            except (SessionClosed, NotFound):
                continue  # ended meanwhile, or held by another process: the store decides
            await emitter.emit(fx)
    report = await erase_customer(
        store, request.app[keys.SETTINGS], request.app[keys.CLOCK], query,
        requested_by=lead.email, via="http",
    )
    log.info("customer erased", extra={"erasure_id": report.erased.erasure.id})
    return web.json_response({"ok": True, **report.to_wire()})
