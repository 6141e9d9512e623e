"""The wait predictor (docs/waits.md): what it says for the situations customers meet."""

from __future__ import annotations

import math
import random

import pytest

from chatd.core.waits import (
    LogNormal,
    Observations,
    Slots,
    Wait,
    Waiting,
    WaitSettings,
    news,
    position_group,
    predict,
)

SETTINGS = WaitSettings(default_handle_seconds=600)


def seasoned(handle_mean: float = 600, sigma: float = 0.6, n: int = 200,
             patience: float | None = None, seed: int = 7) -> Observations:
    """A desk that has seen ``n`` log-normal chats end, and offers accepted in ~8 s."""
    obs = Observations(SETTINGS)
    rng = random.Random(seed)
    model = LogNormal.from_mean(handle_mean, sigma)
    for i in range(n):
        obs.started(f"s{i}", 0.0)
        obs.ended(f"s{i}", model.quantile(rng.random()))
        obs.accepted(rng.uniform(4, 12))
        if patience is not None:
            waited = rng.expovariate(1 / 300)
            obs.left_queue(waited, rng.random() < 1 - math.exp(-waited / patience))
    return obs


def table_for(obs: Observations, engineers: list[Slots], waiting: int) -> list[Wait]:
    table = predict(engineers, [Waiting(None)] * waiting, obs, SETTINGS, now=0.0)
    assert table is not None
    return [table.at(p) for p in range(1, waiting + 1)]


def test_no_available_engineer_no_estimate() -> None:
    obs = seasoned()
    assert predict([], [Waiting(None)], obs, SETTINGS, now=0.0) is None
    assert predict([Slots(3, (), (), away_for=10.0)], [Waiting(None)], obs, SETTINGS,
                   now=0.0) is None


def test_a_free_slot_means_waiting_only_for_the_engineer_to_accept() -> None:
    [w] = table_for(seasoned(), [Slots(3, (100.0,), ())], 1)
    assert w.seconds <= 12  # the accepts seen took 4-12 s
    assert w.low <= w.seconds <= w.high <= 12


def test_the_queue_length_predictor_on_a_full_desk() -> None:
    # 10 slots busy with chats begun at staggered times, as on a desk in full swing: the
    # n-th in line waits about n/(sμ), the queue-length predictor (and seconds to accept).
    obs = seasoned()
    mean = obs.refit(0.0)[0].mean
    waits = table_for(obs, [Slots(1, (i * mean / 10,), ()) for i in range(10)], 25)
    for n in (10, 15, 20, 25):
        ql = n / (10 / mean)
        assert 0.8 * ql < waits[n - 1].seconds < 1.25 * ql
    assert [w.seconds for w in waits] == sorted(w.seconds for w in waits)


def test_chats_that_have_run_long_free_their_slot_sooner() -> None:
    obs = seasoned()
    fresh = table_for(obs, [Slots(1, (0.0,), ()) for _ in range(4)], 1)[0]
    old = table_for(obs, [Slots(1, (900.0,), ()) for _ in range(4)], 1)[0]
    assert old.seconds < 0.6 * fresh.seconds


def test_customers_ahead_who_give_up_shorten_the_wait() -> None:
    full = [Slots(1, (0.0,), ()) for _ in range(5)]
    patient = table_for(seasoned(), full, 30)
    leaving = table_for(seasoned(patience=400), full, 30)
    assert leaving[-1].seconds < 0.9 * patient[-1].seconds
    assert leaving[0].seconds == pytest.approx(patient[0].seconds, rel=0.1)


def test_an_engineer_on_a_break_counts_once_breaks_are_known() -> None:
    obs = seasoned()
    desk = [Slots(1, (0.0,), ()), Slots(1, (), (), away_for=60.0)]
    unknown = table_for(obs, desk, 3)
    for _ in range(30):
        obs.came_back(300.0)  # breaks of five minutes
    known = table_for(obs, desk, 3)
    assert known[-1].seconds < 0.8 * unknown[-1].seconds
    # Away longer than any break seen: not counted on.
    late = table_for(obs, [desk[0], Slots(1, (), (), away_for=400.0)], 3)
    assert late[-1].seconds == pytest.approx(unknown[-1].seconds, rel=0.05)


def test_deep_positions_extend_the_sampled_ones_smoothly() -> None:
    obs = seasoned()
    table = predict([Slots(3, (10.0, 20.0, 30.0), ())], [Waiting(None)] * 500, obs,
                    SETTINGS, now=0.0)
    assert table is not None and len(table) == SETTINGS.depth
    waits = [table.at(p) for p in range(1, 501)]
    assert [w.seconds for w in waits] == sorted(w.seconds for w in waits)
    step = waits[-1].seconds - waits[-2].seconds
    assert step == pytest.approx(obs.mean_handle() / 3, rel=0.1)
    # A sum of many steps is relatively narrower than the first few.
    first, last = waits[SETTINGS.depth - 1], waits[-1]
    assert (last.high - last.low) / last.seconds < (first.high - first.low) / first.seconds


def test_the_same_desk_gets_the_same_answer() -> None:
    desk = [Slots(2, (30.0, 300.0), (5.0,))]
    a = table_for(seasoned(), desk, 10)
    b = table_for(seasoned(), desk, 10)
    assert a == b


def test_handle_times_count_chats_still_running() -> None:
    # Early in a day the chats that ended are the short ones; the long ones are still
    # running. Counting those as lasting at least as long as they have keeps the mean
    # handle time from looking shorter than it is.
    obs = Observations(SETTINGS)
    for i in range(12):
        obs.started(f"short{i}", 0.0)
        obs.ended(f"short{i}", 200.0 + 10 * i)
    for i in range(12):
        obs.started(f"long{i}", 0.0)
    ended_only = LogNormal.fit(obs.handle).mean
    assert obs.refit(now=900.0)[0].mean > 1.5 * ended_only


def test_before_any_chat_ended_the_default_handle_time_is_used() -> None:
    obs = Observations(SETTINGS)
    assert obs.refit(0.0)[0].mean == pytest.approx(600)
    obs.started("a", 0.0)
    obs.ended("a", 60.0)
    # One short chat moves the mean a tenth of the way (ten chats of warm-up).
    assert obs.refit(60.0)[0].mean == pytest.approx((60 + 9 * 600) / 10)


def test_ranges_widen_until_they_hold_what_customers_really_waited() -> None:
    obs = seasoned()
    desk = [Slots(1, (0.0,), ()) for _ in range(4)]
    before = table_for(obs, desk, 6)[5]
    table = predict(desk, [Waiting(None)] * 6, obs, SETTINGS, now=0.0)
    assert table is not None
    model = table.model(6)
    # Customers at position 6 kept waiting twice what the model's range said at most.
    for _ in range(40):
        obs.waited(6, model, 2 * model[2])
    after = table_for(obs, desk, 6)[5]
    assert after.high >= 1.9 * before.high
    assert after.seconds == before.seconds  # the estimate itself is the model's
    # Other groups of positions keep their own calibration.
    assert table_for(obs, desk, 1)[0] == table_for(seasoned(), desk, 1)[0]
    assert position_group(6) != position_group(1)


def test_a_customer_is_told_again_only_when_the_wait_moved() -> None:
    told = Wait(300, 200, 450)
    assert not news(told, told)
    assert not news(told, Wait(310, 190, 470))
    assert news(told, Wait(340, 200, 450))
    assert news(told, Wait(300, 200, 500))
    assert news(told, None) and news(None, told) and not news(None, None)
    assert news(Wait(3, 1, 6), Wait(1, 0, 3))
    assert not news(Wait(3, 1, 6), Wait(2, 1, 6), least=5)
