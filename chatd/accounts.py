"""Engineer accounts: argon2 password hashes and revocable API tokens (stored hashed)."""

from __future__ import annotations

import asyncio
import re
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from .core.clock import Clock
from .core.desk import hash_token, new_token
from .core.errors import BadRequest, RateLimited, Unauthorized
from .core.models import Engineer, EngineerAccount, Role
from .core.ports import AccountStore

_hasher = PasswordHasher()
# A real hash to verify against when the email is unknown, so that timing does not tell
# which emails have accounts.
_DUMMY_HASH = _hasher.hash("not a password of anyone")
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")
MIN_PASSWORD = 8
T = TypeVar("T")


class PasswordHashing:
    """argon2 on threads of its own: ``workers`` of them, and at most ``queue`` hashes in
    flight or waiting.

    argon2 is slow on purpose, so a flood of logins on the shared default executor would
    also hold up everything else that runs there (upload writes, file checks). Here it can
    only hold up logins, and past ``queue`` a login is refused at once
    (``RateLimited``) instead of waiting behind hashes whose callers are long gone.
    """

    def __init__(self, workers: int, queue: int | None = None) -> None:
        self._executor = ThreadPoolExecutor(workers, thread_name_prefix="chatd-password")
        self.queue = queue if queue is not None else 4 * workers
        # A thread semaphore: a slot is given back when the hash is done, in its thread,
        # not when its caller stops waiting (a cancelled login must not free a slot while
        # its hash still runs).
        self._slots = threading.BoundedSemaphore(self.queue)

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        if not self._slots.acquire(blocking=False):
            raise RateLimited(
                "too many logins are being checked right now; try again in a moment",
                retry_after=1,
            )
        try:
            future: Future[T] = self._executor.submit(fn, *args)
        except RuntimeError:  # shut down: the app is stopping
            self._slots.release()
            raise
        future.add_done_callback(lambda _: self._slots.release())
        return await asyncio.wrap_future(future)

    async def hash(self, password: str) -> str:
        return await self._run(_hasher.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        return await self._run(_verify, password_hash, password)

    def close(self) -> None:
        """Stop the threads; hashes not yet started are dropped."""
        self._executor.shutdown(wait=False, cancel_futures=True)


def validate_new_engineer(email: str, name: str, password: str) -> None:
    if not EMAIL.match(email) or len(email) > 254:
        raise BadRequest(f"{email!r} is not an email address")
    if not name.strip() or len(name) > 100:
        raise BadRequest("name must be 1 to 100 characters")
    if len(password) < MIN_PASSWORD:
        raise BadRequest(f"password must be at least {MIN_PASSWORD} characters")


async def add_engineer(
    store: AccountStore, clock: Clock, email: str, name: str, password: str, role: Role,
    passwords: PasswordHashing | None = None,
) -> Engineer:
    """Without ``passwords`` (the command line, outside a server) the hash is made on the
    default executor."""
    email = email.strip().lower()
    validate_new_engineer(email, name, password)
    if passwords is not None:
        password_hash = await passwords.hash(password)
    else:
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


def account_key(email: str) -> str:
    """The form of an email that accounts are stored and throttled under."""
    return email.strip().lower()


async def login(
    store: AccountStore, clock: Clock, email: str, password: str, ttl: float,
    passwords: PasswordHashing,
) -> tuple[str, Engineer, float]:
    """A new API token for valid credentials of an enabled engineer, else Unauthorized
    (or RateLimited when ``passwords`` has no room for another check)."""
    account = await store.engineer_account(account_key(email))
    ok = await passwords.verify(account.password_hash if account else _DUMMY_HASH, password)
    if account is None or not ok or account.disabled:
        raise Unauthorized("wrong email or password, or the account is disabled")
    token = new_token()
    now = clock.now()
    await store.add_token(hash_token(token), account.engineer.id, now, now + ttl)
    return token, account.engineer, now + ttl


async def engineer_for_token(store: AccountStore, clock: Clock, token: str) -> Engineer | None:
    if not token or len(token) > 512:
        return None
    return await store.engineer_for_token(hash_token(token), clock.now())
