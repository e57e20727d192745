"""The sink runner against the real broker and registry: at-least-once, commit after write."""

from __future__ import annotations

import contextlib
import hashlib
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence

import pytest
from cloudevents.core.bindings.kafka import KafkaMessage, from_binary
from cloudevents.core.formats.json import JSONFormat
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from registry_clients import registry_client

from bus.errors import DeliveryError, SinkError
from bus.metrics import Metrics
from bus.settings import Settings, SinkSettings
from bus.topic_admin import TopicSpec, ensure_topics
from schemas.catalog import value_subject
from schemas.codec import AvroSerializer
from schemas.topics import sink_dlq_topic
from sinks.base import Rejected, SinkRecord
from sinks.runner import SinkRunner
from sinks.sink_dlq import SinkDeadLetters, SinkLetter

pytestmark = pytest.mark.integration

SCHEMA = """{
  "type": "record", "name": "Reading", "namespace": "databus.test",
  "fields": [{"name": "id", "type": "string"}, {"name": "value", "type": "long"}]
}"""
PARTITIONS = 2
DEADLINE_S = 20.0

Where = tuple[str, int, int]
# Backoffs in tens of milliseconds and a circuit that opens after two failures, so an
# outage of a few attempts takes well under a second.
FAST = SinkSettings(
    backoff_initial_s=0.02, backoff_max_s=0.2, breaker_fail_max=2, breaker_reset_timeout_s=0.1
)


class RecordingSink:
    """Keeps every batch it took; can be told to fail its first ``fail_times`` writes,
    to fail while ``down`` is set, and to refuse the records ``refuse`` picks."""

    def __init__(
        self,
        *,
        fail_times: int = 0,
        retriable: bool = True,
        on_fail: Callable[[], None] | None = None,
        down: threading.Event | None = None,
        refuse: Callable[[SinkRecord], bool] | None = None,
        expect: int = 0,
    ) -> None:
        self.fail_left = fail_times
        self.retriable = retriable
        self.on_fail = on_fail
        self.down = down
        self.refuse = refuse
        self.attempts: list[list[SinkRecord]] = []
        self.written: list[list[SinkRecord]] = []
        self.set_up = self.closed = False
        self.failures = 0
        self.expect = expect
        self.has_all = threading.Event()  # set once ``expect`` records were written

    def setup(self) -> None:
        self.set_up = True

    def write(self, batch: Sequence[SinkRecord]) -> list[Rejected]:
        self.attempts.append(list(batch))
        failing = self.down is not None and self.down.is_set()
        if self.fail_left > 0 or failing:
            self.fail_left -= 1
            self.failures += 1
            if self.on_fail is not None:
                self.on_fail()
            raise SinkError("destination unavailable", retriable=self.retriable)
        refused = [
            Rejected(rec, "http_4xx", "HTTP 422: value out of range", "HTTPStatusError")
            for rec in batch
            if self.refuse is not None and self.refuse(rec)
        ]
        gone = {where(r.record) for r in refused}
        self.written.append([rec for rec in batch if where(rec) not in gone])
        if self.expect and len(self.records) >= self.expect:
            self.has_all.set()
        return refused

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    @property
    def records(self) -> list[SinkRecord]:
        return [rec for batch in self.written for rec in batch]


@pytest.fixture
def registry(registry_url: str) -> SchemaRegistryClient:
    return registry_client({"url": registry_url})


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
    settings: Settings,
    topic: str,
    values: Sequence[tuple[int, bytes]],
    headers: Callable[[int], list[tuple[str, str | bytes | None]]] | None = None,
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
            topic,
            value,
            key=f"k{i}".encode(),
            partition=partition,
            headers=headers(i) if headers else None,
            on_delivery=on_delivery,
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
    *,
    name: str = "recording",
    dead_letters: SinkDeadLetters | None = None,
) -> SinkRunner:
    runner = SinkRunner(
        settings.model_copy(update={"sink": FAST}),
        sink,
        name=name,
        topics=[topic],
        group=group,
        metrics=metrics,
        registry=registry,
        dead_letters=dead_letters,
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


def test_undecodable_record_goes_to_the_sink_dlq_and_does_not_block_the_partition(
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
    name = f"undecodable{uuid.uuid4().hex[:8]}"
    runner = make_runner(stack_settings, sink, topic, group, registry, runners, metrics, name=name)

    drive(runner, lambda: len(sink.records) >= 2)

    assert [rec.value for rec in sink.records] == [
        {"id": "r0", "value": 0},
        {"id": "r1", "value": 1},
    ]
    bad_at = next(w for w, v in acked.items() if v == bad)
    assert bad_at not in {where(rec) for rec in sink.records}
    undecodable = metrics.registry.get_sample_value(
        "databus_sink_failures_total", {"sink": name, "kind": "undecodable"}
    )
    assert undecodable == 1
    offsets = committed(stack_settings, group, topic)
    assert offsets[(topic, 0)] == ends(acked)[(topic, 0)] == 3
    [letter] = read_topic(stack_settings, sink_dlq_topic(name), 1)
    assert letter.value == bad
    assert letter.headers[f"{CONNECT}offset"] == str(bad_at[2]).encode()
    assert letter.headers[f"{ERR}stage"] == f"sink:{name}".encode()
    assert letter.headers[f"{ERR}reason"] == b"bad_magic_byte"
    assert letter.headers[f"{CONNECT}exception.class.name"] == b"CodecError"


ERR = "databus.errors."
CONNECT = "__connect.errors."


class Letter:
    def __init__(self, key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> None:
        self.key, self.value = key, value
        self.headers = dict(headers)


def read_topic(settings: Settings, name: str, n: int) -> list[Letter]:
    """The first ``n`` records of a topic (all partitions), read without a group."""
    meta_reader = Consumer({**settings.kafka.client_config(), "group.id": "unused"})
    try:
        partitions = meta_reader.list_topics(name, timeout=10).topics[name].partitions
        meta_reader.assign([TopicPartition(name, p, OFFSET_BEGINNING) for p in partitions])
        got: list[Letter] = []
        deadline = time.monotonic() + DEADLINE_S
        while len(got) < n:
            assert time.monotonic() < deadline, f"only {len(got)} of {n} records in {name}"
            msg = meta_reader.poll(0.2)
            if msg is None or msg.error() is not None:
                continue
            got.append(Letter(msg.key(), msg.value() or b"", list(msg.headers() or [])))  # type: ignore[arg-type]
        assert meta_reader.consume(10, 0.5) == []  # and nothing more
        return got
    finally:
        meta_reader.close()


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


class FlakyDeadLetters(SinkDeadLetters):
    """Fails its first send (the broker did not acknowledge) and notes, at every send,
    what the group had committed by then."""

    def __init__(self, settings: Settings, name: str, group: str, topic: str) -> None:
        super().__init__(settings, name)
        self._where = (settings, group, topic)
        self.committed_at_send: list[dict[tuple[str, int], int]] = []
        self.fail_left = 1

    def send(self, letters: Sequence[SinkLetter], timeout: float = 30.0) -> None:
        self.committed_at_send.append(committed(*self._where))
        if self.fail_left > 0:
            self.fail_left -= 1
            raise DeliveryError("dead-letter write not acknowledged")
        super().send(letters, timeout)


def test_rejected_records_go_to_the_sink_dlq_before_the_commit(
    stack_settings: Settings,
    registry: SchemaRegistryClient,
    topic: str,
    group: str,
    runners: list[SinkRunner],
) -> None:
    values = readings(registry, topic, 9)
    acked = produce(
        stack_settings, topic, values, headers=lambda i: [("ce_id", f"event-{i}".encode())]
    )
    name = f"rejecting{uuid.uuid4().hex[:8]}"
    sink = RecordingSink(refuse=lambda rec: rec.value["value"] % 3 == 0)
    dlq = FlakyDeadLetters(stack_settings, name, group, topic)
    metrics = Metrics()
    runner = make_runner(
        stack_settings, sink, topic, group, registry, runners, metrics, name=name, dead_letters=dlq
    )

    drive(runner, lambda: committed(stack_settings, group, topic) == ends(acked))

    refused = {w for w, v in acked.items() if v in {v for _, v in values[::3]}}
    assert len(refused) == 3
    assert Counter(where(rec) for rec in sink.records) == Counter(
        {w: 1 for w in acked if w not in refused}
    )
    # The failed dead-letter write held the batch without writing it to the sink again,
    # and nothing was committed before a dead-letter write.
    assert sum(len(b) for b in sink.attempts) == 9
    assert len(dlq.committed_at_send) >= 2
    first_send = dlq.committed_at_send[0]
    assert all(first_send[tp] < end for tp, end in ends(acked).items() if tp in first_send)

    letters = read_topic(stack_settings, sink_dlq_topic(name), 3)
    by_offset = {
        (
            letter.headers[f"{CONNECT}topic"].decode(),
            int(letter.headers[f"{CONNECT}partition"]),
            int(letter.headers[f"{CONNECT}offset"]),
        ): letter
        for letter in letters
    }
    assert set(by_offset) == refused
    for at, letter in by_offset.items():
        assert letter.value == acked[at]  # the original bytes
        i = int(letter.key.decode()[1:]) if letter.key else -1
        assert i % 3 == 0
        assert letter.headers["ce_id"] == f"event-{i}".encode()
        # a CloudEvent for the SDK: the original's id kept, the missing attributes added
        event = from_binary(KafkaMessage(letter.headers, letter.key, letter.value), JSONFormat())
        assert (event.get_id(), event.get_source()) == (f"event-{i}", f"urn:databus:sink:{name}")
        assert event.get_type() == "vn.gov.databus.deadletter"
        assert letter.headers[f"{ERR}stage"] == f"sink:{name}".encode()
        assert letter.headers[f"{ERR}reason"] == b"http_4xx"
        assert letter.headers[f"{CONNECT}exception.class.name"] == b"HTTPStatusError"
        assert letter.headers[f"{CONNECT}exception.message"] == b"HTTP 422: value out of range"
        assert letter.headers[f"{ERR}exception.message.vi"]
    dataset = topic.rsplit(".", 2)[0]
    labels = {"sink": name, "dataset": dataset, "reason": "http_4xx"}
    assert sample(metrics, "databus_sink_dead_lettered_total", **labels) == 3
    assert sample(metrics, "databus_sink_failures_total", sink=name, kind="rejected") == 3
    assert runner.records_written == 6


def loop(runner: SinkRunner, stop: threading.Event, out: dict[str, object]) -> None:
    """What ``run`` does, noting the longest poll and any error for the test thread."""
    longest = 0.0
    try:
        while not stop.is_set():
            started = time.monotonic()
            runner.poll_once(timeout=0.2)
            longest = max(longest, time.monotonic() - started)
            out["longest_poll_s"] = longest
    except BaseException as exc:
        out["error"] = exc
        raise


def test_an_outage_holds_one_sink_without_slowing_another_and_loses_nothing(
    stack_settings: Settings,
    registry: SchemaRegistryClient,
    topic: str,
    runners: list[SinkRunner],
) -> None:
    acked = produce(stack_settings, topic, readings(registry, topic, 12))
    down = threading.Event()
    down.set()
    retried = threading.Event()
    failing = RecordingSink(
        down=down, expect=12, on_fail=lambda: retried.set() if failing.failures >= 4 else None
    )
    healthy = RecordingSink(expect=12)
    metrics = Metrics()
    failing_group = f"test-sink-down-{uuid.uuid4().hex[:8]}"
    failing_runner = make_runner(
        stack_settings, failing, topic, failing_group, registry, runners, metrics, name="down"
    )
    healthy_runner = make_runner(
        stack_settings, healthy, topic, f"test-sink-up-{uuid.uuid4().hex[:8]}", registry, runners
    )
    stop = threading.Event()
    states: dict[str, dict[str, object]] = {"down": {}, "up": {}}
    threads = [
        threading.Thread(target=loop, args=(failing_runner, stop, states["down"])),
        threading.Thread(target=loop, args=(healthy_runner, stop, states["up"])),
    ]
    for t in threads:
        t.start()
    try:
        # The healthy sink gets everything while the other one's destination is down.
        assert healthy.has_all.wait(DEADLINE_S)
        assert retried.wait(DEADLINE_S), "the failing sink was not retried"
        assert failing_runner.holding
        assert failing.records == []
        assert sample(metrics, "databus_sink_held_records", sink="down") > 0
        assert sample(metrics, "databus_sink_paused_partitions", sink="down") == PARTITIONS
        assert all(
            offset < 0 for offset in committed(stack_settings, failing_group, topic).values()
        )

        down.clear()  # the destination is back
        assert failing.has_all.wait(DEADLINE_S)
        deadline = time.monotonic() + DEADLINE_S
        while committed(stack_settings, failing_group, topic) != ends(acked):
            assert time.monotonic() < deadline, "offsets did not reach the end"
    finally:
        stop.set()
        for t in threads:
            t.join(DEADLINE_S)
    assert "error" not in states["down"] and "error" not in states["up"]
    # Nobody blocked inside poll for the length of the outage.
    assert float(states["down"]["longest_poll_s"]) < 2.0  # type: ignore[arg-type]

    every_once = Counter(dict.fromkeys(acked, 1))
    assert Counter(where(rec) for rec in healthy.records) == every_once
    assert Counter(where(rec) for rec in failing.records) == every_once
    assert sample(metrics, "databus_sink_retries_total", sink="down") >= 3
    assert sample(metrics, "databus_sink_failures_total", sink="down", kind="retriable") >= 4
    transitions = "databus_sink_circuit_transitions_total"
    assert sample(metrics, transitions, sink="down", state="open") >= 1
    assert sample(metrics, transitions, sink="down", state="half_open") >= 1
    assert sample(metrics, transitions, sink="down", state="closed") >= 1
    assert sample(metrics, "databus_sink_circuit_state", sink="down") == 0
    assert sample(metrics, "databus_sink_held_records", sink="down") == 0
    assert sample(metrics, "databus_sink_paused_partitions", sink="down") == 0
    for p in range(PARTITIONS):
        lag = metrics.registry.get_sample_value(
            "databus_sink_consumer_lag", {"sink": "down", "topic": topic, "partition": str(p)}
        )
        assert lag is None or lag >= 0


def test_rebalances_while_holding_a_batch_lose_and_duplicate_nothing(
    stack_settings: Settings,
    registry: SchemaRegistryClient,
    topic: str,
    group: str,
    runners: list[SinkRunner],
) -> None:
    values = readings(registry, topic, 14)
    acked = produce(stack_settings, topic, values[:10])
    down = threading.Event()
    down.set()
    metrics = Metrics()
    first_sink = RecordingSink(down=down)
    first = make_runner(stack_settings, first_sink, topic, group, registry, runners, metrics)
    drive(first, lambda: first.holding and first_sink.failures >= 1)

    # A second member joins: the cooperative rebalance takes a partition from the
    # holding runner, which drops that part of its held batch; the new owner replays it.
    second_sink = RecordingSink()
    second = make_runner(stack_settings, second_sink, topic, group, registry, runners)
    deadline = time.monotonic() + 2 * DEADLINE_S
    while not second_sink.records:
        assert time.monotonic() < deadline, "the second member never got a partition"
        first.poll_once(timeout=0.1)
        second.poll_once(timeout=0.1)
    taken = second_sink.records[0].partition
    drive(second, lambda: len(second_sink.records) == sum(p == taken for _, p, _ in acked))
    assert first.holding

    # The second member leaves: its partition comes back to the runner still holding,
    # paused behind the held batch; records produced meanwhile wait in Kafka.
    second.close()
    drive(first, lambda: sample(metrics, "databus_sink_paused_partitions", sink="recording") == 2)
    acked |= produce(stack_settings, topic, values[10:])
    for _ in range(3):
        first.poll_once(timeout=0.1)
    assert first.holding and first_sink.records == []

    down.clear()  # the destination is back: the first runner writes the rest
    drive(first, lambda: committed(stack_settings, group, topic) == ends(acked))

    both = first_sink.records + second_sink.records
    assert Counter(where(rec) for rec in both) == Counter(dict.fromkeys(acked, 1))
    assert not first.holding


def test_closing_a_runner_that_holds_a_batch_lets_the_next_member_replay_it(
    stack_settings: Settings,
    registry: SchemaRegistryClient,
    topic: str,
    group: str,
    runners: list[SinkRunner],
) -> None:
    acked = produce(stack_settings, topic, readings(registry, topic, 6))
    down = threading.Event()
    down.set()
    failing = RecordingSink(down=down)
    first = make_runner(stack_settings, failing, topic, group, registry, runners)
    drive(first, lambda: first.holding and failing.failures >= 2)
    first.close()  # revokes everything while holding: the batch stays in Kafka
    assert failing.closed and failing.records == []

    sink = RecordingSink()
    second = make_runner(stack_settings, sink, topic, group, registry, runners)
    drive(second, lambda: len(sink.records) >= len(acked))
    assert second.poll_once(timeout=0.3) == 0
    assert Counter(where(rec) for rec in sink.records) == Counter(dict.fromkeys(acked, 1))
    assert committed(stack_settings, group, topic) == ends(acked)


class RestartingRegistry(SchemaRegistryClient):
    """The real registry, unreachable for its first ``down_for`` schema look-ups."""

    def __init__(self, url: str, down_for: int) -> None:
        super().__init__({"url": url})
        self.down_for = down_for

    def get_schema(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        if self.down_for > 0:
            self.down_for -= 1
            raise ConnectionError("registry restarting")
        return super().get_schema(*args, **kwargs)  # type: ignore[arg-type]


def test_a_registry_outage_holds_the_batch_until_it_decodes(
    stack_settings: Settings,
    registry: SchemaRegistryClient,
    registry_url: str,
    topic: str,
    group: str,
    runners: list[SinkRunner],
    request: pytest.FixtureRequest,
) -> None:
    acked = produce(stack_settings, topic, readings(registry, topic, 4))
    metrics = Metrics()
    sink = RecordingSink()
    restarting = RestartingRegistry(registry_url, down_for=3)
    request.addfinalizer(restarting.close)
    runner = make_runner(stack_settings, sink, topic, group, restarting, runners, metrics)
    held: list[bool] = []

    def done() -> bool:
        held.append(runner.holding)
        return len(sink.records) >= len(acked)

    drive(runner, done)

    assert True in held  # waited, paused, instead of skipping or dead-lettering
    assert restarting.down_for == 0
    assert len(sink.attempts) == len(sink.written)  # the sink never saw the outage
    assert Counter(where(rec) for rec in sink.records) == Counter(dict.fromkeys(acked, 1))
    assert committed(stack_settings, group, topic) == ends(acked)
    assert sample(metrics, "databus_sink_failures_total", sink="recording", kind="retriable") == 3
    assert sample(metrics, "databus_sink_retries_total", sink="recording") == 3
    assert sample(metrics, "databus_sink_failures_total", sink="recording", kind="undecodable") == 0


def test_a_refused_record_too_large_for_the_dlq_goes_as_its_digest_and_the_sink_goes_on(
    stack_settings: Settings,
    registry: SchemaRegistryClient,
    topic: str,
    group: str,
    runners: list[SinkRunner],
) -> None:
    serialize = AvroSerializer(registry, value_subject(topic), SCHEMA)
    big = serialize({"id": "x" * 300_000, "value": 0})
    small = [(i % PARTITIONS, serialize({"id": f"r{i}", "value": i})) for i in range(1, 6)]
    acked = produce(stack_settings, topic, [(0, big), *small])
    name = f"digest{uuid.uuid4().hex[:8]}"
    # the dead-letter topic takes 100 kB here: the refused 300 kB record does not fit
    dlq = SinkDeadLetters(stack_settings, name, max_bytes=100_000)
    sink = RecordingSink(refuse=lambda rec: rec.value["value"] == 0)
    metrics = Metrics()
    runner = make_runner(
        stack_settings, sink, topic, group, registry, runners, metrics, name=name, dead_letters=dlq
    )

    drive(runner, lambda: committed(stack_settings, group, topic) == ends(acked))

    [at] = [w for w, v in acked.items() if v == big]
    [letter] = read_topic(stack_settings, sink_dlq_topic(name), 1)
    assert letter.value == b""  # no bytes: their size and digest instead
    assert letter.headers[f"{ERR}original.size"] == str(len(big)).encode()
    assert letter.headers[f"{ERR}original.sha256"] == hashlib.sha256(big).hexdigest().encode()
    coordinates = (f"{CONNECT}topic", f"{CONNECT}partition", f"{CONNECT}offset")
    assert tuple(letter.headers[h].decode() for h in coordinates) == tuple(map(str, at))
    assert letter.headers[f"{ERR}reason"] == b"http_4xx"
    assert runner.records_written == 5
    assert Counter(where(rec) for rec in sink.records) == Counter({w: 1 for w in acked if w != at})


class CrashingSink(RecordingSink):
    """Raises a foreign exception on any batch holding a record ``crash`` picks, as a
    sink's own code would on a record it cannot handle."""

    def __init__(self, crash: Callable[[SinkRecord], bool]) -> None:
        super().__init__()
        self.crash = crash

    def write(self, batch: Sequence[SinkRecord]) -> list[Rejected]:
        if any(self.crash(rec) for rec in batch):
            self.attempts.append(list(batch))
            raise ValueError("cannot handle this record")
        return super().write(batch)


def test_a_record_that_makes_the_sink_raise_is_isolated_and_the_sink_goes_on(
    stack_settings: Settings,
    registry: SchemaRegistryClient,
    topic: str,
    group: str,
    runners: list[SinkRunner],
) -> None:
    acked = produce(stack_settings, topic, readings(registry, topic, 12))
    name = f"crashing{uuid.uuid4().hex[:8]}"
    sink = CrashingSink(crash=lambda rec: rec.value["value"] in (3, 8))
    metrics = Metrics()
    runner = make_runner(stack_settings, sink, topic, group, registry, runners, metrics, name=name)

    drive(runner, lambda: committed(stack_settings, group, topic) == ends(acked))

    letters = read_topic(stack_settings, sink_dlq_topic(name), 2)
    assert {letter.key for letter in letters} == {b"k3", b"k8"}
    for letter in letters:
        assert letter.headers[f"{ERR}reason"] == b"sink_crashed"
        assert letter.headers[f"{CONNECT}exception.class.name"] == b"ValueError"
        assert b"cannot handle" not in letter.headers[f"{CONNECT}exception.message"]
    assert sorted(rec.value["value"] for rec in sink.records) == [
        i for i in range(12) if i not in (3, 8)
    ]
    labels = {"sink": name, "dataset": topic.rsplit(".", 2)[0], "reason": "sink_crashed"}
    assert sample(metrics, "databus_sink_dead_lettered_total", **labels) == 2


def test_a_sink_that_raises_on_every_record_stops_instead_of_dead_lettering_the_stream(
    stack_settings: Settings,
    registry: SchemaRegistryClient,
    topic: str,
    group: str,
    runners: list[SinkRunner],
) -> None:
    produce(stack_settings, topic, readings(registry, topic, 6))
    sink = CrashingSink(crash=lambda rec: True)
    runner = make_runner(stack_settings, sink, topic, group, registry, runners)

    with pytest.raises(SinkError) as info:
        drive(runner, lambda: False)
    assert info.value.retriable is False
    assert committed(stack_settings, group, topic) == {(topic, p): -1001 for p in range(PARTITIONS)}
