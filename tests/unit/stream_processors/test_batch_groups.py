"""Several small batches sharing one state write (``BatchCore.process_into`` + ``finish``).

The processor's loop writes each small batch's std records at once but gathers their
state changes into one group: an entity changed in several batches of a group must
send one net delta, exactly what one big batch would have sent, so that a redelivery
after a crash re-sends the same thing. Same real pieces as ``test_backfill_core``.
"""

from __future__ import annotations

from datetime import timedelta

from test_backfill_core import DONE_LATE, DUE, NOW_MS, OPEN, core, deltas, record, state

from stream_processors.batch_core import BatchOutput


def test_an_entity_changed_in_two_batches_of_a_group_sends_one_net_delta() -> None:
    c = core()
    group = BatchOutput()
    c.process_into(group, [record(1, version=1, status="IN_PROGRESS")], NOW_MS)
    assert len(group.std) == 1, "each batch's std record is there at once"
    late = record(2, version=2, status="COMPLETED", completed=DUE + timedelta(days=2))
    c.process_into(group, [late], NOW_MS)
    c.finish(group)
    assert deltas(group) == [(1, DONE_LATE[0][2])], "from before the group to its end"
    entity = state(c)
    assert (entity.version, entity.offset, entity.previous) == (2, 2, [])
    stats = next(iter(group.stats.values()))
    assert (stats.received, stats.valid) == (2, 2)
    assert c.unsettled == 2


def test_one_group_sends_what_one_big_batch_sends() -> None:
    records = [
        record(1, version=1, status="IN_PROGRESS"),
        record(2, version=2, status="COMPLETED", completed=DUE + timedelta(days=2)),
        record(3, version=1, status="IN_PROGRESS", dossier_id="HS-BF-2"),
    ]
    big = core().process(records, NOW_MS)
    c = core()
    group = BatchOutput()
    for r in records:
        c.process_into(group, [r], NOW_MS)
    c.finish(group)
    assert group.deltas == big.deltas
    assert {k: e.to_json() for k, e in group.entities.items()} == {
        k: e.to_json() for k, e in big.entities.items()
    }
    assert group.stats == big.stats


def test_a_redelivery_after_a_lost_group_resends_the_groups_net_delta() -> None:
    c = core()
    group = BatchOutput()
    c.process_into(group, [record(1, version=1, status="IN_PROGRESS")], NOW_MS)
    late = record(2, version=2, status="COMPLETED", completed=DUE + timedelta(days=2))
    c.process_into(group, [late], NOW_MS)
    c.finish(group)
    c.settle(2)
    # The changelog was written, the commit was not: both records come back.
    again = c.process([record(1, version=1, status="IN_PROGRESS"), late], NOW_MS)
    assert deltas(again) == [(1, DONE_LATE[0][2])]
    assert again.std == [], "nothing is standardized twice"


def test_rollback_undoes_every_batch_of_the_group() -> None:
    c = core()
    group = BatchOutput()
    c.process_into(group, [record(1, version=1, status="IN_PROGRESS")], NOW_MS)
    c.process_into(
        group, [record(2, version=2, status="COMPLETED", completed=DUE + timedelta(2))], NOW_MS
    )
    c.rollback()
    assert c.entity_count() == 0
    assert c.unsettled == 0
    # processed again from scratch, they are new
    out = c.process([record(1, version=1, status="IN_PROGRESS")], NOW_MS)
    assert deltas(out) == [(1, OPEN[0][2])]
