"""The ledger of work in flight: a group's state after its outputs and after it is
sealed, states in group order, retirement in order, recall of everything."""

from __future__ import annotations

from stream_processors.batch_core import RawRecord
from stream_processors.inflight import Group, Groups, Writes


def records(*offsets: int) -> list[RawRecord]:
    return [RawRecord("t", 0, o, None, b"", []) for o in offsets]


def add(groups: Groups, *offsets: int, now: float = 0.0, seal: bool = True) -> Group:
    group = groups.open_group(now)
    group.records += records(*offsets)
    group.batches += 1
    group.sealed = seal
    return group


def written(writes: Writes, n: int) -> None:
    for _ in range(n):
        writes.sent()


def test_batches_join_the_open_group_until_it_is_sealed() -> None:
    groups = Groups()
    first = add(groups, 1, seal=False)
    assert add(groups, 2, seal=False) is first
    first.sealed = True
    assert add(groups, 3) is not first
    assert len(groups) == 2


def test_state_waits_for_the_seal_and_the_outputs_and_keeps_group_order() -> None:
    groups = Groups()
    first = add(groups, 1, 2)
    second = add(groups, 3)
    written(first.outputs, 2)
    written(second.outputs, 1)
    second.outputs.delivered(None, None)
    assert list(groups.ready_for_state()) == [], "the second may not overtake the first"
    first.outputs.delivered(None, None)
    first.outputs.delivered(None, None)
    assert list(groups.ready_for_state()) == [first, second]
    assert list(groups.ready_for_state()) == [], "each state is sent once"


def test_an_open_group_sends_no_state() -> None:
    groups = Groups()
    group = add(groups, 1, seal=False)
    assert list(groups.ready_for_state()) == []
    group.sealed = True
    assert list(groups.ready_for_state()) == [group]


def test_retire_only_acknowledged_states_from_the_head() -> None:
    groups = Groups()
    first = add(groups, 1)
    second = add(groups, 2)
    assert list(groups.ready_for_state()) == [first, second]  # nothing to write: ready
    written(first.state, 1)
    assert groups.retire() == [], "the second may not be committed before the first"
    first.state.delivered(None, None)
    assert groups.retire() == [first, second]
    assert len(groups) == 0


def test_a_failed_write_blocks_the_group_and_is_reported() -> None:
    groups = Groups()
    group = add(groups, 1)
    written(group.outputs, 2)
    group.outputs.delivered("Broker: not enough replicas", None)
    group.outputs.delivered(None, None)
    assert not group.outputs.acknowledged
    assert list(groups.ready_for_state()) == []
    assert groups.errors() == ["Broker: not enough replicas"]


def test_recall_returns_every_record_in_order_and_empties() -> None:
    groups = Groups()
    add(groups, 1, 2)
    add(groups, 3, seal=False)
    assert [r.offset for r in groups.recall()] == [1, 2, 3]
    assert len(groups) == 0


def test_a_batch_is_acknowledged_on_its_own_and_counts_in_its_group() -> None:
    groups = Groups()
    group = add(groups, 1, 2, 3)
    first, second = Writes(parent=group.outputs), Writes(parent=group.outputs)
    first.sent(2)  # counted in one go, as the loop does for a batch's std records
    written(second, 1)
    assert group.outputs.outstanding == 3
    first.delivered(None, None)
    first.delivered(None, None)
    assert first.acknowledged, "the first batch is written: its latency can be observed"
    assert not group.outputs.acknowledged, "the group waits for the second batch"
    second.delivered("Broker: message too large", None)
    assert not second.acknowledged
    assert group.outputs.outstanding == 0
    assert groups.errors() == ["Broker: message too large"], "a batch's failure is its group's"
