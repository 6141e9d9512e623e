"""Rate and connection limits that hold across every chatd process sharing one Redis.

Two operations cover the per-client limits of docs/security.md that should not be
multiplied by the number of processes: a token bucket (``take(key, cost)``, and
``retry_after`` for a ``Retry-After``), and counted slots ("at most N open at once":
``acquire(key, cap)`` / ``release(key)``); the logins' per-account back-off is a third.
:class:`LocalLimits` keeps them in this process, exactly as the in-process limiters of
chatd.core.ratelimit do (no Redis, no task switch);
:class:`RedisLimits` keeps them in Redis, chosen by ``CHATD_REDIS_URL``
(:func:`limits_from_settings`; the driver is imported only then).

In Redis (docs/security.md#several-processes):

- a bucket is one hash updated by a Lua script (run by EVALSHA) on Redis's own clock, so
  every process draws from the same bucket whatever its own clock says; it expires once it
  would have refilled, so idle keys vanish;
- a slot count is one hash per key, a field per process holding that process's count.
  Each process keeps a heartbeat key alive; a field whose process's heartbeat has expired
  (the process died, even by ``kill -9``) is left out of the count and deleted by the next
  acquire, so a dead process's slots come free within ``lease_seconds``;
- an account's back-off is one hash (failures, end of the back-off), updated by a Lua
  script on Redis's clock and forgotten twice the longest back-off after the last failure;
- when Redis cannot be reached, each limit falls back to this process's own (the same
  numbers, counted here only), says so once in the log, and tries Redis again a second
  later: a Redis outage loosens the limits to what they are per process, it never refuses
  every client. Slot counts taken or given back meanwhile are written back to Redis by the
  next heartbeat.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, Protocol

from .core.clock import Clock
from .core.ratelimit import AccountBackoff, KeyedLimiter
from .store import desk_key

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.commands.core import AsyncScript

    from .config import Settings

log = logging.getLogger(__name__)


class RateLimit(Protocol):
    """A token bucket per key (``rate`` a second, bursts of ``burst``), shared by every
    process that uses the same limits."""

    async def take(self, key: str, cost: float = 1.0) -> bool:
        """Take ``cost`` from ``key``'s bucket if it holds that much; whether it did."""
        ...

    async def retry_after(self, key: str, cost: float = 1.0) -> float:
        """Seconds until ``key`` could take ``cost``; 0 if it could now."""
        ...


class SlotLimit(Protocol):
    """Counted slots per key: at most ``cap`` held at once, by all processes together."""

    async def acquire(self, key: str, cap: int) -> bool:
        """Hold one more slot of ``key`` if fewer than ``cap`` are held; whether it did."""
        ...

    def release(self, key: str) -> None:
        """Give back one slot of ``key`` that this process holds. Never waits."""
        ...


class Backoff(Protocol):
    """Consecutive failures per key, and the back-off they start: chatd.core.ratelimit's
    :class:`AccountBackoff`, shared by every process."""

    async def wait(self, key: str) -> float:
        """Seconds ``key`` must still wait; 0 if none."""
        ...

    async def failed(self, key: str) -> float:
        """Count a failure; the back-off it starts (0 below the threshold)."""
        ...

    async def succeeded(self, key: str) -> None:
        """Forget ``key``'s failures."""
        ...


class SharedLimits(Protocol):
    """Where the limits live. ``name`` keeps one limit's keys apart from another's."""

    def rate(self, name: str, rate: float, burst: float, *, max_keys: int = 100_000) -> RateLimit:
        ...

    def slots(self, name: str) -> SlotLimit:
        ...

    def backoff(self, name: str, after: int, max_seconds: float, *,
                max_keys: int = 100_000) -> Backoff:
        ...

    async def start(self) -> None:
        ...

    async def close(self) -> None:
        ...


# -- one process


class LocalRate:
    """A :class:`RateLimit` in this process: chatd.core.ratelimit's KeyedLimiter."""

    __slots__ = ("limiter",)

    def __init__(self, limiter: KeyedLimiter) -> None:
        self.limiter = limiter

    async def take(self, key: str, cost: float = 1.0) -> bool:
        return self.limiter.take(key, cost)

    async def retry_after(self, key: str, cost: float = 1.0) -> float:
        return self.limiter.retry_after(key, cost)


class LocalSlots:
    """A :class:`SlotLimit` in this process: a count per key that holds any."""

    __slots__ = ("held",)

    def __init__(self) -> None:
        self.held: dict[str, int] = {}

    def try_acquire(self, key: str, cap: int) -> bool:
        n = self.held.get(key, 0)
        if n >= cap:
            return False
        self.held[key] = n + 1
        return True

    async def acquire(self, key: str, cap: int) -> bool:
        return self.try_acquire(key, cap)

    def release(self, key: str) -> None:
        n = self.held.get(key, 0) - 1
        if n > 0:
            self.held[key] = n
        else:
            self.held.pop(key, None)  # keep only the keys that hold something


class LocalBackoff:
    """A :class:`Backoff` in this process: chatd.core.ratelimit's AccountBackoff."""

    __slots__ = ("backoff",)

    def __init__(self, backoff: AccountBackoff) -> None:
        self.backoff = backoff

    async def wait(self, key: str) -> float:
        return self.backoff.wait(key)

    async def failed(self, key: str) -> float:
        return self.backoff.failed(key)

    async def succeeded(self, key: str) -> None:
        self.backoff.succeeded(key)


class LocalLimits:
    """Every limit in this process: what one chatd process without Redis uses."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock

    def rate(self, name: str, rate: float, burst: float, *, max_keys: int = 100_000) -> LocalRate:
        return LocalRate(KeyedLimiter(self.clock, rate, burst, max_keys=max_keys))

    def slots(self, name: str) -> LocalSlots:
        return LocalSlots()

    def backoff(self, name: str, after: int, max_seconds: float, *,
                max_keys: int = 100_000) -> LocalBackoff:
        return LocalBackoff(AccountBackoff(self.clock, after, max_seconds, max_keys=max_keys))

    async def start(self) -> None:
        pass

    async def close(self) -> None:
        pass


# -- several processes

# KEYS[1] the bucket; ARGV rate, burst, cost, 1 to take (0 to ask only). Returns
# {taken (0/1), seconds to wait as a string} (a Lua number would be truncated to an integer).
BUCKET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, burst, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local v = redis.call('HMGET', KEYS[1], 't', 's')
local tokens, stamp = tonumber(v[1]), tonumber(v[2])
if tokens == nil or stamp == nil then
  tokens, stamp = burst, now
end
if now > stamp then
  tokens = math.min(burst, tokens + (now - stamp) * rate)
end
if tokens >= cost then
  if ARGV[4] == '1' then
    tokens = tokens - cost
    redis.call('HSET', KEYS[1], 't', tostring(tokens), 's', tostring(now))
    redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
  end
  return {1, '0'}
end
return {0, tostring((cost - tokens) / rate)}
"""

# KEYS[1] the key's hash (process -> count); ARGV this process, cap, the heartbeat keys'
# prefix, the hash's expiry (ms). Counts the live processes' fields, deleting the dead
# ones'; takes a slot for this process if the total is under the cap. Returns 1 or 0.
ACQUIRE_LUA = """
local me, cap, alive = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local fields = redis.call('HGETALL', KEYS[1])
local total = 0
for i = 1, #fields, 2 do
  local who = fields[i]
  if who == me or redis.call('EXISTS', alive .. who) == 1 then
    total = total + tonumber(fields[i + 1])
  else
    redis.call('HDEL', KEYS[1], who)
  end
end
if total >= cap then
  return 0
end
redis.call('HINCRBY', KEYS[1], me, 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"""

# KEYS[1] the key's hash; ARGV this process. Gives one of its slots back.
RELEASE_LUA = """
local n = redis.call('HINCRBY', KEYS[1], ARGV[1], -1)
if n <= 0 then
  redis.call('HDEL', KEYS[1], ARGV[1])
end
return n
"""


# KEYS[1] the key's failures; ARGV 'wait' or 'forget' (then nothing else), or 'fail',
# after, max_seconds, base. As AccountBackoff: a back-off of base * 2^(failures - after), at most
# max_seconds, from the after-th failure on; forgotten (expired) 2 * max_seconds after the
# last failure, which is after every back-off it started has ended. Returns the seconds to
# wait ('wait') or the back-off started ('fail'), as a string.
BACKOFF_LUA = """
if ARGV[1] == 'forget' then
  return tostring(redis.call('DEL', KEYS[1]))
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local v = redis.call('HMGET', KEYS[1], 'n', 'u')
local n, u = tonumber(v[1]) or 0, tonumber(v[2]) or 0
if ARGV[1] == 'wait' then
  return tostring(math.max(0, u - now))
end
local after, max, base = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
n = n + 1
local delay = 0
local over = n - after
if over >= 0 then
  if over >= 64 then delay = max else delay = math.min(max, base * 2 ^ over) end
  u = now + delay
end
redis.call('HSET', KEYS[1], 'n', tostring(n), 'u', tostring(u))
redis.call('PEXPIRE', KEYS[1], math.ceil(2 * max * 1000))
return tostring(delay)
"""


class RedisRate:
    """A :class:`RateLimit` in Redis, with this process's own bucket as the fallback."""

    def __init__(self, limits: RedisLimits, name: str, rate: float, burst: float,
                 max_keys: int) -> None:
        self._limits = limits
        self._prefix = f"{limits.prefix}rate:{name}:"
        self._args = (repr(float(rate)), repr(float(burst)))
        self.local = KeyedLimiter(limits.clock, rate, burst, max_keys=max_keys)

    async def take(self, key: str, cost: float = 1.0) -> bool:
        reply = await self._limits.run(
            self._limits.bucket_script, [self._prefix + key], [*self._args, repr(cost), "1"]
        )
        if reply is None:
            return self.local.take(key, cost)
        return int(reply[0]) == 1

    async def retry_after(self, key: str, cost: float = 1.0) -> float:
        reply = await self._limits.run(
            self._limits.bucket_script, [self._prefix + key], [*self._args, repr(cost), "0"]
        )
        if reply is None:
            return self.local.retry_after(key, cost)
        return max(0.0, float(reply[1]))


class RedisBackoff:
    """A :class:`Backoff` in Redis, with this process's own as the fallback."""

    def __init__(self, limits: RedisLimits, name: str, after: int, max_seconds: float,
                 max_keys: int) -> None:
        self._limits = limits
        self._prefix = f"{limits.prefix}backoff:{name}:"
        self._args = (str(after), repr(float(max_seconds)), "1.0")
        self.local = AccountBackoff(limits.clock, after, max_seconds, max_keys=max_keys)

    async def wait(self, key: str) -> float:
        reply = await self._limits.run(self._limits.backoff_script, [self._prefix + key],
                                       ["wait"])
        return self.local.wait(key) if reply is None else max(0.0, float(reply))

    async def failed(self, key: str) -> float:
        reply = await self._limits.run(self._limits.backoff_script, [self._prefix + key],
                                       ["fail", *self._args])
        return self.local.failed(key) if reply is None else float(reply)

    async def succeeded(self, key: str) -> None:
        self.local.succeeded(key)
        await self._limits.run(self._limits.backoff_script, [self._prefix + key], ["forget"])


class RedisSlots:
    """A :class:`SlotLimit` in Redis: this process's count is its field in the key's hash.

    ``held`` is this process's own count per key, kept whatever Redis does: it is the
    fallback limit while Redis is away, and what the heartbeat writes back for the keys in
    ``dirty`` (changed while Redis was away, or while the process's heartbeat had lapsed).
    ``dirty`` maps a key to a generation bumped by every change, so that a write-back that
    overlapped a change is done again at the next heartbeat.
    """

    def __init__(self, limits: RedisLimits, name: str) -> None:
        self._limits = limits
        self._prefix = f"{limits.prefix}slots:{name}:"
        self.held: dict[str, int] = {}
        self.dirty: dict[str, int] = {}

    def _touch(self, key: str) -> None:
        if key in self.dirty:
            self.dirty[key] += 1

    async def acquire(self, key: str, cap: int) -> bool:
        limits = self._limits
        self._touch(key)
        reply = await limits.run(
            limits.acquire_script, [self._prefix + key],
            [limits.process, str(cap), limits.alive_prefix, str(limits.slot_expiry_ms)],
        )
        self._touch(key)  # and after: a write-back that overlapped this is done again
        n = self.held.get(key, 0)
        if reply is None:
            if n >= cap:
                return False
            self.dirty[key] = self.dirty.get(key, 0) + 1  # Redis has not counted it
        elif int(reply) != 1:
            return False
        self.held[key] = n + 1
        return True

    def release(self, key: str) -> None:
        n = self.held.get(key, 0) - 1
        if n < 0:
            return  # not held here: nothing to give back
        if n > 0:
            self.held[key] = n
        else:
            del self.held[key]
        if key in self.dirty or self._limits.down:
            # Redis's count for this key is out of date anyway: the heartbeat rewrites it.
            self.dirty[key] = self.dirty.get(key, 0) + 1
            return
        self._limits.spawn(self._release(key))

    async def _release(self, key: str) -> None:
        limits = self._limits
        reply = await limits.run(limits.release_script, [self._prefix + key], [limits.process])
        if reply is None:
            self.dirty[key] = self.dirty.get(key, 0) + 1

    def hash_key(self, key: str) -> str:
        return self._prefix + key


class RedisLimits:
    """Every limit in one Redis, shared by the processes that use the same ``prefix``.

    ``lease_seconds`` is how long a process's slots outlive its last heartbeat (one every
    ``heartbeat_seconds``); ``retry_seconds`` how long limits stay local after Redis failed
    to answer before it is tried again. ``fallbacks`` counts the decisions taken locally
    because Redis was away, ``outages`` the times it went away.
    """

    def __init__(
        self,
        url: str,
        clock: Clock,
        *,
        prefix: str = "chatd:limits:",
        heartbeat_seconds: float = 2.0,
        lease_seconds: float = 10.0,
        retry_seconds: float = 1.0,
        timeout_seconds: float = 0.5,
        slot_idle_seconds: float = 3600.0,
    ) -> None:
        # The optional extra `cluster`: imported only when a Redis URL is configured.
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff
        from redis.exceptions import RedisError

        if not 0 < heartbeat_seconds < lease_seconds:
            raise ValueError("the heartbeat must come more often than the lease runs out")
        self.clock = clock
        self.prefix = prefix
        self.process = secrets.token_hex(8)
        self.alive_prefix = f"{prefix}alive:"
        self.heartbeat_seconds = heartbeat_seconds
        self.lease_ms = int(lease_seconds * 1000)
        self.retry_seconds = retry_seconds
        self.slot_expiry_ms = int(slot_idle_seconds * 1000)
        # One quick try again (a pooled connection Redis has since closed), no more: a limit
        # that cannot be asked at once is decided here instead.
        self.redis: Redis = Redis.from_url(
            url, socket_timeout=timeout_seconds, socket_connect_timeout=timeout_seconds,
            retry=Retry(NoBackoff(), 1),
        )
        self.bucket_script: AsyncScript = self.redis.register_script(BUCKET_LUA)
        self.acquire_script: AsyncScript = self.redis.register_script(ACQUIRE_LUA)
        self.release_script: AsyncScript = self.redis.register_script(RELEASE_LUA)
        self.backoff_script: AsyncScript = self.redis.register_script(BACKOFF_LUA)
        # What a Redis that is away raises (a refused or timed-out connection, a reply
        # that never came): each means "decide locally this time".
        self.errors: tuple[type[BaseException], ...] = (OSError, TimeoutError, RedisError)
        self.down = False
        self.fallbacks = 0
        self.outages = 0
        self._retry_at = 0.0
        self._slots: list[RedisSlots] = []
        self._tasks: set[asyncio.Future[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._refreshed = 0.0
        self._alive_lost = True  # no heartbeat written yet

    def rate(self, name: str, rate: float, burst: float, *, max_keys: int = 100_000) -> RedisRate:
        return RedisRate(self, name, rate, burst, max_keys)

    def slots(self, name: str) -> RedisSlots:
        slots = RedisSlots(self, name)
        self._slots.append(slots)
        return slots

    def backoff(self, name: str, after: int, max_seconds: float, *,
                max_keys: int = 100_000) -> RedisBackoff:
        return RedisBackoff(self, name, after, max_seconds, max_keys)

    # -- talking to Redis

    def unreachable(self, exc: BaseException) -> None:
        self._retry_at = time.monotonic() + self.retry_seconds
        if not self.down:
            self.down = True
            self.outages += 1
            log.warning("Redis is unreachable: limits are this process's own until it is "
                        "back (%s)", exc or type(exc).__name__)

    def _answered(self) -> None:
        if self.down:
            self.down = False
            log.warning("Redis answers again: limits are shared by every process again")
            self.spawn(self.beat())  # write back what was counted here meanwhile, now

    async def run(self, script: AsyncScript, keys: list[str], args: list[str]) -> Any:
        """The script's reply, or None when Redis is away (then the caller decides alone)."""
        if self.down:
            now = time.monotonic()
            if now < self._retry_at:
                self.fallbacks += 1
                return None
            self._retry_at = now + self.retry_seconds  # one call tries; the rest go on here
        try:
            reply = await script(keys=keys, args=args)
        except self.errors as exc:
            self.unreachable(exc)
            self.fallbacks += 1
            return None
        self._answered()
        return reply

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- the heartbeat

    async def start(self) -> None:
        await self.beat()  # a failure here is logged; the loop goes on trying
        self._heartbeat = asyncio.create_task(self._beat_forever())

    async def _beat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_seconds)
            await self.beat()

    async def beat(self) -> None:
        """Keep this process's slots alive, and write back the counts Redis missed."""
        try:
            await self._beat()
        except self.errors as exc:
            self.unreachable(exc)
            self._alive_lost = True  # Redis may have lost it too: rewrite everything
        else:
            self._answered()

    async def _beat(self) -> None:
        alive = self.alive_prefix + self.process
        renewed = await self.redis.set(alive, "1", px=self.lease_ms, xx=True)
        if not renewed:
            # The first beat, or the lease ran out (a long pause, Redis restarted or was
            # away): other processes may have deleted this process's counts.
            await self.redis.set(alive, "1", px=self.lease_ms)
            self._alive_lost = True
        if self._alive_lost:
            self._alive_lost = False
            for slots in self._slots:
                for key in slots.held:
                    slots.dirty[key] = slots.dirty.get(key, 0) + 1
        for slots in self._slots:
            if slots.dirty:
                await self._write_back(slots)
        now = time.monotonic()
        if now - self._refreshed > self.slot_expiry_ms / 4000:
            self._refreshed = now
            await self._refresh_expiry()

    async def _write_back(self, slots: RedisSlots) -> None:
        todo = list(slots.dirty.items())
        for start in range(0, len(todo), 500):
            chunk = todo[start:start + 500]
            pipe = self.redis.pipeline(transaction=False)
            for key, _ in chunk:
                n = slots.held.get(key, 0)
                if n > 0:
                    pipe.hset(slots.hash_key(key), self.process, n)
                    pipe.pexpire(slots.hash_key(key), self.slot_expiry_ms)
                else:
                    pipe.hdel(slots.hash_key(key), self.process)
            await pipe.execute()
            for key, generation in chunk:
                if slots.dirty.get(key) == generation:  # nothing changed it meanwhile
                    del slots.dirty[key]

    async def _refresh_expiry(self) -> None:
        """Keep the hashes of the keys this process holds from expiring while it holds
        them (a connection may stay open for days); an idle key's hash expires."""
        for slots in self._slots:
            keys = list(slots.held)
            for start in range(0, len(keys), 500):
                pipe = self.redis.pipeline(transaction=False)
                for key in keys[start:start + 500]:
                    pipe.pexpire(slots.hash_key(key), self.slot_expiry_ms)
                await pipe.execute()

    async def close(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        try:
            # Gone for good: the other processes stop counting this one's slots at once,
            # and its fields go too (best effort: expired leases are pruned anyway).
            await self.redis.delete(self.alive_prefix + self.process)
            for slots in self._slots:
                keys = [*slots.held, *slots.dirty]
                for start in range(0, len(keys), 500):
                    pipe = self.redis.pipeline(transaction=False)
                    for key in keys[start:start + 500]:
                        pipe.hdel(slots.hash_key(key), self.process)
                    await pipe.execute()
        except self.errors:
            pass
        await self.redis.aclose()


def desk_prefix(database_url: str) -> str:
    """The Redis keys of one desk's limits: the processes of a desk (one database) share
    them; two desks on one Redis do not."""
    return desk_key(database_url) + ":limits:"


def limits_from_settings(settings: Settings, clock: Clock) -> SharedLimits:
    """In Redis when ``CHATD_REDIS_URL`` is set (keys under :func:`desk_prefix`), else in
    this process."""
    if settings.redis_url:
        return RedisLimits(settings.redis_url, clock, prefix=desk_prefix(settings.database_url))
    return LocalLimits(clock)

