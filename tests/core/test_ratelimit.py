"""The limiters' tables stay bounded without forgetting who is being held back, a
connection's bucket counts the events it refused in a row, barred addresses stay barred
for their time and no longer, and an account's failed logins back it off, doubling up to
a maximum."""

from __future__ import annotations

from chatd.core.clock import FakeClock
from chatd.core.ratelimit import (
    AccountBackoff,
    EventBucket,
    KeyedLimiter,
    Penalties,
    TokenBucket,
    retry_after_seconds,
)


class SteppedClock:
    """Wall time that an operator (or NTP) can step back."""

    def __init__(self) -> None:
        self.t = 1_000_000.0

    def now(self) -> float:
        return self.t


def test_a_wall_clock_stepped_back_does_not_stall_a_bucket() -> None:
    clock = SteppedClock()
    bucket = TokenBucket(clock, rate=10, burst=1)
    assert bucket.take() and not bucket.take()
    clock.t -= 3600  # an hour back
    assert not bucket.take()  # nothing refilled by the step
    clock.t += 0.15  # a token's time later (0.1 s), not an hour
    assert bucket.take()


def test_a_flood_of_new_keys_does_not_free_a_limited_key() -> None:
    clock = FakeClock()
    limiter = KeyedLimiter(clock, rate=0.01, burst=2, max_keys=100)
    assert limiter.take("attacker") and limiter.take("attacker")
    assert not limiter.take("attacker")
    for i in range(10_000):  # a hundred times the table, from fresh addresses
        limiter.take(f"fresh-{i}")
        if i % 50 == 0:
            assert not limiter.take("attacker"), f"forgotten after {i} new keys"
    assert len(limiter) == 100


def test_the_least_recently_used_key_is_the_one_forgotten() -> None:
    clock = FakeClock()
    limiter = KeyedLimiter(clock, rate=0.01, burst=1, max_keys=3)
    for key in ("a", "b", "c"):
        assert limiter.take(key)
    assert not limiter.take("a")  # a is now the most recently used
    assert limiter.take("d")  # b goes
    assert not limiter.take("a") and not limiter.take("c")
    assert limiter.take("b")  # a fresh bucket
    assert len(limiter) == 3


def test_retry_after_says_when_the_next_token_comes() -> None:
    clock = FakeClock()
    limiter = KeyedLimiter(clock, rate=0.5, burst=1)
    assert limiter.retry_after("x") == 0
    assert limiter.take("x") and not limiter.take("x")
    assert limiter.retry_after("x") == 2.0
    clock.advance(1.5)
    assert limiter.retry_after("x") == 0.5
    assert retry_after_seconds(0.5) == 1 and retry_after_seconds(2.0) == 2
    assert retry_after_seconds(0) == 1


def test_an_account_backs_off_after_repeated_failures_doubling_to_the_maximum() -> None:
    clock = FakeClock()
    backoff = AccountBackoff(clock, after=3, max_seconds=10)
    assert [backoff.failed("alex") for _ in range(2)] == [0, 0]
    assert backoff.wait("alex") == 0
    delays = []
    for _ in range(6):
        delays.append(backoff.failed("alex"))
        assert backoff.wait("alex") == delays[-1]
        clock.advance(delays[-1])
        assert backoff.wait("alex") == 0
    assert delays == [1, 2, 4, 8, 10, 10]
    assert backoff.wait("someone else") == 0


def test_a_success_forgets_the_failures() -> None:
    clock = FakeClock()
    backoff = AccountBackoff(clock, after=2, max_seconds=60)
    backoff.failed("alex")
    backoff.succeeded("alex")
    assert backoff.failed("alex") == 0  # one failure again, not two


def test_failures_are_forgotten_only_after_a_quiet_spell_longer_than_the_maximum() -> None:
    clock = FakeClock()
    backoff = AccountBackoff(clock, after=2, max_seconds=60)
    for _ in range(7):
        backoff.failed("alex")
        clock.advance(backoff.wait("alex"))
    # Waiting out the longest back-off does not reset the count: the next failure backs
    # off for the maximum again, not for one second.
    clock.advance(60)
    assert backoff.failed("alex") == 60
    clock.advance(60 + 120 + 1)
    assert backoff.failed("alex") == 0


def test_the_account_table_is_bounded() -> None:
    clock = FakeClock()
    backoff = AccountBackoff(clock, after=1, max_seconds=60, max_keys=10)
    for i in range(1000):
        backoff.failed(f"user{i}@example.com")
    assert len(backoff) == 10
    assert backoff.wait("user999@example.com") > 0


def test_an_event_bucket_counts_refusals_in_a_row_and_an_accepted_event_resets_them() -> None:
    clock = FakeClock()
    bucket = EventBucket(clock, rate=1.0, burst=2)
    assert bucket.take() and bucket.take()
    assert not bucket.take() and not bucket.take(5)
    assert bucket.refused == 2
    clock.advance(1.0)
    assert bucket.take()
    assert bucket.refused == 0
    assert not bucket.take()
    assert bucket.refused == 1


def test_a_barred_address_is_barred_for_its_time_and_then_free() -> None:
    clock = FakeClock()
    penalties = Penalties(clock, seconds=10.0, max_keys=100)
    assert penalties.remaining("203.0.113.5") == 0.0
    penalties.bar("203.0.113.5")
    clock.advance(4.0)
    assert penalties.remaining("203.0.113.5") == 6.0
    assert penalties.remaining("203.0.113.6") == 0.0
    penalties.bar("203.0.113.5")  # again: from now
    clock.advance(9.0)
    assert penalties.remaining("203.0.113.5") == 1.0
    clock.advance(1.0)
    assert penalties.remaining("203.0.113.5") == 0.0
    assert len(penalties) == 0  # an expired bar is dropped when seen


def test_the_barred_table_is_bounded_and_forgets_the_oldest_bar() -> None:
    clock = FakeClock()
    penalties = Penalties(clock, seconds=60.0, max_keys=100)
    for i in range(1000):
        penalties.bar(f"198.51.100.{i}")
    assert len(penalties) == 100
    assert penalties.remaining("198.51.100.0") == 0.0
    assert penalties.remaining("198.51.100.999") == 60.0


def test_no_penalty_bars_nothing() -> None:
    penalties = Penalties(FakeClock(), seconds=0.0)
    penalties.bar("203.0.113.5")
    assert penalties.remaining("203.0.113.5") == 0.0 and len(penalties) == 0
