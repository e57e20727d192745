"""Processor throughput per worker vs a plain confluent-kafka loop, and latency at a fixed load.

In one run, against the same embedded broker and the same raw dossier records:

- baseline: a plain confluent-kafka loop — consume a batch, Avro decode, a small
  transform (NFC of one text field), Avro encode, idempotent produce, flush, commit;
- the processor's batched loop (``stream_processors.batch_loop``) doing the real
  work: decode, dedup against entity state, full standardization, encode, std/DLQ
  produce, entity changelog, rule deltas and quality stats, flush, commit;
- end-to-end latency at a fixed offered load: records published at ``--rate``/s to a
  real ``databus process`` worker (its own process); latency = std record read back −
  the record's ``ce_time`` (publish time), after a warm-up.

Both loops run on this process's one core, one after the other. Read the ratio;
machines here are shared and noisy.

    .venv/bin/python bench/processor.py [--events 40000] [--rate 2000] [--seconds 15]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from datetime import datetime
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.local_stack import LocalStack
from bus.metrics import Metrics
from bus.settings import Settings, load_settings
from bus.topics import TopicSpec, bus_topics, ensure_topics
from producers.dossier_simulator import SimConfig, generate, publish_events
from producers.publisher import Publisher, producer_config
from schemas.catalog import DOSSIERS, load_schema, value_subject
from schemas.codec import AvroDeserializer, AvroSerializer
from stream_processors.alert_facts import contributions
from stream_processors.batch_core import BatchCore
from stream_processors.batch_loop import BatchLoop, tune_gc_for_batches
from stream_processors.pipeline import DatasetPipeline
from stream_processors.quality import field_presence
from stream_processors.reference import load_reference


def consumer(settings: Settings, group: str) -> Consumer:
    return Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 10,
        }
    )


def plain_loop(settings: Settings, registry: SchemaRegistryClient, n: int, group: str) -> float:
    """events/s of the baseline, from its first record to its last commit."""
    decode = AvroDeserializer(registry, load_schema(DOSSIERS.raw_schema))
    out_topic = "bench.plain.std.v1"
    ensure_topics(settings, [TopicSpec(out_topic, settings.kafka.partitions)])
    encode = AvroSerializer(registry, value_subject(out_topic), load_schema(DOSSIERS.raw_schema))
    producer = Producer(producer_config(settings))
    c = consumer(settings, group)
    c.subscribe([DOSSIERS.raw_topic])
    done, t0 = 0, 0.0
    while done < n:
        msgs = [m for m in c.consume(500, 1.0) if not m.error()]
        if not msgs:
            continue
        if not done:
            t0 = time.perf_counter()
        for m in msgs:
            record = decode(m.value())
            after = record["after"]
            after["applicant_name"] = unicodedata.normalize("NFC", after["applicant_name"])
            producer.produce(out_topic, key=m.key(), value=encode(record))
        producer.flush()
        c.commit(asynchronous=False)
        done += len(msgs)
    elapsed = time.perf_counter() - t0
    c.close()
    return n / elapsed


def make_loop(settings: Settings, registry: SchemaRegistryClient, group: str) -> BatchLoop:
    s = settings.model_copy(update={"processor_group": group})
    ensure_topics(s, bus_topics(s))
    ref = load_reference()
    core = BatchCore(
        {DOSSIERS.raw_topic: DatasetPipeline(DOSSIERS, registry, ref)},
        frozenset(ref.receiving_units),
        contributions=contributions,
        presence=field_presence,
    )
    return BatchLoop(
        s,
        Metrics(),
        core,
        {DOSSIERS.raw_topic: DOSSIERS},
    )


def consumed(loop: BatchLoop) -> float:
    return (
        loop._metrics.registry.get_sample_value(
            "databus_events_consumed_total", {"dataset": DOSSIERS.id, "stage": "raw"}
        )
        or 0.0
    )


def batch_loop(settings: Settings, registry: SchemaRegistryClient, n: int, group: str) -> float:
    loop = make_loop(settings, registry, group)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    t0 = None
    while consumed(loop) < n:
        if t0 is None and consumed(loop) > 0:
            t0 = time.perf_counter()  # from the first batch: group join and restore excluded
        time.sleep(0.01)  # polling the loop's own counter
    elapsed = time.perf_counter() - (t0 or time.perf_counter())
    loop.stop_event.set()
    thread.join(60)
    return n / elapsed


def _commit_at_end(settings: Settings, group: str) -> None:
    """Start ``group`` at the raw topic's end: earlier records are not part of a run."""
    ends: dict[int, int] = {}
    scan = consumer(settings, f"bench-scan-{time.monotonic_ns()}")
    raw_parts = scan.list_topics(DOSSIERS.raw_topic, timeout=10).topics[DOSSIERS.raw_topic]
    scan.assign([TopicPartition(DOSSIERS.raw_topic, p, 0) for p in raw_parts.partitions])
    while batch := scan.consume(1000, 0.5):
        for m in batch:
            if not m.error():
                ends[m.partition()] = max(ends.get(m.partition(), 0), m.offset() + 1)
    scan.close()
    if not ends:
        return  # an empty topic: "earliest" is its end
    starter = consumer(settings, group)
    starter.commit(
        offsets=[TopicPartition(DOSSIERS.raw_topic, p, o) for p, o in ends.items()],
        asynchronous=False,
    )
    starter.close()


def broker_latency(settings: Settings, rate: float, seconds: float) -> list[float]:
    """Baseline: seconds from produce to consume of 300-byte records at ``rate``/s with
    no processing at all — what the broker and the clients themselves take."""
    topic = f"bench.latency.baseline.{time.monotonic_ns()}"
    ensure_topics(settings, [TopicSpec(topic, settings.kafka.partitions)])
    c = consumer(settings, f"bench-lat-base-{time.monotonic_ns()}")
    c.subscribe([topic])
    while not c.assignment():
        c.consume(1, 0.2)  # until the group has assigned the partitions
    lat: list[float] = []
    n = int(rate * seconds)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            for m in c.consume(500, 0.05):
                if not m.error():
                    lat.append(time.time() - m.timestamp()[1] / 1000)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    producer = Producer(producer_config(settings, **{"linger.ms": 1}))
    started = time.monotonic()
    for i in range(n):
        producer.produce(topic, key=str(i).encode(), value=b"x" * 300)
        producer.poll(0)
        ahead = (i + 1) / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)  # pacing the offered load
    producer.flush()
    deadline = time.monotonic() + 30
    while len(lat) < n and time.monotonic() < deadline:
        time.sleep(0.1)  # polling the reader's count
    stop.set()
    t.join()
    c.close()
    return lat


def latency(settings: Settings, env: dict[str, str], rate: float, seconds: float) -> list[float]:
    """Seconds from publish (ce_time) to the std record being readable, at ``rate``/s,
    through a real ``databus process`` worker (its own process, as in production)."""
    group = f"bench-lat-{time.monotonic_ns()}"
    _commit_at_end(settings, f"{group}-standardize")
    s = settings.model_copy(update={"processor_group": group})
    ensure_topics(s, bus_topics(s))
    reader = consumer(settings, f"bench-lat-reader-{time.monotonic_ns()}")
    parts = reader.list_topics(DOSSIERS.std_topic, timeout=10).topics[DOSSIERS.std_topic].partitions
    reader.assign([TopicPartition(DOSSIERS.std_topic, p, 0) for p in parts])
    while reader.consume(1000, 0.5):  # start the reader at the std topic's current end
        pass
    worker = subprocess.Popen(
        [sys.executable, "-m", "bus", "process"],
        env={**env, "DATABUS_PROCESSOR_GROUP": group},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    events = generate(SimConfig(days=365, dossiers_per_unit_per_day=3, seed=21), load_reference())
    valid = [e for e in events if e.expect_reason is None]
    warmup, events = valid[:200], valid[200 : 200 + int(rate * seconds)]
    lat: list[float] = []
    seen = {"warmup": 0}
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            for m in reader.consume(500, 0.1):
                if m.error():
                    continue
                headers = dict(m.headers() or [])
                source = headers["ce_source"]
                if source.startswith(b"/databus/bench-warmup/"):
                    seen["warmup"] += 1
                elif source.startswith(b"/databus/bench-latency/"):
                    sent = datetime.fromisoformat(headers["ce_time"].decode()).timestamp()
                    lat.append(time.time() - sent)

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        # Warm-up: the worker joins its groups and restores before the clock starts.
        with Publisher(settings, source_system="bench-warmup") as pub:
            publish_events(pub, warmup, rate=100)
        deadline = time.monotonic() + 120
        while seen["warmup"] < len(warmup) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the reader's count
        with Publisher(settings, source_system="bench-latency", **{"linger.ms": 1}) as pub:
            publish_events(pub, events, rate=rate)
        deadline = time.monotonic() + 60
        while len(lat) < len(events) and time.monotonic() < deadline:
            time.sleep(0.1)  # polling the reader's count
    finally:
        stop.set()
        t.join()
        reader.close()
        worker.terminate()
        worker.wait(60)
    return lat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    args = ap.parse_args()
    events = generate(SimConfig(days=365, dossiers_per_unit_per_day=3, seed=5), load_reference())
    events = events[: args.events]
    tune_gc_for_batches()  # as the processor process does; both loops run under it
    n = len(events)
    with tempfile.TemporaryDirectory() as tmp:
        requested = load_settings(
            data_dir=Path(tmp),
            kafka={"bootstrap_servers": None},
            redis={"url": "redis://unused:1/0"},
            schema_registry={"url": None},
        )
        with LocalStack(requested) as stack:
            s = stack.settings
            ensure_topics(s, bus_topics(s))
            registry = SchemaRegistryClient(s.schema_registry.client_config())
            # Latency first, on small topics: the embedded broker's fetches slow down as
            # its in-memory topics grow, which a real Kafka's do not.
            base_lat = broker_latency(s, args.rate, args.seconds)
            lat = latency(s, stack.env(), args.rate, args.seconds)
            plain_group = f"bench-plain-{time.monotonic_ns()}"
            loop_group = f"bench-loop-{time.monotonic_ns()}"
            _commit_at_end(s, plain_group)
            _commit_at_end(s, f"{loop_group}-standardize")
            with Publisher(s, source_system="bench") as pub:
                publish_events(pub, events)
            plain = plain_loop(s, registry, n, plain_group)
            loop_rate = batch_loop(s, registry, n, loop_group)
    invalid = sum(1 for e in events if e.expect_reason)
    print(f"events: {n} dossier events ({invalid} invalid by design), one core each")
    print(f"{'':<58}{'events/s':>10}{'ratio':>8}")
    print(
        f"{'plain confluent-kafka loop (decode, NFC, encode, produce)':<58}{plain:>10,.0f}{1:>8.2f}"
    )
    label = "processor batch loop (dedup, standardize, DLQ, state)"
    print(f"{label:<58}{loop_rate:>10,.0f}{loop_rate / plain:>8.2f}")
    print(f"latency at {args.rate:,.0f} events/s offered{'':<14}{'p50 ms':>10}{'p99 ms':>8}")
    for label, sample in (
        ("plain produce → consume (baseline)", base_lat),
        ("publish → std through a processor worker", lat),
    ):
        q = statistics.quantiles(sample, n=100)
        print(f"{label:<58}{q[49] * 1000:>10.0f}{q[98] * 1000:>8.0f}")


if __name__ == "__main__":
    main()
