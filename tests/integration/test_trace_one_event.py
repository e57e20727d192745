"""One event followed as ONE trace: publish → processor → Redis, SQL and the health axis.

The real Publisher, broker, registry, batch loop (in a thread, as the Faust worker
hosts it) and sink runners (IOC store on the session's Redis, the shared repository
on SQLite, the health axis on the stand-in receiver); spans recorded in memory.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import pytest
import redis
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydantic import SecretStr

from bus.metrics import Metrics
from bus.settings import HealthAxisSettings, Settings, SinkSettings
from bus.topic_admin import ensure_topics
from databus.standins.health_receiver import HealthReceiver
from producers.publisher import Publisher
from producers.simulators import SimSpec, generate_dataset
from schemas.catalog import get_dataset
from schemas.domain.reference import load_reference
from schemas.topics import bus_topics
from sinks.health_axis import HealthAxisSink
from sinks.ioc import IocStoreSink
from sinks.runner import SinkRunner
from sinks.shared_repo import SharedRepoSink, create_repo_engine
from stream_processors.alerts.facts import contributions
from stream_processors.batch_core import BatchCore
from stream_processors.batch_loop import BatchLoop
from stream_processors.pipeline import DatasetPipeline
from stream_processors.quality import field_presence

pytestmark = pytest.mark.integration

ENCOUNTERS = get_dataset("health.encounters")
SECRET = "tracing-test-secret"
DEADLINE_S = 90.0
FAST = SinkSettings(backoff_initial_s=0.02, backoff_max_s=0.2)


def start_at_end(settings: Settings, group: str, topic: str) -> None:
    """``group`` starts at the end of ``topic``: only what this test publishes flows."""
    probe = Consumer({**settings.kafka.client_config(), "group.id": group})
    try:
        parts = probe.list_topics(topic, timeout=10).topics[topic].partitions
        offsets = []
        for p in parts:
            _low, high = probe.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            offsets.append(TopicPartition(topic, p, max(high, 0)))
        if any(tp.offset > 0 for tp in offsets):  # otherwise the start is the end
            probe.commit(offsets=offsets, asynchronous=False)
    finally:
        probe.close()


def test_one_event_is_one_trace_from_publish_to_every_sink(
    stack_settings: Settings,
    registry_url: str,
    redis_url: str,
    tmp_path: Path,
    spans: InMemorySpanExporter,
) -> None:
    settings = stack_settings.model_copy(
        update={"processor_group": f"t-trace-{uuid.uuid4().hex[:8]}", "sink": FAST}
    )
    ensure_topics(settings, bus_topics(settings))
    registry = SchemaRegistryClient({"url": registry_url})
    ref = load_reference()

    # the processor: the batch loop on the real encounters pipeline
    pipeline = DatasetPipeline(ENCOUNTERS, registry, ref)
    pipeline.register()
    core = BatchCore(
        {ENCOUNTERS.raw_topic: pipeline},
        frozenset(ref.receiving_units),
        contributions=contributions,
        presence=field_presence,
    )
    start_at_end(settings, f"{settings.processor_group}-standardize", ENCOUNTERS.raw_topic)
    loop = BatchLoop(settings, Metrics(), core, {ENCOUNTERS.raw_topic: ENCOUNTERS})
    thread = threading.Thread(target=loop.run, daemon=True)

    # the three sinks, each from the end of the std topic
    client = redis.Redis.from_url(redis_url)
    engine = create_repo_engine(f"sqlite:///{tmp_path / 'repo.sqlite'}")
    receiver = HealthReceiver(client_secret=SECRET)
    runners: list[SinkRunner] = []
    try:
        with receiver:
            axis = HealthAxisSettings(
                url=receiver.url,
                client_secret=SecretStr(SECRET),
                pseudonym_key=SecretStr("pseudonym-key-tracing-test"),
                rate_per_s=1000,
            )
            for name, sink in (
                ("ioc", IocStoreSink(client)),
                ("shared_repo", SharedRepoSink(engine, datasets=[ENCOUNTERS])),
                ("health_axis", HealthAxisSink(axis)),
            ):
                group = f"t-trace-{name}-{uuid.uuid4().hex[:8]}"
                start_at_end(settings, group, ENCOUNTERS.std_topic)
                runners.append(
                    SinkRunner(
                        settings,
                        sink,
                        name=name,
                        topics=[ENCOUNTERS.std_topic],
                        group=group,
                        registry=registry,
                    )
                )
            thread.start()

            record = next(
                r for r in generate_dataset(ENCOUNTERS.id, SimSpec()) if r.expect_reason is None
            )
            with Publisher(settings, source_system="trace-test", registry=registry) as publisher:
                event_id = publisher.publish(
                    ENCOUNTERS, record.record, version=record.version, op=record.op
                )
                publisher.flush()

            def by_name() -> dict[str, list[ReadableSpan]]:
                out: dict[str, list[ReadableSpan]] = {}
                for s in spans.get_finished_spans():
                    if s.attributes and s.attributes.get("databus.event_id") == event_id:
                        out.setdefault(s.name.split(" ")[0], []).append(s)
                        if s.name.startswith("sink "):
                            out.setdefault(s.name.split(" ")[1], []).append(s)
                return out

            deadline = time.monotonic() + DEADLINE_S
            while not {"ioc", "shared_repo", "health_axis"} <= set(by_name()):
                assert time.monotonic() < deadline, f"spans so far: {sorted(by_name())}"
                assert thread.is_alive(), "the batch loop died"
                for runner in runners:
                    runner.poll_once(timeout=0.1)
            assert len(receiver.resources("Encounter")) >= 1
    finally:
        loop.stop_event.set()
        if thread.is_alive():
            thread.join(60)
        for runner in runners:
            runner.close()
        client.close()
        engine.dispose()
        registry.close()

    found = by_name()
    (create,) = found["create"]
    (process,) = found["process"]
    sinks = {name: found[name][0] for name in ("ioc", "shared_repo", "health_axis")}
    trace_id = create.context.trace_id
    assert create.parent is None  # the trace starts at publish
    assert process.context.trace_id == trace_id
    assert process.parent is not None and process.parent.span_id == create.context.span_id
    for name, span in sinks.items():
        assert span.context.trace_id == trace_id, name
        assert span.parent is not None and span.parent.span_id == process.context.span_id, name
        assert span.attributes is not None and span.attributes["databus.sink"] == name

    # The trace as an operator's collector would show it (`pytest -s` prints it).
    for span in [create, process, *sinks.values()]:
        parent = f"{span.parent.span_id:016x}" if span.parent else "-"
        ms = ((span.end_time or 0) - (span.start_time or 0)) / 1e6
        print(
            f"trace {span.context.trace_id:032x} span {span.context.span_id:016x} "
            f"parent {parent} {ms:8.1f} ms  {span.name}"
        )

    # where, never what: no value of the record in any span name or attribute
    values = {
        str(v) for v in record.record.model_dump().values() if isinstance(v, str) and len(v) >= 6
    }
    for span in [create, process, *sinks.values()]:
        shown = {span.name, *(str(v) for v in (span.attributes or {}).values())}
        assert not any(v in s for v in values for s in shown), (span.name, span.attributes)
