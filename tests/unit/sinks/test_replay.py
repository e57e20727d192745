"""The rewind plan: where a destination lacks what the group committed, and why."""

from __future__ import annotations

from sinks.base import Applied
from sinks.replay import FROM_START, rewind_plan

A, B = ("t.std.v1", 0), ("t.std.v1", 1)


def test_a_store_that_holds_everything_needs_no_rewind() -> None:
    assert rewind_plan(Applied("s1", {A: 10, B: 4}), {A: 10, B: 4}) is None
    # ahead of the commit (written, commit lost): the replay from the commit is enough
    assert rewind_plan(Applied("s1", {A: 12}), {A: 10}) is None


def test_nothing_consumed_yet_needs_no_rewind() -> None:
    assert rewind_plan(Applied(None, {}), {A: -1001, B: 0}) is None


def test_an_empty_store_replays_every_consumed_partition_from_its_start() -> None:
    plan = rewind_plan(Applied(None, {}), {A: 10, B: 0})
    assert plan is not None
    assert plan.reason == "store_empty"
    assert plan.seek == {A: FROM_START}


def test_a_store_behind_replays_from_what_it_holds() -> None:
    plan = rewind_plan(Applied("s1", {A: 7, B: 4}), {A: 10, B: 4}, known_store="s1")
    assert plan is not None
    assert (plan.reason, dict(plan.seek), plan.records) == ("store_behind", {A: 7}, 3)


def test_a_partition_the_store_never_saw_replays_from_its_start() -> None:
    plan = rewind_plan(Applied("s1", {A: 10}), {A: 10, B: 5})
    assert plan is not None
    assert (plan.reason, dict(plan.seek)) == ("store_behind", {B: FROM_START})


def test_another_store_behind_is_named_as_replaced() -> None:
    plan = rewind_plan(Applied("s2", {A: 3}), {A: 10}, known_store="s1")
    assert plan is not None
    assert plan.reason == "store_replaced"


def test_a_store_wiped_and_written_since_is_still_empty_of_offsets() -> None:
    # the first write after the wipe set a new identity but recorded no offsets
    plan = rewind_plan(Applied("s2", {}), {A: 10}, known_store="s1")
    assert plan is not None
    assert plan.reason == "store_empty"
