"""Entity state: the local RocksDB store against the old all-in-memory dicts, same run.

For each size N (entities), against the embedded broker:

1. an entity changelog of ~3 records per entity (versions 1, 2, 3 of each, 4
   partitions), as the processor writes it (``Entity.to_json``, real-sized
   contributions); the keys of a set of real dossier events are among the entities
   (at version 0, so that each event is a new version of a known entity: a state read);
2. in a fresh process each (so that RSS is the restore's own):
   - ``memory``: the old way — replay the whole changelog into dicts;
   - ``empty disk``: the store, rebuilt from the whole changelog into an empty
     directory;
   - ``local store``: the store again, from the directory the previous process left,
     after ``--tail`` more changelog records were written: only the tail is replayed;
   - ``snapshot``: the previous process then wrote a snapshot of every partition
     (timed), ``--tail`` more records were written, and a process with an empty
     directory restores from the snapshot and the changelog after it;
   each then processes the same raw dossier events through the processor's core
   (decode, dedup against the state, standardize, contributions, stats; state groups
   of 20 batches of 500, committed to the store as the loop does), CPU only, no writes;
3. reports restore seconds, changelog records replayed, the process's RSS after the
   restore and after processing, and events/s; JSON to bench/results/state-<time>.json.

    .venv/bin/python bench/state.py [--sizes 100000,1000000] [--events 20000]
        [--tail 10000] [--cache-entries 200000] [--memory-max 1000000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psutil
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.kafka_client import producer_config
from bus.metrics import Metrics
from bus.settings import Settings, load_settings
from bus.topic_admin import TopicSpec, ensure_topics
from databus.local_stack import LocalStack
from producers.publisher import Publisher
from producers.simulators import DossierSpec, generate_dossiers, publish_records
from schemas.catalog import DOSSIERS
from schemas.domain.reference import load_reference
from schemas.topics import bus_topics, changelog_topic
from stream_processors.alerts.facts import contributions
from stream_processors.batch_core import BatchCore, BatchOutput
from stream_processors.batch_loop import BatchLoop, raw_records, tune_gc_for_batches
from stream_processors.entity_state import Entity
from stream_processors.pipeline import DatasetPipeline
from stream_processors.quality import field_presence
from stream_processors.state_store import EntityStore

PARTITIONS = 4
RESULTS = Path(__file__).parent / "results"
_GROUP_BATCHES = 20


def _rss_mb() -> float:
    return float(psutil.Process().memory_info().rss) / 1e6


def _entity(i: int, version: int) -> bytes:
    unit = f"DNA.U{i % 97:02d}"
    c = [("dossier_unit", unit, {"k": "open", "due_ms": 1_760_000_000_000 + i})]
    p = [("dossier_unit", unit, {"k": "received", "due_ms": 1_760_000_000_000 + i})]
    e = Entity(version, str(uuid.UUID(int=i * 4 + version)), f"{i:024x}", i * 3 + version, c, p)
    return e.to_json()


def populate(settings: Settings, group: str, n: int, real_keys: list[bytes]) -> int:
    """~3 changelog records per entity; the real dossiers' keys at version 0."""
    topic = changelog_topic(group, DOSSIERS.id)
    ensure_topics(settings, [TopicSpec(topic, PARTITIONS, compact=True)])
    producer = Producer({**producer_config(settings), "linger.ms": 50, "batch.num.messages": 10000})
    written = 0

    def send(key: bytes, value: bytes) -> None:
        nonlocal written
        partition = (hash(key) & 0x7FFFFFFF) % PARTITIONS
        while True:
            try:
                producer.produce(topic, value, key, partition)
                break
            except BufferError:
                producer.poll(0.05)
        written += 1
        if written % 100_000 == 0:
            producer.poll(0)

    for version in (1, 2, 3):
        for i in range(n - len(real_keys)):
            send(b"SYN-%d" % i, _entity(i, version))
    for j, key in enumerate(real_keys):
        send(key, _entity(n + j, 0))
    assert producer.flush(600) == 0
    return written


def wait_for_merges(log: Path, since: int, quiet_s: float = 90.0, limit_s: float = 1800.0) -> float:
    """Wait until the embedded broker's storage has merged the small batches a bulk
    load leaves (its log says a round merged and none is left), or until ``quiet_s``
    passes with no merge at all (nothing to merge); returns the seconds waited. A
    changelog written over months is merged as it goes: the restores are measured on
    that, not on a backlog the storage is still working through."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        text = log.read_text(errors="replace")[since:] if log.exists() else ""
        merges = [line for line in text.splitlines() if "merged into larger" in line]
        if merges and "next round" not in merges[-1]:
            break
        if not merges and time.monotonic() - started > quiet_s:
            break
        time.sleep(1.0)
    return time.monotonic() - started


def append_tail(settings: Settings, group: str, n: int, count: int) -> None:
    topic = changelog_topic(group, DOSSIERS.id)
    producer = Producer(producer_config(settings))
    for i in range(count):
        key = b"SYN-%d" % (i * 7 % max(1, n // 2))
        while True:
            try:
                producer.produce(topic, _entity(i, 4), key, (hash(key) & 0x7FFFFFFF) % PARTITIONS)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(120) == 0


# ---- the child: one restore and one processing pass, in a process of its own
def child(args: argparse.Namespace) -> dict[str, Any]:
    tune_gc_for_batches()
    settings = load_settings()
    settings = settings.model_copy(update={"processor_group": args.group})
    registry = SchemaRegistryClient(settings.schema_registry.client_config())
    ref = load_reference()
    core = BatchCore(
        {DOSSIERS.raw_topic: DatasetPipeline(DOSSIERS, registry, ref)},
        frozenset(ref.receiving_units),
        contributions=contributions,
        presence=field_presence,
    )
    # the raw events, read before the restore (not part of any figure)
    reader = Consumer(
        {**settings.kafka.client_config(), "group.id": f"bench-{uuid.uuid4().hex[:6]}"}
    )
    reader.assign([TopicPartition(DOSSIERS.raw_topic, p, 0) for p in range(PARTITIONS)])
    msgs: list[Any] = []
    deadline = time.monotonic() + 120
    while len(msgs) < args.events and time.monotonic() < deadline:
        msgs += [m for m in reader.consume(1000, 1.0) if not m.error()]
    reader.close()
    rss_before = _rss_mb()
    store = (
        EntityStore(Path(args.dir), cache_entries=args.cache_entries)
        if args.mode != "memory"
        else None
    )
    loop = BatchLoop(settings, Metrics(), core, {DOSSIERS.raw_topic: DOSSIERS}, store=store)
    started = time.perf_counter()
    loop._on_assign(None, [TopicPartition(DOSSIERS.raw_topic, p) for p in range(PARTITIONS)])  # type: ignore[arg-type]
    restore_s = time.perf_counter() - started
    rss_restored = _rss_mb()
    # processing, as the loop drives the core: batches of 500, groups of 20
    batches = [msgs[i : i + 500] for i in range(0, len(msgs), 500)]
    # The store keeps what this pass commits: saved first and put back after, so that
    # the next process finds the state the changelog made (the same work again).
    saved: dict[tuple[int, bytes], Entity | None] = {}
    if store is not None:
        for m in msgs:
            where = (m.partition(), m.key())
            if where not in saved:
                saved[where] = store.table(DOSSIERS.raw_topic, where[0]).get(where[1])
    started = time.perf_counter()
    cpu_started = time.process_time()  # every thread of the process: RocksDB's too
    out = BatchOutput()
    for i, batch in enumerate(batches, 1):
        core.process_into(out, raw_records(batch)[0], int(time.time() * 1000))
        if i % _GROUP_BATCHES == 0 or i == len(batches):
            core.finish(out)
            if store is not None:
                store.commit(out.entities, {})
            core.settle(core.unsettled)
            out = BatchOutput()
    process_s = time.perf_counter() - started
    process_cpu_s = time.process_time() - cpu_started
    result = {
        "mode": args.mode,
        "restore_s": round(restore_s, 2),
        "replayed": loop.last_restore_records,
        "rss_mb_before_restore": round(rss_before),
        "rss_mb_after_restore": round(rss_restored),
        "rss_mb_after_processing": round(_rss_mb()),
        "events": len(msgs),
        "events_per_s": round(len(msgs) / process_s),
        # CPU seconds: less swayed than wall time by other work on a shared machine
        "events_per_cpu_s": round(len(msgs) / process_cpu_s),
    }
    if len(msgs) < args.events:
        # the broker answered slowly (read for 120 s): the events/s of this row are
        # over fewer events than the others', said so in the row
        result["warning"] = f"read {len(msgs)} of {args.events} raw events in 120 s"
    if store is not None:
        for (p, key), entity in saved.items():
            applied = store.applied(DOSSIERS.raw_topic, p)
            value = entity.to_json() if entity is not None else None
            store.apply(DOSSIERS.raw_topic, p, [(key, value)], applied)
        if args.mode == "local":  # then a snapshot of every partition, timed
            started = time.perf_counter()
            for p in range(PARTITIONS):
                loop._snapshot(store, DOSSIERS.raw_topic, p)
            result["snapshot_write_s"] = round(time.perf_counter() - started, 2)
        if args.mode == "snapshot":
            result["entities_from_snapshot"] = loop.last_snapshot_entities
        store.close()
    registry.close()
    return result


def run_child(env: dict[str, str], group: str, mode: str, path: Path, a: argparse.Namespace) -> Any:
    cmd = [
        sys.executable,
        __file__,
        "--child",
        mode,
        "--group",
        group,
        "--dir",
        str(path),
        "--events",
        str(a.events),
        "--cache-entries",
        str(a.cache_entries),
    ]
    log = path.with_name(f"{path.name}-{mode}.log")
    with log.open("w") as err:
        done = subprocess.run(
            cmd, env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=err, text=True
        )
    if done.returncode != 0:
        tail = [line for line in log.read_text().splitlines() if not line.startswith("%")]
        raise SystemExit(f"{mode} child failed ({done.returncode}):\n" + "\n".join(tail[-40:]))
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--tail", type=int, default=10_000)
    ap.add_argument("--cache-entries", type=int, default=200_000)
    ap.add_argument(
        "--memory-max",
        type=int,
        default=1_000_000,
        help="largest size also restored the old way (~1.8 KB of RSS per entity)",
    )
    ap.add_argument(
        "--work",
        type=Path,
        default=None,
        help="a directory for the run's stack and stores, kept afterwards (default: a "
        "temporary one, deleted)",
    )
    ap.add_argument("--child", choices=["memory", "empty", "local", "snapshot"])
    ap.add_argument("--group", default="")
    ap.add_argument("--dir", default="")
    args = ap.parse_args()
    if args.child:
        args.mode = args.child
        print(json.dumps(child(args)))
        return
    sizes = [int(s) for s in args.sizes.split(",")]
    rows: list[dict[str, Any]] = []
    ref = load_reference()
    events = generate_dossiers(DossierSpec(days=365, dossiers_per_unit_per_day=3, seed=5), ref)
    events = [e for e in events if e.expect_reason is None][: args.events]
    real_keys = sorted({e.dossier.dossier_id.encode() for e in events})
    with contextlib.ExitStack() as keep:
        if args.work:  # kept afterwards: the stack's logs, the stores
            args.work.mkdir(parents=True, exist_ok=True)
            tmp = str(args.work)
        else:
            tmp = keep.enter_context(tempfile.TemporaryDirectory())
        requested = load_settings(
            data_dir=Path(tmp) / "stack",
            kafka={"bootstrap_servers": None, "partitions": PARTITIONS},
            redis={"url": "redis://unused:1/0"},
            schema_registry={"url": None},
        )
        with LocalStack(requested) as stack:
            s = stack.settings
            ensure_topics(s, bus_topics(s))
            with Publisher(s, source_system="bench-state") as pub:
                publish_records(pub, events)  # the raw events every child processes
            env = stack.env()
            for n in sizes:
                group = f"bench-state-{n}-{uuid.uuid4().hex[:6]}"
                log = Path(tmp) / "stack" / "logs" / "broker-storage.log"
                since = log.stat().st_size if log.exists() else 0
                started = time.perf_counter()
                written = populate(s, group, n, real_keys)
                populate_s = time.perf_counter() - started
                print(
                    f"{n:,} entities: {written:,} changelog records in {populate_s:.0f} s",
                    flush=True,
                )
                merge_s = wait_for_merges(log, since)
                print(f"  the storage merged the load's small batches in {merge_s:.0f} s")
                path = Path(tmp) / f"store-{n}"
                memory = None
                if n <= args.memory_max:
                    memory = run_child(env, group, "memory", path, args)
                    print("  memory     ", memory, flush=True)
                empty = run_child(env, group, "empty", path, args)
                print("  empty disk ", empty, flush=True)
                append_tail(s, group, n, args.tail)
                local = run_child(env, group, "local", path, args)
                print("  local store", local, flush=True)
                append_tail(s, group, n, args.tail)
                snap = run_child(env, group, "snapshot", Path(tmp) / f"empty-{n}", args)
                print("  snapshot   ", snap, flush=True)
                disk_mb = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
                rows.append(
                    {
                        "entities": n,
                        "changelog_records": written,
                        "populate_s": round(populate_s),
                        "merge_wait_s": round(merge_s),
                        "tail_records": args.tail,
                        "store_disk_mb": round(disk_mb),
                        "memory": memory,
                        "empty_disk": empty,
                        "local_store": local,
                        "empty_disk_from_snapshot": snap,
                        "cpu_throughput_ratio_local_store_vs_memory": (
                            round(local["events_per_cpu_s"] / memory["events_per_cpu_s"], 3)
                            if memory
                            else None
                        ),
                    }
                )
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = RESULTS / f"state-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "bench": "state",
                "cpus": os.cpu_count(),
                "events": args.events,
                "cache_entries": args.cache_entries,
                "broker_storage": load_settings().supervise.embedded_broker_storage,
                "rows": rows,
            },
            indent=2,
        )
    )
    print(f"written {out}")


if __name__ == "__main__":
    main()
