"""Behind trusted proxies, the client's address comes from X-Forwarded-For."""

from __future__ import annotations

from unittest import mock

import pytest
from aiohttp import web
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from chatd.web.http import client_address_middleware


async def remote_seen(peer: str, forwarded: str | None, trusted: tuple[str, ...]) -> str:
    middleware = client_address_middleware(trusted)

    async def handler(request: web.Request) -> web.StreamResponse:
        return web.Response(text=str(request.remote))

    transport = mock.Mock()
    transport.get_extra_info.return_value = (peer, 40000)
    headers = CIMultiDict({"X-Forwarded-For": forwarded} if forwarded is not None else {})
    request = make_mocked_request("GET", "/", headers=headers, transport=transport)
    response = await middleware(request, handler)
    assert isinstance(response, web.Response)
    return str(response.text)


PROXIES = ("10.0.0.0/8",)


@pytest.mark.parametrize(
    ("peer", "forwarded", "client"),
    [
        ("10.1.1.1", "203.0.113.9", "203.0.113.9"),
        ("10.1.1.1", "203.0.113.9:51234", "203.0.113.9"),  # a proxy that adds the port
        ("10.1.1.1", "[2001:db8::1]:443", "2001:db8::1"),
        ("10.1.1.1", "forged-by-client, 203.0.113.9", "203.0.113.9"),
        ("10.1.1.1", "198.51.100.1, 203.0.113.9, 10.2.2.2", "203.0.113.9"),  # two proxies
        ("10.1.1.1", "1.2.3.4, 10.2.2.2", "1.2.3.4"),
        ("10.1.1.1", "not-an-address", "10.1.1.1"),  # nothing usable: the proxy itself
        ("::ffff:10.1.1.1", "203.0.113.9", "203.0.113.9"),  # an IPv4-mapped peer
        ("10.1.1.1", None, "10.1.1.1"),
        ("192.0.2.50", "203.0.113.9", "192.0.2.50"),  # not a trusted peer: header ignored
    ],
)
async def test_client_address(peer: str, forwarded: str | None, client: str) -> None:
    assert await remote_seen(peer, forwarded, PROXIES) == client


async def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert await remote_seen("10.1.1.1", "203.0.113.9", ()) == "10.1.1.1"
