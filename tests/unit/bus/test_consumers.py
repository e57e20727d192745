"""What every batched consumer shares: the offsets to commit, and the lag it reports."""

from __future__ import annotations

from bus.consumers import next_offsets, partition_lag


def test_next_offsets_is_one_past_the_last_record_of_each_partition() -> None:
    seen = [("t", 0, 5), ("t", 1, 2), ("t", 0, 7), ("t", 0, 6), ("u", 0, 0)]
    assert next_offsets(seen) == {("t", 0): 8, ("t", 1): 3, ("u", 0): 1}
    assert next_offsets([]) == {}


def test_lag_counts_from_the_next_offset_to_commit() -> None:
    assert partition_lag(0, 100, 40) == 60
    assert partition_lag(0, 100, 100) == 0


def test_lag_without_a_commit_counts_from_the_low_watermark() -> None:
    assert partition_lag(10, 100, -1001) == 90
    assert partition_lag(-1001, 100, -1001) == 100


def test_lag_is_unknown_before_a_watermark_and_never_negative() -> None:
    assert partition_lag(-1001, -1001, 5) is None
    # Tansu reports the base offset of the last batch + 1: it can trail what we read.
    assert partition_lag(0, 3, 9) == 0
