"""The batched standardize loop on the real broker and registry.

Each test uses a processor group of its own, so its changelogs and consumer
offsets are private; the raw topic is the catalog's, read from a fresh group that
starts at the records this test published (a unique run id marks them).
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import replace
from datetime import datetime
from typing import Any, cast

import pytest
from bus_processes import read_topic
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from registry_clients import registry_client

from bus.errors import RegistryError
from bus.kafka_client import producer_config
from bus.metrics import Metrics
from bus.settings import Settings
from bus.topic_admin import TopicSpec, ensure_topics
from producers.publisher import Publisher
from producers.simulators import DossierEvent, DossierSpec, generate_dossiers
from schemas.catalog import DOSSIERS as CATALOG_DOSSIERS
from schemas.catalog import Dataset
from schemas.domain.reference import ReferenceData, load_reference
from schemas.topics import changelog_topic, processor_topics, rule_deltas_topic
from stream_processors.batch_core import BatchCore
from stream_processors.batch_loop import BatchLoop
from stream_processors.pipeline import DatasetPipeline
from stream_processors.standardizers import STANDARDIZERS, Rejected, Standardized

pytestmark = pytest.mark.integration

# The dossier dataset under a name of this module's own: these tests write broken
# records, which must not reach the catalog's topics that other tests read whole.
DOSSIERS = replace(CATALOG_DOSSIERS, id=f"publicservice.dossiers_looptest{uuid.uuid4().hex[:6]}")


def _dossier(
    raw: Mapping[str, Any], ref: ReferenceData, now: datetime | None
) -> Standardized | Rejected:
    return STANDARDIZERS[CATALOG_DOSSIERS.id](raw, ref, None)


def _contributions(
    dataset_id: str, event: Mapping[str, Any]
) -> list[tuple[str, str, dict[str, Any]]]:
    after = event.get("after")
    if not after:
        return []
    return [("test_status", after["receiving_unit_code"], {"status": after["status"]})]


def _presence(dataset: Dataset, record: Mapping[str, Any]) -> tuple[int, int, int, int]:
    return (1, 1, 0, 0)


def ends(settings: Settings, topic: str) -> dict[int, int]:
    """Offsets after the last record of each partition, by reading (watermarks are approximate)."""
    last: dict[int, int] = {}
    for m in read_topic(settings, topic):
        last[m.partition()] = max(last.get(m.partition(), 0), m.offset() + 1)
    return last


class FlakyRegistry:
    """A standardizer that finds the registry down for a while: the ``fail_at``-th
    call raises, and so does every call for the next ``down_s`` seconds."""

    def __init__(self, fail_at: int, down_s: float) -> None:
        self.calls = 0
        self.failures = 0
        self._fail_at = fail_at
        self._down_s = down_s
        self._down_until: float | None = None

    def __call__(
        self, raw: Mapping[str, Any], ref: ReferenceData, now: datetime | None
    ) -> Standardized | Rejected:
        self.calls += 1
        if self.calls == self._fail_at:
            self._down_until = time.monotonic() + self._down_s
        if self._down_until is not None and time.monotonic() < self._down_until:
            self.failures += 1
            raise RegistryError("registry unreachable (test)", retriable=True)
        return _dossier(raw, ref, now)


class Runner:
    """One loop in a thread, as the Faust worker hosts it."""

    def __init__(
        self,
        settings: Settings,
        registry: SchemaRegistryClient,
        *,
        standardizer: Callable[..., Standardized | Rejected] = _dossier,
        batch_size: int = 200,
    ) -> None:
        ref = load_reference()
        pipeline = DatasetPipeline(DOSSIERS, registry, ref, standardizer=standardizer)
        self.core = BatchCore(
            {DOSSIERS.raw_topic: pipeline},
            frozenset(ref.receiving_units),
            contributions=_contributions,
            presence=_presence,
        )
        self.metrics = Metrics()
        self.loop = BatchLoop(
            settings,
            self.metrics,
            self.core,
            {DOSSIERS.raw_topic: DOSSIERS},
            batch_size=batch_size,
        )
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def consumed(self) -> float:
        return (
            self.metrics.registry.get_sample_value(
                "databus_events_consumed_total", {"dataset": DOSSIERS.id, "stage": "raw"}
            )
            or 0.0
        )

    def wait_batches(self, check: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert self.thread.is_alive(), "the loop died"
            assert time.monotonic() < deadline, "timed out waiting for the loop"
            time.sleep(0.2)  # polling a condition with a deadline

    def stop(self) -> None:
        self.loop.stop_event.set()
        self.thread.join(60)


@pytest.fixture
def settings(stack_settings: Settings) -> Iterator[Settings]:
    yield loop_settings(stack_settings)


def loop_settings(stack_settings: Settings) -> Settings:
    """A processor group of its own, with the dossier topics and the processor's."""
    s = stack_settings.model_copy(update={"processor_group": f"t-loop-{uuid.uuid4().hex[:8]}"})
    n = s.kafka.partitions
    ensure_topics(
        s,
        [
            *processor_topics(s),
            TopicSpec(changelog_topic(s.processor_group, DOSSIERS.id), n, compact=True),
            *(
                TopicSpec(t, n)
                for t in (DOSSIERS.raw_topic, DOSSIERS.std_topic, DOSSIERS.dlq_topic)
            ),
        ],
    )
    return s


def start_group_at(settings: Settings, raw_start: dict[int, int]) -> None:
    """The loop's group starts at these raw offsets, not at other tests' records."""
    probe = Consumer(
        {**settings.kafka.client_config(), "group.id": f"{settings.processor_group}-standardize"}
    )
    probe.commit(
        offsets=[TopicPartition(DOSSIERS.raw_topic, p, o) for p, o in raw_start.items()]
        + [
            TopicPartition(DOSSIERS.raw_topic, p, 0)
            for p in range(settings.kafka.partitions)
            if p not in raw_start
        ],
        asynchronous=False,
    )
    probe.close()


def net_status_deltas(settings: Settings) -> dict[str, int]:
    """Per unit, the sum of the signs of the test rule's deltas."""
    net: dict[str, int] = {}
    for m in read_topic(settings, rule_deltas_topic(settings.processor_group)):
        body = json.loads(m.value())
        if body["group"] != "test_status":
            continue
        for d in body["deltas"]:
            net[body["key"]] = net.get(body["key"], 0) + d["sign"]
    return net


def dossiers_per_unit(events: list[DossierEvent]) -> dict[str, int]:
    truth: dict[str, set[str]] = {}
    for e in events:
        truth.setdefault(e.dossier.receiving_unit_code, set()).add(e.dossier.dossier_id)
    return {unit: len(ids) for unit, ids in truth.items()}


def publish(settings: Settings, events: list[DossierEvent], repeat_ids: bool = False) -> None:
    with Publisher(settings, source_system="loop-test") as pub:
        for ev in events:
            pub.publish(
                DOSSIERS,
                ev.dossier,
                version=ev.version,
                op=ev.op,
                changed_at=ev.at,
                event_id=ev.event_id,
            )


def test_loop_standardizes_dedups_and_survives_a_restart(settings: Settings) -> None:
    registry = registry_client(settings.schema_registry.client_config())
    std_start = ends(settings, DOSSIERS.std_topic)
    dlq_start = ends(settings, DOSSIERS.dlq_topic)
    raw_start = ends(settings, DOSSIERS.raw_topic)
    # A fixed seed whose history holds both kinds (the topics are this module's own).
    events = generate_dossiers(
        DossierSpec(days=5, units=4, dossiers_per_unit_per_day=3.0, seed=13), load_reference()
    )
    valid = [e for e in events if e.expect_reason is None]
    invalid = [e for e in events if e.expect_reason is not None]
    assert valid and invalid
    start_group_at(settings, raw_start)

    half = len(events) // 2
    publish(settings, events[:half])
    first = Runner(settings, registry)
    first.wait_batches(lambda: first.consumed() >= half)
    first.stop()
    # A second worker takes over: it restores the entity state from the changelog.
    second = Runner(settings, registry)
    publish(settings, events[half:])
    # Every event again (a source that re-sends everything): all duplicates.
    publish(settings, events)
    second.wait_batches(lambda: second.consumed() >= len(events) * 2 - half)
    second.stop()
    # The loop's own stamps: given partitions (state restored), then its last batch.
    stamp = second.metrics.registry.get_sample_value
    assigned = stamp("databus_processor_assigned_timestamp_seconds") or 0.0
    last_batch = stamp("databus_processor_last_batch_timestamp_seconds") or 0.0
    assert 0 < assigned <= last_batch <= time.time()
    assert second.loop.processed == len(events) * 2 - half
    assert 0 < second.loop.assigned_monotonic <= second.loop.last_batch_monotonic

    std = read_topic(settings, DOSSIERS.std_topic, std_start)
    dlq = read_topic(settings, DOSSIERS.dlq_topic, dlq_start)
    std_ids = [dict(m.headers())["ce_originid"].decode() for m in std]
    assert sorted(std_ids) == sorted(e.event_id for e in valid), "each valid event exactly once"
    reasons = sorted(dict(m.headers())["databus.errors.reason"].decode() for m in dlq)
    # Invalid events are not remembered: the re-sent copies are dead-lettered again.
    assert reasons == sorted([e.expect_reason or "" for e in invalid] * 2)

    def dropped(reason: str) -> float:
        return (
            second.metrics.registry.get_sample_value(
                "databus_events_dropped_total", {"dataset": DOSSIERS.id, "reason": reason}
            )
            or 0.0
        )

    # Re-sent: each dossier's newest version is a duplicate, its older ones are stale.
    assert dropped("duplicate") == len({e.dossier.dossier_id for e in valid})
    assert dropped("duplicate") + dropped("stale") == len(valid)

    # Rule deltas: per unit, the sum of signs equals the number of dossiers (each
    # dossier's latest status counts once), whatever order and replays happened.
    assert net_status_deltas(settings) == dossiers_per_unit(valid)


def test_a_registry_outage_with_work_in_flight_loses_and_double_counts_nothing(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """Small batches (10 records) make several groups be in flight when the registry
    goes down for a second: all of them are recalled, rolled back and processed again.
    Std records may repeat (at least once); state, counts and rule deltas may not."""
    registry = registry_client(settings.schema_registry.client_config())
    std_start = ends(settings, DOSSIERS.std_topic)
    start_group_at(settings, ends(settings, DOSSIERS.raw_topic))
    events = generate_dossiers(
        DossierSpec(days=4, units=4, dossiers_per_unit_per_day=4.0, seed=29, bad_share=0.0),
        load_reference(),
    )
    valid = [e for e in events if e.expect_reason is None]
    publish(settings, events)
    flaky = FlakyRegistry(fail_at=len(events) // 2, down_s=1.0)
    runner = Runner(settings, registry, standardizer=flaky, batch_size=10)
    try:
        runner.wait_batches(lambda: runner.consumed() >= len(events))
    finally:
        runner.stop()
    assert flaky.failures > 0, "the outage happened"
    retried = [
        int(cast(int, r.args[0]))
        for r in caplog.records
        if r.msg.startswith("batch of") and isinstance(r.args, tuple)
    ]
    assert max(retried) > 10, f"earlier batches in flight were recalled too: {retried}"
    std = read_topic(settings, DOSSIERS.std_topic, std_start)
    assert {dict(m.headers())["ce_originid"].decode() for m in std} == {e.event_id for e in valid}
    assert runner.consumed() == len(events), "each record counted once"
    assert net_status_deltas(settings) == dossiers_per_unit(valid)


def test_a_broken_record_does_not_stop_the_loop(settings: Settings) -> None:
    registry = registry_client(settings.schema_registry.client_config())
    dlq_start = ends(settings, DOSSIERS.dlq_topic)
    runner = Runner(settings, registry)
    try:
        producer = Producer(producer_config(settings))
        tag = uuid.uuid4().hex.encode()
        for value in (b"", b"\x01garbage", b"\x00\x00\x00\x00\x01"):
            producer.produce(DOSSIERS.raw_topic, key=tag, value=value)
        producer.flush(10)
        runner.wait_batches(
            lambda: (
                len(
                    [
                        m
                        for m in read_topic(settings, DOSSIERS.dlq_topic, dlq_start)
                        if m.key() == tag
                    ]
                )
                == 3
            )
        )
    finally:
        runner.stop()
