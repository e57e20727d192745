"""``BatchCore.process_into`` works a batch in three passes (decode all, standardize
what is new against the state before the batch, then decide record by record in
order). The outcome must be what one record at a time through every stage gives:
same real pieces as ``test_backfill_core``."""

from __future__ import annotations

from typing import Any, cast

from test_backfill_core import NOW_MS, TOPIC, StubPipeline, record, state

from schemas.dead_letters import DeadLetter
from stream_processors.alerts.facts import contributions
from stream_processors.batch_core import BatchCore, RawRecord
from stream_processors.pipeline import DatasetPipeline, Output
from stream_processors.quality import field_presence


class CountingPipeline(StubPipeline):
    """The stub, counting how many records it standardized."""

    def __init__(self) -> None:
        super().__init__()
        self.standardized = 0

    def standardize(self, raw: dict[str, Any], headers: Any = ()) -> Output | DeadLetter:
        self.standardized += 1
        return super().standardize(raw, headers)


def counting_core() -> tuple[BatchCore, CountingPipeline]:
    pipeline = CountingPipeline()
    c = BatchCore(
        {TOPIC: cast(DatasetPipeline, pipeline)},
        frozenset({"DNA.STP"}),
        contributions=contributions,
        presence=field_presence,
    )
    return c, pipeline


def test_a_record_new_only_after_an_earlier_one_of_its_batch_is_written() -> None:
    # Before the batch the entity holds event A at version 1. In the batch, event B
    # (version 2) comes first; then A again at version 3 — the same event id as the
    # state before the batch (a conflict against it, so pass 2 skips it), but newer
    # than B, hence new in order: it must be standardized and written all the same.
    c, pipeline = counting_core()
    c.process([record(1, version=1, status="RECEIVED", event_id=EVENT_A)], NOW_MS)
    c.settle()
    batch = [
        record(2, version=2, status="IN_PROGRESS"),
        record(3, version=3, status="IN_PROGRESS", event_id=EVENT_A),
    ]
    out = c.process(batch, NOW_MS)
    assert [key for _topic, key, _value, _headers in out.std] == [b"HS-BF-1", b"HS-BF-1"]
    assert not out.dead
    assert (state(c).version, state(c).offset) == (3, 3)
    assert pipeline.standardized == 3


def test_duplicates_and_stale_records_are_not_standardized() -> None:
    c, pipeline = counting_core()
    first = record(1, version=2, status="RECEIVED")
    c.process([first], NOW_MS)
    c.settle()
    again = RawRecord(TOPIC, 0, 7, first.key, first.value, first.headers)
    older = record(8, version=1, status="RECEIVED")
    out = c.process([again, older], NOW_MS)
    assert not out.std
    assert out.dropped == {(pipeline.dataset.id, "duplicate"): 1, (pipeline.dataset.id, "stale"): 1}
    assert pipeline.standardized == 1, "only the first record"


EVENT_A = "0b7c9d1e-3f4a-4b5c-8d6e-7f8091a2b3c4"
