"""End-to-end throughput: Publisher → Faust processor → IOC store sink, on the embedded stack.

Prints events/s for each stage and the ratio to a baseline measured in the same
run on the same broker: a plain confluent-kafka loop that produces the same
number of pre-encoded records and consumes them back (no validation, no
standardization, no Redis). Machines here are shared and noisy: read the
ratios, not the absolute figures.

    .venv/bin/python bench/end_to_end.py [--days 40] [--per-day 3] [--quick]

``--quick``: 10 days (about 1,400 events).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import runs
from compat import (
    CLI_MODULE,
    DossierSpec,
    LocalStack,
    TopicSpec,
    bus_topics,
    ensure_topics,
    free_port,
    generate_dossiers,
    load_reference,
    producer_config,
    publish_records,
    scrape,
)
from confluent_kafka import Consumer, Producer

from bus.settings import load_settings
from producers.publisher import Publisher

DS = "publicservice.dossiers"


def baseline(settings: object, n: int, value: bytes) -> tuple[float, float]:
    """Plain client loop: produce n records, then consume them back. Returns (prod/s, cons/s)."""
    topic = f"bench.baseline.raw.v1.{time.monotonic_ns()}"
    ensure_topics(settings, [TopicSpec(topic, settings.kafka.partitions)])  # type: ignore[attr-defined, arg-type]
    producer = Producer(producer_config(settings))  # type: ignore[arg-type]
    t0 = time.perf_counter()
    for i in range(n):
        while True:
            try:
                producer.produce(topic, value=value, key=str(i % 997).encode())
                break
            except BufferError:
                producer.poll(0.05)
        producer.poll(0)
    producer.flush()
    produced = n / (time.perf_counter() - t0)
    consumer = Consumer(
        {
            **settings.kafka.client_config(),  # type: ignore[attr-defined]
            "group.id": topic,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.subscribe([topic])
    got, t0 = 0, 0.0
    while got < n:
        batch = sum(1 for m in consumer.consume(1000, 1.0) if not m.error())
        if batch and not got:
            t0 = time.perf_counter()  # from the first record: the group join is not throughput
        got += batch
    consumed = n / (time.perf_counter() - t0)
    consumer.close()
    return produced, consumed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--days", type=int, default=40)
    ap.add_argument("--per-day", type=float, default=3.0)
    runs.add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.days = 10
    run = runs.Run.from_args("end_to_end", args)
    events = generate_dossiers(
        DossierSpec(days=args.days, dossiers_per_unit_per_day=args.per_day, seed=3),
        load_reference(),
    )
    n = len(events)
    # The warm-up reuses some dossier ids of the measured history with other content:
    # those arrive as stale or conflicting versions (dropped or dead-lettered), counted.
    warmup = generate_dossiers(DossierSpec(days=3, units=3, seed=99), load_reference())
    with tempfile.TemporaryDirectory() as tmp:
        requested = load_settings(
            data_dir=Path(tmp),
            kafka={"bootstrap_servers": None},
            redis={"url": None},
            schema_registry={"url": None},
        )
        with LocalStack(requested) as stack:
            s = stack.settings
            ensure_topics(s, bus_topics(s))
            procs, ports = [], {}
            for name, argv in {"processor": ["process"], "sink": ["sink", "ioc"]}.items():
                ports[name] = free_port()
                env = {**stack.env(), "DATABUS_METRICS__PORT": str(ports[name])}
                log = (Path(tmp) / f"{name}.log").open("wb")
                procs.append(
                    subprocess.Popen(
                        [sys.executable, "-m", CLI_MODULE, *argv],
                        env=env,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                    )
                )
            try:
                std = f"databus_events_produced_total{{dataset={DS},stage=std}}"

                def wait_done(published: int, started: float) -> tuple[float, float]:
                    """Seconds until the processor handled ``published`` events, and
                    until the sink wrote all the processor produced."""
                    t_proc = None
                    while True:
                        m = scrape([ports["processor"]])
                        done = (
                            m.get(std, 0)
                            + m.get("databus_events_dead_lettered_total", 0)
                            + m.get("databus_events_dropped_total", 0)
                        )
                        if t_proc is None and done >= published:
                            t_proc = time.perf_counter() - started
                        target = m.get(std, 0) + m.get("databus_alerts_total", 0)
                        sink = scrape([ports["sink"]])
                        written = sink.get("databus_sink_records_written_total", 0)
                        if t_proc is not None and written >= target:
                            return t_proc, time.perf_counter() - started
                        if time.perf_counter() - started > 900:
                            raise SystemExit("bench: timed out waiting for the bus")
                        time.sleep(0.05)  # polling period of the metrics endpoints

                # Warm-up: group joins and schema registration happen before the clock.
                with Publisher(s, source_system="bench") as pub:
                    publish_records(pub, warmup)
                wait_done(len(warmup), time.perf_counter())
                t0 = time.perf_counter()
                with Publisher(s, source_system="bench") as pub:
                    publish_records(pub, events)
                t_pub = time.perf_counter() - t0
                t_proc, t_sink = wait_done(len(warmup) + n, t0)
            finally:
                for p in procs:
                    p.terminate()
                for p in procs:
                    p.wait(30)
            sample = events[0].dossier.model_dump_json().encode()
            base_prod, base_cons = baseline(s, n, sample)

    pub_rate, proc_rate, e2e_rate = n / t_pub, n / t_proc, n / t_sink
    print(f"events: {n}")
    print(f"{'stage':<44}{'events/s':>12}{'ratio to baseline':>20}")
    rows = [
        ("baseline: plain produce loop", base_prod, base_prod),
        ("baseline: plain consume loop", base_cons, base_cons),
        ("Publisher (validate + Avro + registry)", pub_rate, base_prod),
        ("through the processor (publish start → std)", proc_rate, base_cons),
        ("end to end (publish start → in Redis)", e2e_rate, base_cons),
    ]
    for label, rate, base in rows:
        print(f"{label:<44}{rate:>12,.0f}{rate / base:>20.2f}")
    produce, consume = "plain produce loop (baseline)", "plain consume loop (baseline)"
    run.figure(produce, base_prod, "events/s")
    run.figure(consume, base_cons, "events/s")
    run.figure("Publisher", pub_rate, "events/s", baseline=produce)
    run.figure("through the processor", proc_rate, "events/s", baseline=consume)
    run.figure("end to end (in Redis)", e2e_rate, "events/s", baseline=consume)
    run.write(args)


if __name__ == "__main__":
    main()
