"""Engineer accounts: argon2 password hashes and revocable API tokens (stored hashed)."""

from __future__ import annotations

import asyncio
import re
import uuid

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .core.clock import Clock
from .core.desk import hash_token, new_token
from .core.errors import BadRequest, Unauthorized
from .core.models import Engineer, EngineerAccount, Role
from .core.ports import Store

_hasher = PasswordHasher()
# A real hash to verify against when the email is unknown, so that timing does not tell
# which emails have accounts.
_DUMMY_HASH = _hasher.hash("not a password of anyone")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
MIN_PASSWORD = 8


def validate_new_engineer(email: str, name: str, password: str) -> None:
    if not EMAIL.match(email) or len(email) > 254:
        raise BadRequest(f"{email!r} is not an email address")
    if not name.strip() or len(name) > 100:
        raise BadRequest("name must be 1 to 100 characters")
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"password must be at least {MIN_PASSWORD} characters")


async def add_engineer(
    store: Store, clock: Clock, email: str, name: str, password: str, role: Role
) -> Engineer:
    email = email.strip().lower()
    validate_new_engineer(email, name, password)
    password_hash = await asyncio.to_thread(_hasher.hash, password)
    engineer = Engineer(id=str(uuid.uuid4()), email=email, name=name.strip(), role=role)
    await store.add_engineer(
        EngineerAccount(engineer, password_hash, disabled=False, created_at=clock.now())
    )
    return engineer


def _verify(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


async def login(
    store: Store, clock: Clock, email: str, password: str, ttl: float
) -> tuple[str, Engineer, float]:
    """A new API token for valid credentials of an enabled engineer, else Unauthorized."""
    account = await store.engineer_account(email.strip().lower())
    ok = await asyncio.to_thread(
        _verify, account.password_hash if account else _DUMMY_HASH, password
    )
    if account is None or not ok or account.disabled:
        raise Unauthorized("wrong email or password, or the account is disabled")
    token = new_token()
    now = clock.now()
    await store.add_token(hash_token(token), account.engineer.id, now, now + ttl)
    return token, account.engineer, now + ttl


async def engineer_for_token(store: Store, clock: Clock, token: str) -> Engineer | None:
    if not token or len(token) > 512:
        return None
    return await store.engineer_for_token(hash_token(token), clock.now())
