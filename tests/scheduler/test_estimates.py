"""Moving averages, the start-delay model and retry hints."""

from __future__ import annotations

import pytest

from service.scheduler.admission import WaitingCaps, retry_hint
from service.scheduler.estimates import MovingAverage, start_delay


def test_moving_average_reports_its_seed_until_measured_then_follows_samples() -> None:
    avg = MovingAverage(seed=10.0, weight=0.5)
    assert avg.value == 10.0
    avg.add(2.0)
    assert avg.value == 2.0
    avg.add(4.0)
    assert avg.value == pytest.approx(3.0)
    avg.add(-1.0)  # a clock hiccup never makes durations negative
    assert avg.value == pytest.approx(1.5)
    assert avg.samples == 3


@pytest.mark.parametrize(
    ("position", "slots", "elapsed", "expected"),
    [
        (0, 1, [], 0.0),  # idle slot
        (0, 1, [3.0], 7.0),  # the rest of the running request
        (1, 1, [3.0], 17.0),
        (0, 2, [3.0], 0.0),  # the second slot is idle
        (1, 2, [3.0], 7.0),
        (2, 2, [3.0], 10.0),  # idle slot frees again after one service
        (3, 2, [3.0, 8.0], 17.0),
        (0, 1, [25.0], 0.0),  # overrunning: could end any moment
    ],
)
def test_start_delay(position: int, slots: int, elapsed: list[float], expected: float) -> None:
    assert start_delay(position, slots, elapsed, 10.0) == pytest.approx(expected)


def test_retry_hint_is_at_least_one_second() -> None:
    assert retry_hint(0.0) == 1.0
    assert retry_hint(0.4) == 1.0
    assert retry_hint(12.345) == 12.3


def test_caps_count_per_user_and_in_total() -> None:
    caps = WaitingCaps(max_pending=3, max_pending_per_user=2)
    caps.enter("a")
    caps.enter("a")
    caps.enter("b")
    assert (caps.total, caps.of_user("a"), caps.of_user("b")) == (3, 2, 1)
    caps.leave("a")
    caps.leave("b")
    assert (caps.total, caps.of_user("a"), caps.of_user("b")) == (1, 1, 0)
    caps.check("c", user_turnover_s=lambda: 0.0, any_turnover_s=lambda: 0.0)


def test_start_delay_of_a_lane_with_practically_unlimited_slots_is_immediate() -> None:
    # The command lane has 2**30 slots: the model must not build a list per slot.
    assert start_delay(3, 1 << 30, [1.0, 2.0], 10.0) == 0.0
    assert start_delay((1 << 30) - 1, 1 << 30, [4.0], 10.0) == 6.0
