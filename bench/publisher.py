"""Publisher throughput vs confluent-kafka producing the same pre-encoded bytes.

Both run in this process against the same embedded broker, one after the other,
with the same producer settings (idempotent, acks=all, murmur2_random). The
Publisher does per event what a source system needs: pydantic re-validation,
the envelope, Avro encoding (Confluent framing), CloudEvents headers; it runs
once event by event (``publish``) and once in batches (``publish_many``).
Each side is warmed up first (registry registration, broker connections, the first
batches; ``--warmup`` events, not timed): without it, whichever runs first pays it.

    .venv/bin/python bench/publisher.py [--events 50000] [--quick]

``--quick``: 5,000 events, 500 of warm-up.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import cast

import runs
from compat import (
    DossierSpec,
    LocalStack,
    TopicSpec,
    ensure_topics,
    generate_dossiers,
    load_reference,
    producer_config,
)
from confluent_kafka import Consumer, Producer

from bus.settings import Settings, load_settings
from producers.publisher import Change, Publisher
from schemas.catalog import DOSSIERS


def capture(
    settings: Settings, n: int
) -> list[tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]]:
    """The exact records the Publisher wrote (key, value, headers), read back."""
    consumer = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"bench-capture-{time.monotonic_ns()}",
            "auto.offset.reset": "earliest",
            "fetch.wait.max.ms": 10,
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([DOSSIERS.raw_topic])
    out: list[tuple[bytes, bytes, list[tuple[str, str | bytes | None]]]] = []
    while len(out) < n:
        for m in consumer.consume(1000, 1.0):
            if not m.error():
                headers = cast(list[tuple[str, str | bytes | None]], m.headers() or [])
                out.append((m.key() or b"", m.value() or b"", list(headers)))
    consumer.close()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--batch", type=int, default=500, help="changes per publish_many call")
    ap.add_argument("--warmup", type=int, default=2_000, help="untimed events before each side")
    runs.add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.events, args.warmup = 5_000, 500
    run = runs.Run.from_args("publisher", args)
    events = generate_dossiers(DossierSpec(days=365, dossiers_per_unit_per_day=3), load_reference())
    events = (events * (args.events // len(events) + 1))[: args.events]
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
            ensure_topics(s, [TopicSpec(DOSSIERS.raw_topic, s.kafka.partitions)])
            warm = events[: args.warmup]
            with Publisher(s, source_system="bench") as pub:
                for ev in warm:
                    pub.publish(
                        DOSSIERS, ev.dossier, version=ev.version, op=ev.op, changed_at=ev.at
                    )
                pub.flush()
                t0 = time.perf_counter()
                for ev in events:
                    pub.publish(
                        DOSSIERS, ev.dossier, version=ev.version, op=ev.op, changed_at=ev.at
                    )
                pub.flush()
                t_pub = time.perf_counter() - t0
                changes = [
                    Change(ev.dossier, version=ev.version, op=ev.op, changed_at=ev.at)
                    for ev in events
                ]
                t0 = time.perf_counter()
                for i in range(0, n, args.batch):
                    pub.publish_many(DOSSIERS, changes[i : i + args.batch])
                pub.flush()
                t_many = time.perf_counter() - t0
            records = capture(s, n)
            size = sum(len(v) for _, v, _ in records) / n
            topic = "bench.preencoded.raw.v1"
            ensure_topics(s, [TopicSpec(topic, s.kafka.partitions)])
            producer = Producer(producer_config(s))
            for key, value, headers in records[: args.warmup]:
                producer.produce(topic, value=value, key=key, headers=headers)
                producer.poll(0)
            producer.flush()
            t0 = time.perf_counter()
            for key, value, headers in records:
                while True:
                    try:
                        producer.produce(topic, value=value, key=key, headers=headers)
                        break
                    except BufferError:
                        producer.poll(0.05)
                producer.poll(0)
            producer.flush()
            t_raw = time.perf_counter() - t0
    pub_rate, many_rate, raw_rate = n / t_pub, n / t_many, n / t_raw
    print(f"events: {n}, mean Avro value {size:.0f} bytes")
    print(f"{'':<44}{'events/s':>12}{'ratio':>8}")
    print(f"{'confluent-kafka, pre-encoded (baseline)':<44}{raw_rate:>12,.0f}{1:>8.2f}")
    label = "Publisher (validate + envelope + Avro)"
    print(f"{label:<44}{pub_rate:>12,.0f}{pub_rate / raw_rate:>8.2f}")
    label = f"Publisher.publish_many (batches of {args.batch})"
    print(f"{label:<44}{many_rate:>12,.0f}{many_rate / raw_rate:>8.2f}")
    base = "confluent-kafka pre-encoded (baseline)"
    run.figure(base, raw_rate, "events/s")
    run.figure("Publisher.publish", pub_rate, "events/s", baseline=base)
    run.figure("Publisher.publish_many", many_rate, "events/s", baseline=base)
    run.figure("mean Avro value", size, "bytes", better="lower")
    run.write(args)


if __name__ == "__main__":
    main()
