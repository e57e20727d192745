"""The subscription API's abuse guards as pure parts: rate limits per key, refusal tally."""

from __future__ import annotations

import time

from sinks.subscription_api import RateLimits, Refusal, RefusalTally


def test_a_key_over_its_limit_waits_and_other_keys_do_not() -> None:
    limits = RateLimits(3, window_s=30)
    assert [limits.retry_after("a") for _ in range(3)] == [None, None, None]
    wait = limits.retry_after("a")
    assert wait is not None and 1 <= wait <= 30
    assert limits.retry_after("b") is None


def test_a_key_is_admitted_again_once_the_window_moved_on() -> None:
    limits = RateLimits(2, window_s=0.2)
    assert limits.retry_after("a") is None and limits.retry_after("a") is None
    assert limits.retry_after("a") == 1  # Retry-After rounds up to whole seconds
    deadline = time.monotonic() + 5
    while limits.retry_after("a") is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_keys_are_bounded_least_recently_seen_dropped() -> None:
    def address(i: int) -> str:
        return f"10.0.{i // 256}.{i % 256}"

    limits = RateLimits(1, window_s=60, max_keys=100)
    for i in range(1000):
        assert limits.retry_after(address(i)) is None
    assert limits.retry_after(address(999)) is not None  # among the last 100: still limited
    assert limits.retry_after(address(900)) is not None  # the 100th most recent: kept
    assert limits.retry_after(address(899)) is None  # the 101st: dropped, admitted afresh


def _refusal(address: str, reason: str = "no token") -> Refusal:
    return Refusal("anonymous", "api.authenticate", "/datasets", reason, 401, address)


def test_the_first_refusal_of_a_key_is_audited_the_rest_counted_per_interval() -> None:
    tally = RefusalTally(interval_s=60)
    assert tally.note(_refusal("1.1.1.1"))
    assert not any(tally.note(_refusal("1.1.1.1")) for _ in range(999))
    assert tally.note(_refusal("1.1.1.1", "unknown token"))
    assert tally.note(_refusal("2.2.2.2"))
    now = time.monotonic()
    assert tally.due(now) == []  # the interval is not over
    assert tally.due(now + 61) == [(_refusal("1.1.1.1"), 999)]
    assert tally.note(_refusal("1.1.1.1"))  # a new interval: audited again at once
    assert tally.due(now, force=True) == []  # nothing repeated in it


def test_past_its_key_cap_a_tally_counts_new_addresses_together() -> None:
    tally = RefusalTally(interval_s=60, max_keys=10)
    firsts = sum(tally.note(_refusal(f"10.0.0.{i}")) for i in range(250))
    assert firsts == 11  # ten addresses, then one line for all the others
    due = dict(tally.due(0, force=True))
    assert due == {_refusal("*"): 239}
