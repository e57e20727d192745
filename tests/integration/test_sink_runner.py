"""The sink runner against the real broker and registry: at-least-once, commit after write."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.errors import SinkError
from bus.metrics import Metrics
from bus.settings import Settings
from bus.topics import TopicSpec, ensure_topics
from schemas.catalog import value_subject
from schemas.codec import AvroSerializer
from sinks.base import SinkRecord
from sinks.runner import SinkRunner

pytestmark = pytest.mark.integration

SCHEMA = """{
  "type": "record", "name": "Reading", "namespace": "databus.test",
  "fields": [{"name": "id", "type": "string"}, {"name": "value", "type": "long"}]
}"""
PARTITIONS = 2
DEADLINE_S = 20.0

Where = tuple[str, int, int]


class RecordingSink:
    """Keeps every batch it took; can be told to fail its first ``fail_times`` writes."""

    def __init__(
        self,
        *,
        fail_times: int = 0,
        retriable: bool = True,
        on_fail: Callable[[], None] | None = None,
    ) -> None:
        self.fail_left = fail_times
        self.retriable = retriable
        self.on_fail = on_fail
        self.attempts: list[list[SinkRecord]] = []
        self.written: list[list[SinkRecord]] = []
        self.set_up = self.closed = False

    def setup(self) -> None:
        self.set_up = True

    def write(self, batch: Sequence[SinkRecord]) -> None:
        self.attempts.append(list(batch))
        if self.fail_left > 0:
            self.fail_left -= 1
            if self.on_fail is not None:
                self.on_fail()
            raise SinkError("destination unavailable", retriable=self.retriable)
        self.written.append(list(batch))

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    @property
    def records(self) -> list[SinkRecord]:
        return [rec for batch in self.written for rec in batch]


@pytest.fixture
def registry(registry_url: str) -> SchemaRegistryClient:
    return SchemaRegistryClient({"url": registry_url})


@pytest.fixture
def topic(stack_settings: Settings) -> str:
    name = f"test.sinkrunner{uuid.uuid4().hex[:10]}.std.v1"
    assert ensure_topics(stack_settings, [TopicSpec(name, PARTITIONS)]) == [name]
    return name


@pytest.fixture
def group() -> str:
    return f"test-sink-runner-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def runners() -> Iterator[list[SinkRunner]]:
    """Runners a test creates; closed at the end (closing twice is harmless here)."""
    made: list[SinkRunner] = []
    yield made
    for runner in made:
        with contextlib.suppress(RuntimeError):  # already closed by the test
            runner.close()


def produce(
    settings: Settings, topic: str, values: Sequence[tuple[int, bytes]]
) -> dict[Where, bytes]:
    """Write (partition, value) pairs; returns each record's acknowledged position."""
    producer = Producer({**settings.kafka.client_config(), "enable.idempotence": True})
    acked: dict[Where, bytes] = {}
    errors: list[object] = []

    def on_delivery(err: object, msg: object) -> None:
        if err is not None:
            errors.append(err)
            return
        acked[(msg.topic(), msg.partition(), msg.offset())] = msg.value()  # type: ignore[attr-defined]

    for i, (partition, value) in enumerate(values):
        producer.produce(
            topic, value, key=f"k{i}".encode(), partition=partition, on_delivery=on_delivery
        )
    assert producer.flush(15) == 0
    assert not errors
    assert len(acked) == len(values)
    return acked


def readings(registry: SchemaRegistryClient, topic: str, n: int) -> list[tuple[int, bytes]]:
    serialize = AvroSerializer(registry, value_subject(topic), SCHEMA)
    return [(i % PARTITIONS, serialize({"id": f"r{i}", "value": i})) for i in range(n)]


def ends(acked: dict[Where, bytes]) -> dict[tuple[str, int], int]:
    """The end offset of every partition, from what the broker acknowledged."""
    out: dict[tuple[str, int], int] = {}
    for t, p, o in acked:
        out[(t, p)] = max(out.get((t, p), 0), o + 1)
    return out


def committed(settings: Settings, group: str, topic: str) -> dict[tuple[str, int], int]:
    """The group's committed offsets, read by a consumer that never joins the group."""
    reader = Consumer({**settings.kafka.client_config(), "group.id": group})
    try:
        tps = reader.committed([TopicPartition(topic, p) for p in range(PARTITIONS)], timeout=10)
    finally:
        reader.close()
    return {(tp.topic, tp.partition): tp.offset for tp in tps}


def drive(runner: SinkRunner, done: Callable[[], bool]) -> None:
    """Poll until ``done`` (no sleeps: each poll waits on the broker)."""
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, "the runner did not get there in time"
        runner.poll_once(timeout=0.2)


def where(rec: SinkRecord) -> Where:
    return rec.topic, rec.partition, rec.offset


def make_runner(
    settings: Settings,
    sink: RecordingSink,
    topic: str,
    group: str,
    registry: SchemaRegistryClient,
    runners: list[SinkRunner],
    metrics: Metrics | None = None,
) -> SinkRunner:
    runner = SinkRunner(
        settings,
        sink,
        name="recording",
        topics=[topic],
        group=group,
        metrics=metrics,
        registry=registry,
    )
    runners.append(runner)
    return runner


def test_every_record_reaches_the_sink_once_and_offsets_reach_the_end(
    stack_settings: Settings,
    registry: SchemaRegistryClient,
    topic: str,
    group: str,
    runners: list[SinkRunner],
) -> None:
    acked = produce(stack_settings, topic, readings(registry, topic, 9))
    sink = RecordingSink()
    runner = make_runner(stack_settings, sink, topic, group, registry, runners)

    drive(runner, lambda: len(sink.records) >= len(acked))
    assert runner.poll_once(timeout=0.3) == 0  # nothing more: no record came twice

    assert sink.set_up
    got = {where(rec): rec for rec in sink.records}
    assert len(got) == len(sink.records) == 9
    assert set(got) == set(acked)
    for i in range(9):
        matches = [rec for rec in sink.records if rec.value == {"id": f"r{i}", "value": i}]
        assert len(matches) == 1
        assert matches[0].partition == i % PARTITIONS
        assert matches[0].key == f"k{i}".encode()
    assert runner.records_written == 9
    assert committed(stack_settings, group, topic) == ends(acked)


def test_retriable_failure_retries_the_batch_and_commits_only_after_the_write(
    stack_settings: Settings,
    registry: SchemaRegistryClient,
    topic: str,
    group: str,
    runners: list[SinkRunner],
) -> None:
    acked = produce(stack_settings, topic, readings(registry, topic, 6))
    seen_while_failing: list[dict[tuple[str, int], int]] = []
    sink = RecordingSink(
        fail_times=2,
        on_fail=lambda: seen_while_failing.append(committed(stack_settings, group, topic)),
    )
    metrics = Metrics()
    runner = make_runner(stack_settings, sink, topic, group, registry, runners, metrics)

    drive(runner, lambda: len(sink.records) >= len(acked))

    # The first batch was offered three times, the same records each time, written once.
    first = [where(rec) for rec in sink.attempts[0]]
    assert [[where(rec) for rec in batch] for batch in sink.attempts[:3]] == [first] * 3
    assert [where(rec) for rec in sink.written[0]] == first
    assert Counter(where(rec) for rec in sink.records) == Counter(dict.fromkeys(acked, 1))
    # While the sink failed, the group had committed nothing at all.
    assert len(seen_while_failing) == 2
    for offsets in seen_while_failing:
        assert all(offset < 0 for offset in offsets.values()), offsets
    assert committed(stack_settings, group, topic) == ends(acked)
    failures = metrics.registry.get_sample_value(
        "databus_sink_failures_total", {"sink": "recording", "kind": "retriable"}
    )
    assert failures == 2


def test_permanent_failure_propagates_commits_nothing_and_replays_to_the_next_runner(
    stack_settings: Settings,
    registry: SchemaRegistryClient,
    topic: str,
    group: str,
    runners: list[SinkRunner],
) -> None:
    acked = produce(stack_settings, topic, readings(registry, topic, 4))
    failing = RecordingSink(fail_times=1, retriable=False)
    first = make_runner(stack_settings, failing, topic, group, registry, runners)

    with pytest.raises(SinkError) as caught:
        drive(first, lambda: False)
    assert caught.value.retriable is False
    assert len(failing.attempts) == 1  # not retried
    assert failing.written == []
    assert all(offset < 0 for offset in committed(stack_settings, group, topic).values())
    first.close()
    assert failing.closed

    sink = RecordingSink()
    second = make_runner(stack_settings, sink, topic, group, registry, runners)
    drive(second, lambda: len(sink.records) >= len(acked))

    assert {where(rec) for rec in failing.attempts[0]} <= set(acked)
    assert Counter(where(rec) for rec in sink.records) == Counter(dict.fromkeys(acked, 1))
    assert committed(stack_settings, group, topic) == ends(acked)


def test_same_runner_polled_again_after_a_permanent_failure_rereads_the_batch(
    stack_settings: Settings,
    registry: SchemaRegistryClient,
    topic: str,
    group: str,
    runners: list[SinkRunner],
) -> None:
    acked = produce(stack_settings, topic, readings(registry, topic, 4))
    sink = RecordingSink(fail_times=1, retriable=False)
    runner = make_runner(stack_settings, sink, topic, group, registry, runners)
    with pytest.raises(SinkError):
        drive(runner, lambda: False)
    # The failed batch was rewound: polling on does not commit past it.
    drive(runner, lambda: len(sink.records) >= len(acked))
    assert Counter(where(rec) for rec in sink.records) == Counter(dict.fromkeys(acked, 1))
    assert committed(stack_settings, group, topic) == ends(acked)


def test_undecodable_record_is_counted_and_does_not_block_the_partition(
    stack_settings: Settings,
    registry: SchemaRegistryClient,
    topic: str,
    group: str,
    runners: list[SinkRunner],
) -> None:
    good = readings(registry, topic, 2)
    bad = b"\x01\x00\x00\x00\x01garbage"  # magic byte 1: not the Confluent framing
    # All on one partition, the bad record between two good ones.
    acked = produce(stack_settings, topic, [(0, good[0][1]), (0, bad), (0, good[1][1])])
    metrics = Metrics()
    sink = RecordingSink()
    runner = make_runner(stack_settings, sink, topic, group, registry, runners, metrics)

    drive(runner, lambda: len(sink.records) >= 2)

    assert [rec.value for rec in sink.records] == [
        {"id": "r0", "value": 0},
        {"id": "r1", "value": 1},
    ]
    bad_at = next(w for w, v in acked.items() if v == bad)
    assert bad_at not in {where(rec) for rec in sink.records}
    undecodable = metrics.registry.get_sample_value(
        "databus_sink_failures_total", {"sink": "recording", "kind": "undecodable"}
    )
    assert undecodable == 1
    offsets = committed(stack_settings, group, topic)
    assert offsets[(topic, 0)] == ends(acked)[(topic, 0)] == 3
