"""The embedded broker's storage: disk (the object-store stand-in) against memory, same run.

For each storage, alternately (``--rounds`` times, so the load of the moment falls on
both), a fresh broker on a fresh directory:

- start-up (broker and, on disk, its storage) until it answers;
- bulk: ``--records`` records of 300 bytes to one 4-partition topic, linger 5 ms,
  then flushed (what a simulator or the processor does);
- one by one: ``--acked`` records each flushed before the next (what an outbox
  relay or a test does), round-robin over 20 topics;
- read back: every bulk record from the beginning.

Prints the medians per storage and disk ÷ memory (a time ratio: > 1 means disk is
slower); JSON through ``bench/runs.py``.

    .venv/bin/python bench/broker_storage.py [--rounds 3] [--records 50000] [--acked 2000]
    .venv/bin/python bench/broker_storage.py --quick
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import runs
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from databus.local_stack import start_broker

STORAGES = ("memory", "disk")
PHASES = ("start_s", "bulk_s", "one_by_one_s", "read_s")


def one_round(storage: str, where: Path, records: int, acked: int) -> dict[str, float]:
    shutil.rmtree(where, ignore_errors=True)
    where.mkdir(parents=True)
    t0 = time.perf_counter()
    proc, bootstrap = start_broker(where, storage=storage)
    took = {"start_s": time.perf_counter() - t0}
    try:
        admin = AdminClient({"bootstrap.servers": bootstrap})
        topics = [NewTopic("bulk", 4, 1), *(NewTopic(f"one-{i}", 1, 1) for i in range(20))]
        for future in admin.create_topics(topics).values():
            future.result(30)
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
        t0 = time.perf_counter()
        for i in range(records):
            producer.produce("bulk", key=str(i).encode(), value=b"x" * 300)
            if i % 10_000 == 0:
                producer.poll(0)
        assert producer.flush(60) == 0
        took["bulk_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(acked):
            producer.produce(f"one-{i % 20}", value=b"y" * 300)
            assert producer.flush(30) == 0
        took["one_by_one_s"] = time.perf_counter() - t0
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench"})
        consumer.assign([TopicPartition("bulk", p, 0) for p in range(4)])
        got, t0 = 0, time.perf_counter()
        while got < records and time.perf_counter() - t0 < 300:
            got += sum(1 for m in consumer.consume(1000, 0.5) if m.error() is None)
        took["read_s"] = time.perf_counter() - t0
        consumer.close()
        if got < records:
            raise SystemExit(f"{storage}: read {got} of {records} records back")
    finally:
        proc.stop()
    return took


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--records", type=int, default=50_000)
    ap.add_argument("--acked", type=int, default=2_000)
    runs.add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.rounds, args.records, args.acked = 1, 5_000, 200
    run = runs.Run.from_args("broker_storage", args)
    samples: dict[str, list[dict[str, float]]] = {s: [] for s in STORAGES}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            for storage in STORAGES:
                took = one_round(storage, Path(tmp) / storage, args.records, args.acked)
                samples[storage].append(took)
                print(
                    f"round {r + 1} {storage:<6} "
                    + "  ".join(f"{k} {v:.2f}" for k, v in took.items()),
                    flush=True,
                )
    print(f"\n{'median':<14}" + "".join(f"{p:>14}" for p in PHASES))
    for storage in STORAGES:
        medians = {p: statistics.median(t[p] for t in samples[storage]) for p in PHASES}
        print(f"{storage:<14}" + "".join(f"{medians[p]:>14.2f}" for p in PHASES))
        for phase in PHASES:
            base = f"memory {phase}" if storage == "disk" else ""
            run.figure(f"{storage} {phase}", medians[phase], "s", better="lower", baseline=base)
    print(
        f"{'disk ÷ memory':<14}"
        + "".join(
            f"{run.figures[f'disk {p}']['value'] / run.figures[f'memory {p}']['value']:>14.2f}"
            for p in PHASES
        )
    )
    run.write(args)


if __name__ == "__main__":
    main()
