"""Processor throughput per worker vs plain confluent-kafka loops, and latency at a fixed load.

In one run, against the same embedded broker and the same raw dossier records:

- the baseline the issue names, a plain confluent-kafka loop *doing the same work* —
  consume a batch, Avro decode, the dossier standardizer, Avro encode, idempotent
  produce to std (or the original record to the DLQ with its reason headers), flush,
  commit — with none of the processor's state: the ratio's denominator, so the ratio
  is what the processor's framework and guarantees cost;
- for scale, the issue's reference loop with a *small transform* (NFC of one text
  field instead of standardization), with our compiled codec (``schemas.codec.serde``) and
  with confluent-kafka's stock Avro serializers (fastavro-based, what a plain loop gets
  by default): the gap to it is what standardization itself costs;
- the processor's batched loop (``stream_processors.batch_loop``) doing the real
  work: decode, dedup against entity state, full standardization, encode, std/DLQ
  produce, entity changelog, rule deltas and quality stats, flush, commit;
- a real ``databus process`` worker (Faust, the loop, the rules and quality agents),
  twice, over the same records: timed from its loop's first assignment to its own
  stamp of its last batch processed, and how long after its loop the agents finished
  folding what the loop sent them;
- CPU per record without the broker: the same-work loop's work (decode, standardize,
  encode) and the processor's core (``BatchCore`` as the loop drives it) over the
  same consumed records, five passes in alternation in this process — the ratio that
  does not depend on how long the broker's round trips take on a given machine;
- end-to-end latency at a fixed offered load: records published at ``--rate``/s to a
  real ``databus process`` worker (its own process); latency = std record read back −
  the record's ``ce_time`` (publish time), after a warm-up; and, as its baseline, plain
  300-byte records produced and consumed at the same rate with no processing.

The first second of a brand-new idempotent producer is excluded from both latency
samples, the same way: its first records wait for InitProducerId and metadata (~0.5 s
here, against ~15 ms once warm), which says nothing about steady-state latency. Each
latency run first sends ``--rate`` warm-up records (one second's worth) through the
producer it measures, waits until the reader has seen them, and only then sends the
timed records. Both readers drain what is there instead of waiting for a full batch.
The embedded broker's writes slow down as its in-memory topics grow (each produce
request rewrites the partition's offset map), so the p99 of each successive second is
printed too, with the broker's CPU in that second. The producers of both latency runs
use the bus's producer settings (5 ms linger), as a source system's Publisher does.

Every throughput kind is timed the same way: from its partitions being assigned (for
the processor, once its state is restored) to its last batch, so each includes its
first fetch (~0.1 s here). The in-process loops run on this process's one core, one
after the other. Read the ratios; machines here are shared and noisy.

    .venv/bin/python bench/processor.py [--events 40000] [--rate 2000] [--seconds 15]
        [--linger-ms MS] [--skip-latency] [--skip-throughput] [--quick]

``--quick``: throughput only, over 5,000 events, 3 CPU passes (latency on its own:
``--skip-throughput --seconds 4``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, cast

import httpx
import psutil
import runs
from compat import (
    CLI_MODULE,
    DeadLetter,
    DossierEvent,
    DossierSpec,
    LocalStack,
    TopicSpec,
    bus_topics,
    contributions,
    dlq_headers,
    ensure_topics,
    free_port,
    generate_dossiers,
    load_reference,
    producer_config,
    publish_records,
)
from confluent_kafka import Consumer, Message, Producer, TopicPartition
from confluent_kafka.schema_registry import SchemaRegistryClient
from confluent_kafka.schema_registry import avro as stock_avro
from confluent_kafka.serialization import MessageField, SerializationContext
from prometheus_client.parser import text_string_to_metric_families

from bus.consumers import take
from bus.metrics import Metrics
from bus.settings import Settings, load_settings
from producers.publisher import Publisher
from schemas.catalog import DOSSIERS, load_schema, value_subject
from schemas.codec import AvroDeserializer, AvroSerializer
from stream_processors.batch_core import BatchCore, BatchOutput
from stream_processors.batch_loop import BatchLoop, raw_records, tune_gc_for_batches
from stream_processors.pipeline import DatasetPipeline
from stream_processors.quality import field_presence

# A latency sample: (send time, seconds from send until the reader had the record).
Sample = tuple[float, float]
# A plain loop's codec: decode a raw value, encode a record for the out topic.
Codec = tuple[Callable[[bytes | None], Any], Callable[[Any], bytes]]


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


def wait_until(done: Callable[[], bool], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not done() and time.monotonic() < deadline:
        time.sleep(0.1)  # polling a reader thread's count
    return done()


# ---- throughput ---------------------------------------------------------------


def our_codec(registry: SchemaRegistryClient, out_topic: str) -> Codec:
    schema = load_schema(DOSSIERS.raw_schema)
    decode = AvroDeserializer(registry, schema)
    encode = AvroSerializer(registry, value_subject(out_topic), schema)
    return decode, encode


def stock_codec(registry: SchemaRegistryClient, out_topic: str) -> Codec:
    """confluent-kafka's own serializers; the writer registers ``<out_topic>-value``."""
    schema = load_schema(DOSSIERS.raw_schema)  # the schema's JSON text
    de = stock_avro.AvroDeserializer(registry, schema)
    ser = stock_avro.AvroSerializer(registry, schema)
    raw_ctx = SerializationContext(DOSSIERS.raw_topic, MessageField.VALUE)
    out_ctx = SerializationContext(out_topic, MessageField.VALUE)

    def decode(value: bytes | None) -> Any:
        return de(value, raw_ctx)

    def encode(record: Any) -> bytes:
        out: bytes | None = ser(record, out_ctx)
        assert out is not None
        return out

    return decode, encode


CodecFactory = Callable[[SchemaRegistryClient, str], Codec]


# A plain loop's work on one consumed record: produce what it turns into.
Work = Callable[[Producer, Message], None]
WorkFactory = Callable[[SchemaRegistryClient], Work]


def small_transform(codec: CodecFactory, out_topic: str) -> WorkFactory:
    """Decode, NFC of one text field, encode, produce: the issue's reference loop."""

    def factory(registry: SchemaRegistryClient) -> Work:
        decode, encode = codec(registry, out_topic)

        def work(producer: Producer, m: Message) -> None:
            record = decode(m.value())
            after = record["after"]
            after["applicant_name"] = unicodedata.normalize("NFC", after["applicant_name"])
            producer.produce(out_topic, key=m.key(), value=encode(record))

        return work

    return factory


def same_work(registry: SchemaRegistryClient) -> Work:
    """Decode, the dossier standardizer, encode, produce to std — or the original record
    to the DLQ with its reason headers: what the processor does to each record, with
    none of its state (no dedup, no changelog, no alert or quality aggregates)."""
    pipeline = DatasetPipeline(DOSSIERS, registry, load_reference())

    def work(producer: Producer, m: Message) -> None:
        value, headers = m.value(), cast(list[tuple[str, bytes | None]], m.headers() or [])
        raw = pipeline.decode(value)
        out = raw if isinstance(raw, DeadLetter) else pipeline.standardize(raw, headers)
        if isinstance(out, DeadLetter):
            where: dict[str, Any] = {"topic": m.topic() or "", "partition": m.partition() or 0}
            letter = dlq_headers(headers, **where, offset=m.offset() or 0, letter=out)
            # confluent-kafka stub: produce(headers=) is an invariant List of str|bytes|None
            producer.produce(DOSSIERS.dlq_topic, key=m.key(), value=value, headers=letter)  # type: ignore[arg-type]
        else:
            producer.produce(DOSSIERS.std_topic, key=m.key(), value=out.value, headers=out.headers)  # type: ignore[arg-type]

    return work


def plain_loop(
    settings: Settings,
    registry: SchemaRegistryClient,
    n: int,
    group: str,
    make_work: WorkFactory,
) -> float:
    """events/s of a baseline, from its partitions' assignment to its last commit."""
    work = make_work(registry)
    producer = Producer(producer_config(settings))
    c = consumer(settings, group)
    assigned: list[float] = []
    c.subscribe(
        [DOSSIERS.raw_topic], on_assign=lambda _c, _parts: assigned.append(time.perf_counter())
    )
    done = 0
    while done < n:
        msgs = [m for m in c.consume(500, 1.0) if not m.error()]
        if not msgs:
            continue
        for m in msgs:
            work(producer, m)
        producer.flush()
        c.commit(asynchronous=False)
        done += len(msgs)
    elapsed = time.perf_counter() - assigned[0]
    c.close()
    return n / elapsed


def make_core(registry: SchemaRegistryClient) -> BatchCore:
    """The processor's core for the dossier topic, as ``databus process`` builds it."""
    ref = load_reference()
    return BatchCore(
        {DOSSIERS.raw_topic: DatasetPipeline(DOSSIERS, registry, ref)},
        frozenset(ref.receiving_units),
        contributions=contributions,
        presence=field_presence,
    )


def make_loop(settings: Settings, registry: SchemaRegistryClient, group: str) -> BatchLoop:
    s = settings.model_copy(update={"processor_group": group})
    ensure_topics(s, bus_topics(s))
    return BatchLoop(s, Metrics(), make_core(registry), {DOSSIERS.raw_topic: DOSSIERS})


def batch_loop(settings: Settings, registry: SchemaRegistryClient, n: int, group: str) -> float:
    """Records/s from the loop's partitions being assigned (state restored) to the
    processing of its last batch. Not to the last commit: a state group is committed
    up to 500 ms after its records are processed (alerts lag by that much, see the
    agents' figures), a fixed delay at the end of a run rather than a rate. Polled
    from the loop's own attributes: reading its metrics registry every few ms
    (a collection of every metric) took the GIL from the loop."""
    loop = make_loop(settings, registry, group)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()
    while loop.processed < n:
        time.sleep(0.01)  # polling the loop's own attributes
    last_batch = loop.last_batch_monotonic
    loop.stop_event.set()
    thread.join(60)
    return n / (last_batch - loop.assigned_monotonic)


def _commit_at_end(settings: Settings, group: str) -> None:
    """Start ``group`` at the raw topic's end: earlier records are not part of a run."""
    ends: dict[int, int] = {}
    scan = consumer(settings, f"bench-scan-{time.monotonic_ns()}")
    raw_parts = scan.list_topics(DOSSIERS.raw_topic, timeout=10).topics[DOSSIERS.raw_topic]
    scan.assign([TopicPartition(DOSSIERS.raw_topic, p, 0) for p in raw_parts.partitions])
    while batch := scan.consume(1000, 0.5):
        for m in batch:
            if not m.error():
                part, offset = m.partition(), m.offset()
                assert part is not None and offset is not None  # a consumed record has both
                ends[part] = max(ends.get(part, 0), offset + 1)
    scan.close()
    if not ends:
        return  # an empty topic: "earliest" is its end
    starter = consumer(settings, group)
    starter.commit(
        offsets=[TopicPartition(DOSSIERS.raw_topic, p, o) for p, o in ends.items()],
        asynchronous=False,
    )
    starter.close()


@dataclass(frozen=True)
class CpuOnly:
    """CPU per record of the same-work loop's work and of the processor's core over
    the same consumed records, in this process, with no broker in between."""

    same_us: list[float]
    core_us: list[float]

    def ratio(self) -> float:
        return statistics.median(self.same_us) / statistics.median(self.core_us)


_CPU_PASSES = 5  # --quick: 3
_GROUP_BATCHES = 20  # batches per state group, as the loop under load (_GROUP_MAX_BATCHES)


def cpu_only(
    settings: Settings,
    registry: SchemaRegistryClient,
    n: int,
    group: str,
    passes: int = _CPU_PASSES,
) -> CpuOnly:
    """Read the run's ``n`` records once, then pass over them in alternation: the
    same-work loop's per-record work without its produce (decode, standardize,
    encode), and the processor's core as the loop drives it (records of a batch of
    500, ``process_into``, a state group finished every 20 batches) without its
    writes. The ratio is what dedup, entity state, alert contributions, presence
    counts and stats cost on top, free of the broker's round trips and noise."""
    c = consumer(settings, group)
    c.subscribe([DOSSIERS.raw_topic])
    msgs: list[Message] = []
    while len(msgs) < n:
        msgs += [m for m in c.consume(500, 1.0) if not m.error()]
    c.close()
    batches = [msgs[i : i + 500] for i in range(0, len(msgs), 500)]
    pipeline = DatasetPipeline(DOSSIERS, registry, load_reference())
    same_us: list[float] = []
    core_us: list[float] = []
    for _ in range(passes + 1):  # the first pass warms caches up: not counted
        started = time.perf_counter()
        for m in msgs:
            raw = pipeline.decode(m.value())
            if not isinstance(raw, DeadLetter):
                pipeline.standardize(raw, cast(list[tuple[str, bytes | None]], m.headers() or []))
        same_us.append((time.perf_counter() - started) / len(msgs) * 1e6)
        core = make_core(registry)
        started = time.perf_counter()
        out = BatchOutput()
        for i, batch in enumerate(batches, 1):
            core.process_into(out, raw_records(batch)[0], int(time.time() * 1000))
            out.std.clear()
            out.std_from.clear()
            if i % _GROUP_BATCHES == 0 or i == len(batches):
                core.finish(out)
                core.settle(core.unsettled)
                out = BatchOutput()
        core_us.append((time.perf_counter() - started) / len(msgs) * 1e6)
    return CpuOnly(same_us[1:], core_us[1:])


@dataclass(frozen=True)
class WorkerRun:
    """A real ``databus process`` worker over pre-published records: how fast its loop
    takes them, and how far behind the loop its Faust stages (alert rules, quality)
    finish folding what the loop sent them."""

    rate: float  # records/s, the loop's first batch to its last
    quality_behind_s: float  # quality agent had every record's stats, after the loop
    rules_behind_s: float  # rules agent applied its last delta, after the loop
    deltas: int  # rule deltas the rules agent applied


def _samples(port: int, *names: str) -> list[Any]:
    """The samples called any of ``names`` on a worker's ``/metrics`` (one scrape)."""
    body = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text
    return [
        sample
        for family in text_string_to_metric_families(body)
        for sample in family.samples
        if sample.name in names
    ]


def _scrape(port: int) -> tuple[dict[tuple[str, str], float], float, float]:
    """``databus_events_consumed_total`` of a worker, by (dataset or rule group, stage)
    (records are counted once their state group is committed, up to 500 ms after they
    are processed); the wall-clock times its loop was given partitions (after restoring
    their state, right before it takes records) and last processed a batch."""
    assigned, last_batch = (
        "databus_processor_assigned_timestamp_seconds",
        "databus_processor_last_batch_timestamp_seconds",
    )
    consumed: dict[tuple[str, str], float] = {}
    stamps = {assigned: 0.0, last_batch: 0.0}
    for sample in _samples(port, "databus_events_consumed_total", assigned, last_batch):
        if sample.name in stamps:
            stamps[sample.name] = sample.value
        else:
            consumed[(sample.labels["dataset"], sample.labels["stage"])] = sample.value
    return consumed, stamps[assigned], stamps[last_batch]


# While the loop works, scrape rarely: a scrape of the whole registry costs the worker
# ~7 ms of the GIL (at 0.1 s, ~7 % of a run). Once it is done, watch the agents closely.
_SCRAPE_WORKING_S = 0.5
_SCRAPE_EVERY_S = 0.1
_RULES_SETTLED_S = 3.0  # no rule delta applied for this long: the rules agent is done


def start_worker(
    env: dict[str, str], group: str, log: Path | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """A ``databus process`` worker on ``group`` (its log to ``log``), and the port of
    its metrics."""
    port = free_port()
    with open(log or os.devnull, "wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "-m", CLI_MODULE, "process"],
            env={**env, "DATABUS_PROCESSOR_GROUP": group, "DATABUS_METRICS__PORT": str(port)},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    return worker, port


def _ready(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def worker_run(settings: Settings, env: dict[str, str], n: int, group: str, log: Path) -> WorkerRun:
    """A worker over the run's records, already on the raw topic (``group`` starts at
    them), like every other kind: timed from its loop's first assignment (after the
    entity state is restored) to its own stamp of its last batch processed. Its
    counters are scraped every 0.5 s while the loop works (a scrape of the whole
    registry costs the worker ~7 ms of the GIL), then every 0.1 s until the agents are
    done; then it is stopped."""
    worker, port = start_worker(env, group, log)
    try:
        started = last_batch = quality_done = rules_moved = 0.0
        rules, raw = 0.0, 0.0
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            time.sleep(_SCRAPE_EVERY_S if raw >= n else _SCRAPE_WORKING_S)
            try:
                counts, started, last_batch = _scrape(port)
            except httpx.HTTPError:
                continue  # not serving yet
            now = time.time()
            raw = counts.get((DOSSIERS.id, "raw"), 0.0)
            if counts.get((DOSSIERS.id, "quality"), 0.0) >= n and not quality_done:
                quality_done = now
            applied = sum(v for (_, stage), v in counts.items() if stage == "rules")
            if applied > rules:
                rules, rules_moved = applied, now
            if raw >= n and quality_done and now - max(rules_moved, last_batch) > _RULES_SETTLED_S:
                break
        else:
            raise RuntimeError(f"worker did not finish {n} records in 300 s (log: {log})")
    finally:
        worker.terminate()
        worker.wait(60)
    # The agents' figures are known to the scrape period (0.5 s while the loop worked).
    return WorkerRun(
        rate=n / (last_batch - started),
        quality_behind_s=max(0.0, quality_done - last_batch),
        rules_behind_s=max(0.0, rules_moved - last_batch),
        deltas=int(rules),
    )


@dataclass(frozen=True)
class Throughput:
    runs: dict[str, list[float]]  # events/s of each run, by kind
    workers: list[WorkerRun]
    cpu: CpuOnly

    def mean(self, kind: str) -> float:
        return statistics.fmean(self.runs[kind])


SAME, LOOP, WORKER = "same", "loop", "worker"
# Each kind's runs sit at the same mean position: the embedded broker slows down as its
# in-memory topics grow, so a kind run only early (or late) would look faster (slower).
ORDER = [SAME, LOOP, WORKER, "ours", "stock", "ours", WORKER, LOOP, SAME]
_PLAIN_OUT = {"ours": "bench.plain.std.v1", "stock": "bench.plain.stock.v1"}


def throughput(
    settings: Settings,
    env: dict[str, str],
    registry: SchemaRegistryClient,
    events: list[DossierEvent],
    broker: psutil.Process,
    cpu_passes: int = _CPU_PASSES,
) -> Throughput:
    """Every kind over the same ``events``, each run from a group of its own committed
    at their start before they are published, in ``ORDER``; with the CPU the broker
    spent during each run (start-up and tear-down included)."""
    n = len(events)
    stamp = time.monotonic_ns()
    groups = [f"bench-{kind}-{i}-{stamp}" for i, kind in enumerate(ORDER)]
    ensure_topics(settings, [TopicSpec(t, settings.kafka.partitions) for t in _PLAIN_OUT.values()])
    for kind, group in zip(ORDER, groups, strict=True):
        _commit_at_end(settings, f"{group}-standardize" if kind in (LOOP, WORKER) else group)
    cpu_group = f"bench-cpu-{stamp}"
    _commit_at_end(settings, cpu_group)
    with Publisher(settings, source_system="bench") as pub:
        publish_records(pub, events)
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    works: dict[str, WorkFactory] = {
        SAME: same_work,
        "ours": small_transform(our_codec, _PLAIN_OUT["ours"]),
        "stock": small_transform(stock_codec, _PLAIN_OUT["stock"]),
    }
    rates: dict[str, list[float]] = {kind: [] for kind in ORDER}
    workers: list[WorkerRun] = []
    for kind, group in zip(ORDER, groups, strict=True):
        cpu = cpu_seconds(broker)
        if kind == LOOP:
            rate = batch_loop(settings, registry, n, group)
        elif kind == WORKER:
            workers.append(worker_run(settings, env, n, group, logs / f"{group}.log"))
            rate = workers[-1].rate
        else:
            rate = plain_loop(settings, registry, n, group, works[kind])
        rates[kind].append(rate)
        spent = cpu_seconds(broker) - cpu
        print(
            f"  {kind:<6} {rate:>10,.0f} events/s   broker CPU {spent:5.1f} s",
            file=sys.stderr,
            flush=True,
        )
    return Throughput(rates, workers, cpu_only(settings, registry, n, cpu_group, cpu_passes))


# ---- latency ------------------------------------------------------------------


def warmup_count(rate: float) -> int:
    """Warm-up records per measured producer: one second of the offered load."""
    return max(1, int(rate))


def produce_paced(producer: Producer, topic: str, prefix: bytes, n: int, rate: float) -> None:
    """``n`` 300-byte records keyed ``<prefix><i>`` at ``rate``/s, then flush."""
    started = time.monotonic()
    for i in range(n):
        producer.produce(topic, key=prefix + str(i).encode(), value=b"x" * 300)
        producer.poll(0)
        ahead = (i + 1) / rate - (time.monotonic() - started)
        if ahead > 0:
            time.sleep(ahead)  # pacing the offered load
    producer.flush()


def _linger(linger_ms: float | None) -> dict[str, Any]:
    """Producer overrides for a latency run: none, or another ``linger.ms``. The bus's
    5 ms is the default: 1 ms, which this benchmark used until 2026-12-05, sends the
    embedded broker a produce request every millisecond or so, and each one rewrites
    the partition's offset map — it took the broker to 100–120 % CPU and the baseline's
    p99 from 17 to 48–80 ms."""
    return {} if linger_ms is None else {"linger.ms": linger_ms}


def broker_latency(
    settings: Settings, rate: float, seconds: float, linger_ms: float | None
) -> list[Sample]:
    """Baseline: seconds from produce to consume of 300-byte records at ``rate``/s with
    no processing at all — what the broker and the clients themselves take. Warm-up
    records (key ``w…``) go first from the same producer; only timed ones (``t…``) count."""
    topic = f"bench.latency.baseline.{time.monotonic_ns()}"
    ensure_topics(settings, [TopicSpec(topic, settings.kafka.partitions)])
    c = consumer(settings, f"bench-lat-base-{time.monotonic_ns()}")
    c.subscribe([topic])
    while not c.assignment():
        c.consume(1, 0.2)  # until the group has assigned the partitions
    lat: list[Sample] = []
    seen = {"warmup": 0}
    n, warm = int(rate * seconds), warmup_count(rate)
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            batch = take(c, 500, 0.05)
            now = time.time()
            for m in batch:
                if m.error():
                    continue
                if (m.key() or b"").startswith(b"w"):
                    seen["warmup"] += 1
                else:
                    sent = m.timestamp()[1] / 1000
                    lat.append((sent, now - sent))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        producer = Producer(producer_config(settings, **_linger(linger_ms)))
        produce_paced(producer, topic, b"w", warm, rate)
        wait_until(lambda: seen["warmup"] >= warm, 60)
        produce_paced(producer, topic, b"t", n, rate)
        wait_until(lambda: len(lat) >= n, 30)
    finally:
        stop.set()
        t.join()
        c.close()
    return lat


def _inside(port: int) -> dict[float, float]:
    """The worker's own ``databus_end_to_end_latency_seconds`` histogram for dossiers
    (raw record's timestamp → std acknowledged): cumulative count by bucket bound."""
    return {
        float(sample.labels["le"]): sample.value
        for sample in _samples(port, "databus_end_to_end_latency_seconds_bucket")
        if sample.labels.get("dataset") == DOSSIERS.id
    }


def latency(
    settings: Settings,
    env: dict[str, str],
    rate: float,
    seconds: float,
    linger_ms: float | None,
) -> tuple[list[Sample], dict[float, float]]:
    """Seconds from publish (ce_time) to the std record being readable, at ``rate``/s,
    through a real ``databus process`` worker (its own process, as in production); and
    the worker's own histogram of the timed records (cumulative counts by bound).

    Two warm-ups before the clock starts: one for the worker (group join, restore), from
    its own Publisher; one for the measured Publisher (InitProducerId, metadata), whose
    records are told apart from the timed ones by the raw event's id (a std record's
    ``ce_originid``)."""
    group = f"bench-lat-{time.monotonic_ns()}"
    _commit_at_end(settings, f"{group}-standardize")
    s = settings.model_copy(update={"processor_group": group})
    ensure_topics(s, bus_topics(s))
    reader = consumer(settings, f"bench-lat-reader-{time.monotonic_ns()}")
    parts = reader.list_topics(DOSSIERS.std_topic, timeout=10).topics[DOSSIERS.std_topic].partitions
    reader.assign([TopicPartition(DOSSIERS.std_topic, p, 0) for p in parts])
    while reader.consume(1000, 0.5):  # start the reader at the std topic's current end
        pass
    worker, port = start_worker(env, group)
    events = generate_dossiers(
        DossierSpec(days=365, dossiers_per_unit_per_day=3, seed=21), load_reference()
    )
    valid = [e for e in events if e.expect_reason is None]
    warm = warmup_count(rate)
    worker_warmup, pub_warmup = valid[:200], valid[200 : 200 + warm]
    events = valid[200 + warm : 200 + warm + int(rate * seconds)]
    warm_ids = {e.event_id.encode() for e in pub_warmup}
    worker_ids = {e.event_id.encode() for e in worker_warmup}
    timed_ids = {e.event_id.encode() for e in events}
    lat: list[Sample] = []
    seen = {"worker": 0, "publisher": 0}
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            batch = take(reader, 500, 0.05)
            now = time.time()
            for m in batch:
                if m.error():
                    continue
                headers = dict(cast(list[tuple[str, bytes]], m.headers() or []))
                origin = headers["ce_originid"]  # the raw event's id; ce_time is the raw's
                if origin in worker_ids:
                    seen["worker"] += 1
                elif origin in warm_ids:
                    seen["publisher"] += 1
                elif origin in timed_ids:
                    sent = datetime.fromisoformat(headers["ce_time"].decode()).timestamp()
                    lat.append((sent, now - sent))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    try:
        with Publisher(settings, source_system="bench-warmup") as pub:
            publish_records(pub, worker_warmup, rate=100)
        wait_until(lambda: seen["worker"] >= len(worker_warmup), 120)
        with Publisher(settings, source_system="bench-latency", **_linger(linger_ms)) as pub:
            publish_records(pub, pub_warmup, rate=rate)
            wait_until(lambda: seen["publisher"] >= len(pub_warmup), 60)
            before = _inside(port)
            publish_records(pub, events, rate=rate)
        wait_until(lambda: len(lat) >= len(events), 60)
        inside = {le: n - before.get(le, 0.0) for le, n in _inside(port).items()}
    finally:
        stop.set()
        t.join()
        reader.close()
        worker.terminate()
        worker.wait(60)
    return lat, inside


def cpu_seconds(process: psutil.Process) -> float:
    """CPU seconds (user + system) ``process`` has used so far."""
    times = process.cpu_times()
    return float(times.user + times.system)


class CpuSampler:
    """The CPU a process uses (the embedded broker's), sampled every second on a thread
    of its own: (wall time, CPU seconds so far)."""

    def __init__(self, process: psutil.Process) -> None:
        self._process = process
        self.points: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.points.append((time.time(), cpu_seconds(self._process)))
            except psutil.Error:
                return  # the process is gone
            self._stop.wait(1.0)

    def __enter__(self) -> CpuSampler:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def percent_by_second(self, start: float, seconds: int) -> list[int]:
        """CPU % over each second from ``start`` (between the samples around it)."""
        out: list[int] = []
        for k in range(seconds):
            before = [p for p in self.points if p[0] <= start + k]
            after = [p for p in self.points if p[0] >= start + k + 1]
            if not before or not after:
                break
            (t0, c0), (t1, c1) = before[-1], after[0]
            out.append(round(100 * (c1 - c0) / (t1 - t0)))
        return out


@dataclass(frozen=True)
class Summary:
    """Latency quantiles in seconds, and the p99 of each successive second of sends."""

    n: int
    p50: float
    p90: float
    p99: float
    max: float
    p99_by_second: list[float]


def quantile(values: list[float], pct: int) -> float:
    if len(values) < 2:
        return max(values)
    return statistics.quantiles(values, n=100)[pct - 1]


def summarize(sample: list[Sample]) -> Summary | None:
    if not sample:
        return None
    first = min(sent for sent, _ in sample)
    by_second: dict[int, list[float]] = {}
    for sent, lat in sample:
        by_second.setdefault(int(sent - first), []).append(lat)
    values = [lat for _, lat in sample]
    return Summary(
        n=len(values),
        p50=quantile(values, 50),
        p90=quantile(values, 90),
        p99=quantile(values, 99),
        max=max(values),
        p99_by_second=[quantile(by_second[k], 99) for k in sorted(by_second)],
    )


# ---- report -------------------------------------------------------------------


LABELS = {
    SAME: "plain loop doing the same work (decode, standardize, encode, std/DLQ)",
    "ours": "plain loop, small transform, our compiled Avro codec",
    "stock": "plain loop, small transform, stock serializers (fastavro)",
    LOOP: "processor batch loop (same work + dedup, state, quality, alerts)",
    WORKER: "a databus process worker: the loop hosted in Faust, with its agents",
}


def print_throughput(events: list[DossierEvent], r: Throughput) -> None:
    invalid = sum(1 for e in events if e.expect_reason)
    print(f"events: {len(events)} dossier events ({invalid} invalid by design), one core each")
    print("small transform: consume, decode, NFC of one field, encode, produce, flush, commit")
    print(f"runs in the order {', '.join(ORDER)}; events/s is the mean of a kind's runs")
    cols = "".join(f"{h:>9}" for h in ("÷ same", "÷ ours", "÷ stock"))
    print(f"{'':<70}{'events/s':>10}{cols}  runs")
    for kind in (SAME, "ours", "stock", LOOP, WORKER):
        rate = r.mean(kind)
        ratios = "".join(f"{rate / r.mean(k):>9.2f}" for k in (SAME, "ours", "stock"))
        each = ", ".join(f"{x:,.0f}" for x in r.runs[kind])
        print(f"{LABELS[kind]:<70}{rate:>10,.0f}{ratios}  {each}")
    print(
        "worker's Faust stages after its loop processed the last batch (counters scraped "
        f"every {_SCRAPE_WORKING_S} s while it worked, then every {_SCRAPE_EVERY_S} s):"
    )
    for w in r.workers:
        print(
            f"    quality stats all folded +{w.quality_behind_s:.1f} s, last of "
            f"{w.deltas:,} rule deltas applied +{w.rules_behind_s:.1f} s"
        )
    same, core = (statistics.median(x) for x in (r.cpu.same_us, r.cpu.core_us))
    print(
        f"CPU per record, no broker ({len(r.cpu.same_us)} alternating passes over the same "
        f"records, medians): same work {same:.1f} µs, processor core {core:.1f} µs, "
        f"same ÷ core {r.cpu.ratio():.2f}"
    )
    print(f"    same work µs: {[round(x, 1) for x in r.cpu.same_us]}")
    print(f"    core µs:      {[round(x, 1) for x in r.cpu.core_us]}")


def print_inside(inside: dict[float, float]) -> None:
    total = inside.get(float("inf"), 0.0)
    if not total:
        print("    inside the worker: no records in its histogram")
        return
    shares = ", ".join(
        f"≤{le * 1000:.0f} ms {inside[le] / total:.1%}" for le in (0.01, 0.025, 0.05, 0.1, 0.25)
    )
    print(f"    inside the worker (raw record's timestamp → std acknowledged): {shares}")


def print_latency(
    rate: float, rows: list[tuple[str, list[Sample]]], broker: CpuSampler | None
) -> None:
    head = f"latency at {rate:,.0f} events/s offered, first second excluded"
    print(f"{head:<66}{'n':>7}{'p50 ms':>8}{'p90 ms':>8}{'p99 ms':>8}{'max ms':>8}")
    for label, sample in rows:
        s = summarize(sample)
        if s is None:
            print(f"{label:<66}{0:>7}  (no records read back)")
            continue
        ms = [round(v * 1000) for v in (s.p50, s.p90, s.p99, s.max)]
        print(f"{label:<66}{s.n:>7}" + "".join(f"{v:>8}" for v in ms))
        print(f"    p99 ms by second: {[round(v * 1000) for v in s.p99_by_second]}")
        if broker is not None:
            start = min(sent for sent, _ in sample)
            cpu = broker.percent_by_second(start, len(s.p99_by_second))
            print(f"    broker CPU % by second: {cpu}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--rate", type=float, default=2000.0)
    ap.add_argument("--seconds", type=float, default=15.0)
    ap.add_argument(
        "--linger-ms",
        type=float,
        default=None,
        help="linger of the latency runs' producers (the baseline's and the publisher's; "
        "default: the bus's, 5 ms)",
    )
    ap.add_argument("--skip-latency", action="store_true", help="throughput only")
    ap.add_argument("--cpu-passes", type=int, default=_CPU_PASSES, help="CPU-only passes")
    ap.add_argument("--skip-throughput", action="store_true", help="latency only")
    runs.add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.events, args.skip_latency, args.cpu_passes = 5_000, True, 3
    run = runs.Run.from_args("processor", args)
    if args.skip_latency and args.skip_throughput:
        ap.error("--skip-latency and --skip-throughput together leave nothing to run")
    events: list[DossierEvent] = []
    if not args.skip_throughput:
        ref = load_reference()
        events = generate_dossiers(DossierSpec(days=365, dossiers_per_unit_per_day=3, seed=5), ref)
        events = events[: args.events]
    tune_gc_for_batches()  # as the processor process does; every loop runs under it
    lat_rows: list[tuple[str, list[Sample]]] = []
    inside: dict[float, float] = {}
    result: Throughput | None = None
    broker: CpuSampler | None = None
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
            assert stack.broker is not None, "the local stack started the broker"
            broker_process = psutil.Process(stack.broker.popen.pid)
            if not args.skip_latency:
                # Latency first, on small topics: the embedded broker's fetches slow down
                # as its in-memory topics grow, which a real Kafka's do not.
                # The broker's CPU alongside: its per-produce cost grows with the topics.
                with CpuSampler(broker_process) as broker:
                    base = broker_latency(s, args.rate, args.seconds, args.linger_ms)
                    worker, inside = latency(
                        s, stack.env(), args.rate, args.seconds, args.linger_ms
                    )
                lat_rows = [
                    ("plain produce → consume (baseline)", base),
                    ("publish → std through a processor worker", worker),
                ]
            if not args.skip_throughput:
                result = throughput(
                    s, stack.env(), registry, events, broker_process, args.cpu_passes
                )
    if result is not None:
        print_throughput(events, result)
    if lat_rows:
        print_latency(args.rate, lat_rows, broker)
        print_inside(inside)
    record(run, result, lat_rows)
    run.write(args)


def record(
    run: runs.Run, result: Throughput | None, lat_rows: list[tuple[str, list[Sample]]]
) -> None:
    """The run's figures for its JSON: each kind's mean rate (÷ the same-work loop), the
    CPU per record without the broker (÷ same work), latency quantiles (÷ the baseline)."""
    if result is not None:
        run.figure(LABELS[SAME], result.mean(SAME), "events/s")
        for kind in ("ours", "stock", LOOP, WORKER):
            run.figure(LABELS[kind], result.mean(kind), "events/s", baseline=LABELS[SAME])
        same, core = (statistics.median(x) for x in (result.cpu.same_us, result.cpu.core_us))
        base = "CPU per record, no broker: same work"
        run.figure(base, same, "µs", better="lower")
        run.figure(
            "CPU per record, no broker: processor core", core, "µs", better="lower", baseline=base
        )
    summaries = [(label, summarize(sample)) for label, sample in lat_rows]
    for q in ("p50", "p90", "p99"):
        base = ""
        for label, summary in summaries:
            if summary is not None:
                name = f"latency {q}: {label}"
                run.figure(name, getattr(summary, q) * 1000, "ms", better="lower", baseline=base)
                base = base or name


if __name__ == "__main__":
    main()
