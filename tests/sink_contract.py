"""The sink contract (:mod:`sinks.base`), once, for every sink.

Each sink's test module provides a :class:`SinkHarness`: the sink built against its
real destination (started by the project), a way to read back what the destination
holds, a way to make it unavailable for a while, and a way to make it refuse a record
for good. :class:`SinkContract` holds the cases; a test class inheriting it with a
``harness`` fixture runs them (``tests/integration/test_sink_contract.py``).

The cases, as :mod:`sinks.base` states the contract:

- the same batch applied twice leaves the destination as once (idempotence);
- an older version arriving after a newer one never overwrites it; equal versions
  converge on the greater event id, in either order (order);
- the destination unavailable: ``write`` raises ``SinkError(retriable=True)`` and
  nothing of the batch is visible; the same batch later is written whole. (Only the SQL
  sink is atomic per batch: an outage that starts in the middle of a batch leaves the
  bundles or pipeline commands already taken on the FHIR axis or in Redis, and the
  retry converges because it is idempotent; the harnesses' outages start before the
  batch, except PostgreSQL's, which drops the connection inside the transaction.)
- a record refused for good comes back as a :class:`~sinks.base.Rejected` (not an
  exception) and the rest of its batch is written; so does a malformed record and a
  record of a dataset the sink does not handle;
- a delete leaves the entity removed or marked deleted, and an older event of it
  delivered later does not bring it back (tombstones);
- a closed sink takes no batch: ``SinkError(retriable=False)``.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any, Protocol

import pytest
from std_samples import sink_records, std_events

from bus.errors import SinkError
from schemas.catalog import get_dataset
from sinks.base import Rejected, Sink, SinkRecord

__all__ = ["Held", "SinkContract", "SinkHarness", "changed", "deleted", "fresh_entities"]

# reasons a sink gives for a record it cannot take whatever the destination's state
MALFORMED_REASONS = frozenset({"malformed"})


@dataclass(frozen=True, slots=True)
class Held:
    """What the destination holds of one entity: the source version and event id it
    was written from, and whether it is a tombstone."""

    version: int
    event_id: str
    deleted: bool


class SinkHarness(Protocol):
    """What a sink provides to run the contract against its real destination."""

    #: a dataset the sink handles (its std events are the contract's records)
    dataset_id: str

    def build(self) -> Sink:
        """A set-up sink on the destination; the harness closes it afterwards."""

    def held(self, event: dict[str, Any]) -> Held | None:
        """What the destination holds of the entity of ``event`` (None: nothing)."""

    def snapshot(self) -> object:
        """Everything the destination holds of ours, comparable with ``==``."""

    def outage(self) -> AbstractContextManager[None]:
        """The destination unavailable (down, dropping connections, locked) inside."""

    def refuse(self, event: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """Make the destination refuse ``event`` for good; returns the event to send
        (the same, or one made invalid where the destination refuses nothing valid)
        and the ``Rejected.reason`` expected for it."""

    def foreign(self, offset: int) -> SinkRecord:
        """A record of a dataset the sink does not handle."""


# ---- events --------------------------------------------------------------------------


def _new_id(like: Any) -> Any:
    new = uuid.uuid4()
    return new if isinstance(like, uuid.UUID) else str(new)


def fresh_entities(dataset_id: str, n: int) -> list[dict[str, Any]]:
    """Creates of ``n`` distinct entities of the dataset (simulated std events)."""
    dataset = get_dataset(dataset_id)
    out: dict[str, dict[str, Any]] = {}
    for event in std_events(dataset_id):
        if event["op"] == "d" or event["after"] is None:
            continue
        key = dataset.key_of(event["after"])
        if key not in out:
            created = copy.deepcopy(event)
            created["op"] = "c"
            created["before"] = None
            out[key] = created
        if len(out) == n:
            break
    assert len(out) == n, f"{dataset_id}: fewer than {n} entities simulated"
    return list(out.values())


def changed(event: dict[str, Any], by: int = 1, *, event_id: Any = None) -> dict[str, Any]:
    """An update of the entity ``by`` versions after ``event``, under a new event id."""
    out = copy.deepcopy(event)
    out["op"] = "u"
    out["before"] = event["after"]
    out["event_id"] = event_id if event_id is not None else _new_id(event["event_id"])
    out["source"]["version"] = event["source"]["version"] + by
    return out


def deleted(event: dict[str, Any], by: int = 1) -> dict[str, Any]:
    """A delete of the entity ``by`` versions after ``event``."""
    out = changed(event, by)
    out["op"] = "d"
    out["before"], out["after"] = event["after"], None
    return out


def _version(event: dict[str, Any]) -> int:
    return int(event["source"]["version"])


# ---- the cases -----------------------------------------------------------------------


class SinkContract:
    """The contract's cases; a subclass named ``Test...`` provides ``harness``."""

    @pytest.fixture
    def sink(self, harness: SinkHarness) -> Sink:
        return harness.build()

    @pytest.fixture
    def offsets(self) -> Iterator[int]:
        """Consecutive offsets, as one partition hands them to the sink."""

        def count() -> Iterator[int]:
            n = 0
            while True:
                yield n
                n += 1

        return count()

    @staticmethod
    def records(
        harness: SinkHarness, events: Sequence[dict[str, Any]], offsets: Iterator[int]
    ) -> list[SinkRecord]:
        taken = [next(offsets) for _ in events]
        return sink_records(harness.dataset_id, events, first_offset=taken[0] if taken else 0)

    @staticmethod
    def written(sink: Sink, batch: Sequence[SinkRecord]) -> None:
        assert list(sink.write(batch)) == []

    def test_is_a_sink(self, sink: Sink) -> None:
        assert isinstance(sink, Sink)
        assert list(sink.write([])) == []
        sink.flush()

    def test_the_same_batch_twice_changes_nothing(
        self, harness: SinkHarness, sink: Sink, offsets: Iterator[int]
    ) -> None:
        created = fresh_entities(harness.dataset_id, 6)
        updates = [changed(e) for e in created[:3]]
        batch = self.records(harness, [*created, *updates], offsets)
        self.written(sink, batch)
        once = harness.snapshot()
        assert list(sink.write(batch)) == []
        assert harness.snapshot() == once
        for event in [*updates, *created[3:]]:
            held = harness.held(event)
            assert held is not None and not held.deleted
            assert held.version == _version(event)

    def test_an_older_version_never_overwrites_a_newer_one(
        self, harness: SinkHarness, sink: Sink, offsets: Iterator[int]
    ) -> None:
        first, second = fresh_entities(harness.dataset_id, 2)
        newer, older = changed(first, 2), changed(first, 1)
        # in separate batches: the destination's guard decides
        self.written(sink, self.records(harness, [newer], offsets))
        self.written(sink, self.records(harness, [older], offsets))
        # in one batch, the newer first
        self.written(sink, self.records(harness, [changed(second, 2)], offsets))
        self.written(sink, self.records(harness, [changed(second, 3), changed(second, 1)], offsets))
        for event, version in ((first, _version(newer)), (second, _version(second) + 3)):
            held = harness.held(event)
            assert held is not None and held.version == version

    @pytest.mark.parametrize("greater_first", [True, False], ids=["greater-first", "lesser-first"])
    def test_equal_versions_converge_on_the_greater_event_id(
        self, harness: SinkHarness, sink: Sink, offsets: Iterator[int], greater_first: bool
    ) -> None:
        (base,) = fresh_entities(harness.dataset_id, 1)
        like = base["event_id"]
        low_id = uuid.UUID(int=1, version=4)
        high_id = uuid.UUID(int=2**120, version=4)
        low = changed(base, 1, event_id=low_id if isinstance(like, uuid.UUID) else str(low_id))
        high = changed(base, 1, event_id=high_id if isinstance(like, uuid.UUID) else str(high_id))
        for event in (high, low) if greater_first else (low, high):
            self.written(sink, self.records(harness, [event], offsets))
        held = harness.held(base)
        assert held is not None
        assert (held.version, held.event_id) == (_version(high), str(high_id))

    def test_an_unavailable_destination_is_retriable_and_nothing_partial_shows(
        self, harness: SinkHarness, sink: Sink, offsets: Iterator[int]
    ) -> None:
        created = fresh_entities(harness.dataset_id, 8)
        self.written(sink, self.records(harness, created[:2], offsets))
        before = harness.snapshot()
        batch = self.records(harness, [*created[2:], changed(created[0])], offsets)
        with harness.outage():
            with pytest.raises(SinkError) as raised:
                sink.write(batch)
            assert raised.value.retriable is True
        assert harness.snapshot() == before  # nothing of the failed batch
        assert list(sink.write(batch)) == []  # the runner sends the same batch again
        for event in [*created[1:], changed(created[0])]:
            held = harness.held(event)
            assert held is not None
        held_first = harness.held(created[0])
        assert held_first is not None and held_first.version == _version(created[0]) + 1

    def test_a_record_refused_for_good_comes_back_and_the_rest_is_written(
        self, harness: SinkHarness, sink: Sink, offsets: Iterator[int]
    ) -> None:
        created = fresh_entities(harness.dataset_id, 7)
        refused, reason = harness.refuse(created[3])
        events = [*created[:3], refused, *created[4:]]
        batch = self.records(harness, events, offsets)
        rejected = list(sink.write(batch))
        assert [type(r) for r in rejected] == [Rejected]
        assert (rejected[0].record, rejected[0].reason) == (batch[3], reason)
        assert rejected[0].message
        assert harness.held(created[3]) is None
        for event in events[:3] + events[4:]:
            assert harness.held(event) is not None

    def test_a_malformed_record_comes_back_and_the_rest_is_written(
        self, harness: SinkHarness, sink: Sink, offsets: Iterator[int]
    ) -> None:
        created = fresh_entities(harness.dataset_id, 4)
        keyless = copy.deepcopy(created[1])
        keyless["after"] = {}
        unversioned = copy.deepcopy(created[2])
        del unversioned["source"]["version"]
        batch = self.records(harness, [created[0], created[3]], offsets)
        bad = [
            SinkRecord(batch[0].topic, 0, next(offsets), None, value)
            for value in (keyless, unversioned)
        ]
        rejected = list(sink.write([batch[0], *bad, batch[1]]))
        assert all(type(r) is Rejected for r in rejected)
        assert [(r.record, r.reason in MALFORMED_REASONS) for r in rejected] == [
            (bad[0], True),
            (bad[1], True),
        ]
        assert harness.held(created[0]) is not None and harness.held(created[3]) is not None

    def test_a_record_of_a_dataset_it_does_not_handle_is_rejected(
        self, harness: SinkHarness, sink: Sink, offsets: Iterator[int]
    ) -> None:
        (created,) = fresh_entities(harness.dataset_id, 1)
        [good] = self.records(harness, [created], offsets)
        other = harness.foreign(next(offsets))
        rejected = list(sink.write([other, good]))
        assert [(type(r), r.record, r.reason) for r in rejected] == [(Rejected, other, "malformed")]
        assert harness.held(created) is not None

    def test_a_delete_leaves_a_tombstone_an_older_event_cannot_lift(
        self, harness: SinkHarness, sink: Sink, offsets: Iterator[int]
    ) -> None:
        first, second = fresh_entities(harness.dataset_id, 2)
        self.written(sink, self.records(harness, [first, second], offsets))
        gone = deleted(first, 2)
        self.written(sink, self.records(harness, [gone], offsets))
        held = harness.held(first)
        assert held is None or (held.deleted and held.version == _version(gone))
        # older events delivered late: the create again, an update before the delete
        late = [first, changed(first, 1)]
        self.written(sink, self.records(harness, late, offsets))
        held = harness.held(first)
        assert held is None or (held.deleted and held.version == _version(gone))
        # the delete before its create, in one batch: deleted too
        self.written(sink, self.records(harness, [deleted(second), second], offsets))
        held = harness.held(second)
        assert held is None or held.deleted

    def test_a_closed_sink_takes_no_batch(
        self, harness: SinkHarness, sink: Sink, offsets: Iterator[int]
    ) -> None:
        batch = self.records(harness, fresh_entities(harness.dataset_id, 1), offsets)
        sink.close()
        with pytest.raises(SinkError) as raised:
            sink.write(batch)
        assert raised.value.retriable is False
