"""Who is calling: customers by widget JWT or as guests, engineers by API token or cookie."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from http.cookies import CookieError, SimpleCookie
from typing import Any

import jwt

from ..core.errors import Unauthorized
from ..core.models import Customer, Tier

COOKIE_NAME = "chatd_token"
_MAX = {"sub": 200, "name": 100, "email": 254, "account": 200}


def customer_from_jwt(token: str, secret: str) -> Customer:
    """Verify a widget JWT (HS256, signed by the vendor's product) and read the customer."""
    if not secret:
        raise Unauthorized("signed customer tokens are not configured on this server")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            secret,
            algorithms=["HS256"],
            options={"require": ["exp", "sub"]},
            leeway=30,
        )
    except jwt.ExpiredSignatureError:
        raise Unauthorized("the customer token has expired") from None
    except jwt.PyJWTError:
        raise Unauthorized("the customer token is invalid") from None
    for claim, limit in _MAX.items():
        value = claims.get(claim, "" if claim == "account" else None)
        if (
            not isinstance(value, str) or len(value) > limit
            or (claim != "account" and not value) or "\x00" in value
        ):
            raise Unauthorized(f"the customer token lacks a valid {claim!r} claim")
    tier = claims.get("tier")
    if tier not in {t.value for t in Tier}:
        raise Unauthorized("the customer token lacks a valid 'tier' claim")
    sub = claims["sub"]
    if sub.startswith("guest:"):
        raise Unauthorized("the customer token has a reserved 'sub'")
    return Customer(
        id=sub,
        name=claims["name"],
        email=claims["email"],
        account=claims.get("account", ""),
        tier=Tier(tier),
    )


def guest_customer(name: str, email: str) -> Customer:
    return Customer(
        id=f"guest:{uuid.uuid4()}",
        name=name.strip(),
        email=email.strip(),
        account="",
        tier=Tier.STANDARD,
    )


def cookie_token(cookie_header: str | None) -> str | None:
    if not cookie_header:
        return None
    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(cookie_header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE_NAME)
    return morsel.value if morsel else None


def bearer(header: str | None) -> str | None:
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def own_origin(public_url: str, host: str | None, forwarded_proto: str | None,
               scheme: str = "http") -> str | None:
    """chatd's own origin (where the console and monitor pages are served from): the
    origin of ``public_url`` when set, else the request's ``Host`` with its scheme (the
    first ``X-Forwarded-Proto`` value, else the connection's)."""
    if public_url:
        proto, _, rest = public_url.partition("://")
        return _normal_origin(f"{proto}://{rest.split('/', 1)[0]}")
    if not host:
        return None
    proto = (forwarded_proto or scheme).split(",")[0].strip().lower() or scheme
    return _normal_origin(f"{proto}://{host.strip()}")


_DEFAULT_PORTS = {"http": ":80", "https": ":443"}


def _normal_origin(origin: str) -> str:
    """An origin as browsers send it: lower case, no trailing slash, no default port."""
    origin = origin.strip().rstrip("/").lower()
    proto = origin.partition("://")[0]
    port = _DEFAULT_PORTS.get(proto)
    if port and origin.endswith(port):
        origin = origin[: -len(port)]
    return origin


def is_same_origin(headers: Mapping[str, str], public_url: str, scheme: str = "http") -> bool:
    """Whether a browser request comes from chatd's own pages: its ``Origin`` is chatd's own
    origin, or, without ``Origin``, ``Sec-Fetch-Site`` says ``same-origin``. A request with
    neither is not known to be same-origin."""
    origin = headers.get("Origin")
    if origin is not None:
        own = own_origin(public_url, headers.get("Host"), headers.get("X-Forwarded-Proto"),
                         scheme)
        return own is not None and _normal_origin(origin) == own
    return headers.get("Sec-Fetch-Site", "").strip().lower() == "same-origin"
