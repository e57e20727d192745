"""The IOC store heals: its embedded Redis keeps its data across restarts, and a store
that comes back empty or behind is rebuilt from Kafka by the sink itself.

Real parts only: the session's embedded broker and registry, and a redis-server of
the test's own (``start_redis``, persistent, in the test's data directory) that the
test wipes, stops, and restores from a copy of its files. Every record the test
produced is std / alert Avro on topics of the test's own.
"""

from __future__ import annotations

import random
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
import redis
from confluent_kafka import Producer
from confluent_kafka.schema_registry import SchemaRegistryClient
from databus_cli import run_databus
from registry_clients import registry_client
from stack_storage import supervise_for_tests
from std_samples import SIMULATED, std_events
from test_ioc_store import NOW, UNITS, generated_events, make_alert

from bus.metrics import Metrics
from bus.settings import Settings, SinkSettings, load_settings
from bus.topic_admin import TopicSpec, ensure_topics
from databus.local_stack import LocalStack, ManagedProcess, start_redis
from schemas.catalog import (
    ALERTS_SCHEMA,
    ALERTS_TOPIC,
    DOSSIERS,
    get_dataset,
    load_schema,
    value_subject,
)
from schemas.codec import AvroSerializer
from sinks.base import SinkRecord
from sinks.ioc.codec import ScriptCall
from sinks.ioc.offsets import read_applied
from sinks.ioc.store import IocStoreSink, read_unit_kpis
from sinks.runner import SinkRunner

pytestmark = pytest.mark.integration

TP = tuple[str, int]
DEADLINE_S = 90.0
FAST = SinkSettings(
    backoff_initial_s=0.02, backoff_max_s=0.2, breaker_fail_max=2, breaker_reset_timeout_s=0.1
)
# a few sector datasets (entities, KPI sums, geo) beside the dossiers (unit KPIs)
SECTORS = SIMULATED[:6]


@dataclass
class Feed:
    """The test's topics, and the ends of every partition it produced to."""

    settings: Settings
    registry: SchemaRegistryClient
    tag: str
    topics: dict[str, str] = field(default_factory=dict)  # dataset -> topic
    ends: dict[TP, int] = field(default_factory=dict)
    real_topics: bool = False  # the catalog's own topics (a stack of the test's own)

    def topic(self, name: str, partitions: int) -> str:
        topic = f"test.iocrb{self.tag}.{name}.std.v1"
        if self.real_topics:
            topic = ALERTS_TOPIC if name == "alerts" else get_dataset(name).std_topic
        if name not in self.topics:
            ensure_topics(self.settings, [TopicSpec(topic, partitions)])
            self.topics[name] = topic
        return topic

    def produce(self, name: str, schema_path: str, values: list[dict[str, Any]], n: int) -> None:
        """Spread ``values`` over ``n`` partitions (one: in order)."""
        topic = self.topic(name, n)
        encode = AvroSerializer(self.registry, value_subject(topic), load_schema(schema_path))
        producer = Producer({**self.settings.kafka.client_config(), "enable.idempotence": True})
        errors: list[object] = []

        def acked(err: object, msg: Any) -> None:
            if err is not None:
                errors.append(err)
                return
            tp = (msg.topic(), msg.partition())
            self.ends[tp] = max(self.ends.get(tp, 0), msg.offset() + 1)

        for i, value in enumerate(values):
            producer.produce(topic, encode(value), partition=i % n, on_delivery=acked)
        assert producer.flush(30) == 0
        assert not errors

    def wave(self, seed: int) -> None:
        """Sector events, dossier lifecycles and alerts: a wave of changes."""
        for dataset_id in SECTORS:
            ds = get_dataset(dataset_id)
            assert ds.std_schema is not None
            events = std_events(dataset_id)
            rng = random.Random(seed)
            self.produce(dataset_id, ds.std_schema, rng.sample(events, len(events) // 3), 2)
        assert DOSSIERS.std_schema is not None
        dossiers = generated_events(seed=seed, n=60)
        self.produce(DOSSIERS.id, DOSSIERS.std_schema, dossiers, 2)
        alerts = [
            make_alert(state, seed * 100 + i, alert_id=f"A{seed}-{i // 3}")
            for i, state in enumerate(["RAISED", "UPDATED", "RESOLVED"] * 4)
        ]
        self.produce("alerts", ALERTS_SCHEMA, alerts, 1)


@pytest.fixture
def feed(stack_settings: Settings, registry_url: str) -> Feed:
    return Feed(stack_settings, registry_client({"url": registry_url}), uuid.uuid4().hex[:8])


class Store:
    """The test's own persistent redis-server, restartable on the same port."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.proc: ManagedProcess | None = None
        self.port: int | None = None
        self.client: redis.Redis | None = None

    def start(self) -> redis.Redis:
        self.proc, url = start_redis(self.data_dir, self.port)
        self.port = redis.Redis.from_url(url).connection_pool.connection_kwargs["port"]
        if self.client is None:
            self.client = redis.Redis.from_url(url)
        return self.client

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.stop()
        self.proc = None


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    s = Store(tmp_path / "data")
    s.start()
    try:
        yield s
    finally:
        if s.proc is not None:
            s.stop()
        if s.client is not None:
            s.client.close()


class MakeRunner(Protocol):
    def __call__(
        self, client: redis.Redis, metrics: Metrics, store_check_s: float = ..., group: str = ...
    ) -> SinkRunner: ...


@pytest.fixture
def make_runner(feed: Feed, registry_url: str) -> Iterator[MakeRunner]:
    made: list[SinkRunner] = []

    def make(
        client: redis.Redis, metrics: Metrics, store_check_s: float = 0.2, group: str = "a"
    ) -> SinkRunner:
        runner = SinkRunner(
            feed.settings.model_copy(update={"sink": FAST}),
            IocStoreSink(client),
            name="ioc_store",
            topics=sorted(feed.topics.values()),
            group=f"test-iocrb-{feed.tag}-{group}",
            metrics=metrics,
            registry=registry_client({"url": registry_url}),
            store_check_s=store_check_s,
        )
        made.append(runner)
        return runner

    yield make
    for runner in made:
        runner.close()


def drive(runner: SinkRunner, done: Callable[[], bool]) -> None:
    """Poll until ``done`` (each poll waits on the broker; no sleeps)."""
    deadline = time.monotonic() + DEADLINE_S
    while not done():
        assert time.monotonic() < deadline, "the sink did not get there in time"
        runner.poll_once(timeout=0.2)


def caught_up(runner: SinkRunner, client: redis.Redis, ends: dict[TP, int]) -> Callable[[], bool]:
    def done() -> bool:
        try:
            applied = read_applied(client).offsets
        except redis.exceptions.ConnectionError:
            return False
        positions = runner.positions()
        return all(applied.get(tp, 0) >= n and positions.get(tp, 0) >= n for tp, n in ends.items())

    return done


def content(client: redis.Redis, snapshot: Callable[[redis.Redis], dict[bytes, object]]) -> Any:
    """The store's logical content; stream entries without their ids (``XADD *`` gives
    a rebuilt stream new ids for the same entries in the same order)."""
    out = snapshot(client)
    for key, value in out.items():
        if isinstance(value, tuple) and value[0] == b"stream":
            out[key] = (value[0], [fields for _id, fields in value[1]], value[2])
    return out


def rebuilds(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "databus_sink_store_rebuilds_total", {"sink": "ioc_store", "reason": reason}
    )
    return value or 0.0


Snapshot = Callable[[redis.Redis], dict[bytes, object]]


def test_the_embedded_redis_keeps_its_data_across_a_restart(tmp_path: Path) -> None:
    store = Store(tmp_path / "data")
    client = store.start()
    try:
        client.hset("ioc:{D:00}:e:k1", mapping={"status": "open"})
        store.stop()
        assert client.connection_pool is not None
        client.connection_pool.disconnect()
        store.start()
        assert client.hgetall("ioc:{D:00}:e:k1") == {b"status": b"open"}
        redis_dir = tmp_path / "data" / "redis"
        assert stat.S_IMODE(redis_dir.stat().st_mode) == 0o700
        files = [p for p in redis_dir.iterdir() if p.is_file()]
        assert any(p.name.endswith(".aof") for p in files)
        for path in files:
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path.name
    finally:
        store.stop()
        client.close()


def test_a_store_wiped_while_the_sink_runs_is_rebuilt_by_the_sink(
    feed: Feed,
    store: Store,
    make_runner: MakeRunner,
    redis_snapshot: Snapshot,
) -> None:
    feed.wave(seed=1)
    client = store.client
    assert client is not None
    metrics = Metrics()
    runner = make_runner(client, metrics)
    drive(runner, caught_up(runner, client, feed.ends))
    before = content(client, redis_snapshot)
    kpis = read_unit_kpis(client, NOW)
    assert len(kpis) == len(UNITS)
    assert rebuilds(metrics, "store_empty") == 0

    client.flushall()  # the store lost everything (a restart without its data)
    drive(runner, lambda: runner.rebuilds >= 1)
    drive(runner, caught_up(runner, client, feed.ends))

    assert content(client, redis_snapshot) == before
    assert read_unit_kpis(client, NOW) == kpis
    assert rebuilds(metrics, "store_empty") == 1


@pytest.mark.slow  # two waves and three Redis restarts: about a minute
def test_a_store_restored_from_an_older_snapshot_is_brought_up_to_date(
    feed: Feed,
    store: Store,
    make_runner: MakeRunner,
    redis_snapshot: Snapshot,
    tmp_path: Path,
) -> None:
    feed.wave(seed=2)
    client = store.client
    assert client is not None
    metrics = Metrics()
    runner = make_runner(client, metrics)
    drive(runner, caught_up(runner, client, feed.ends))

    # the operator's backup at time T: the files of a cleanly stopped Redis
    store.stop()
    backup = tmp_path / "backup"
    shutil.copytree(store.data_dir / "redis", backup)
    store.start()
    feed.wave(seed=3)  # more changes after T
    drive(runner, caught_up(runner, client, feed.ends))
    current = content(client, redis_snapshot)

    store.stop()
    shutil.rmtree(store.data_dir / "redis")
    shutil.copytree(backup, store.data_dir / "redis")
    store.start()
    assert content(client, redis_snapshot) != current  # the store is back at T

    drive(runner, lambda: runner.rebuilds >= 1)
    drive(runner, caught_up(runner, client, feed.ends))
    assert content(client, redis_snapshot) == current
    assert rebuilds(metrics, "store_behind") == 1


def test_databus_sink_ioc_rebuild_replays_everything_and_exits_when_caught_up(
    tmp_path: Path, redis_snapshot: Snapshot
) -> None:
    # a stack of its own, as `databus up` starts it: the catalog's topics hold only
    # what this test produced
    with LocalStack(
        load_settings(data_dir=tmp_path / "stack", supervise=supervise_for_tests())
    ) as stack:
        settings = stack.settings
        assert settings.schema_registry.url is not None and settings.redis.url is not None
        feed = Feed(settings, registry_client({"url": settings.schema_registry.url}), "")
        feed.real_topics = True
        feed.wave(seed=4)
        env = {k: v for k, v in stack.env().items() if k.startswith("DATABUS_")}
        client = redis.Redis.from_url(settings.redis.url)
        try:
            first = run_databus(tmp_path, "sink", "ioc", "--rebuild", timeout=180, **env)
            assert first.returncode == 0, first.stdout + first.stderr
            total = sum(feed.ends.values())
            assert f"ioc store rebuilt: {total} records replayed" in first.stdout
            alerts = feed.ends[(ALERTS_TOPIC, 0)]
            # one progress row per topic: records replayed of its total
            assert any(
                line.startswith(ALERTS_TOPIC) and f"{alerts}/{alerts}" in line
                for line in first.stdout.splitlines()
            ), first.stdout
            applied = read_applied(client).offsets
            assert all(applied.get(tp, 0) >= n for tp, n in feed.ends.items())
            built = content(client, redis_snapshot)
            assert len(built) > 100

            client.flushall()
            again = run_databus(tmp_path, "sink", "ioc", "--rebuild", timeout=180, **env)
            assert again.returncode == 0, again.stdout + again.stderr
            assert content(client, redis_snapshot) == built
        finally:
            client.close()


@pytest.mark.slow  # ~20 s; the store wiped while the sink runs is in `make test`
def test_a_store_wiped_between_batches_is_noticed_by_the_next_write(
    feed: Feed, store: Store, make_runner: MakeRunner, redis_snapshot: Snapshot
) -> None:
    feed.wave(seed=5)
    client = store.client
    assert client is not None and store.port is not None
    metrics = Metrics()
    # no periodic check: only the write path can notice
    runner = make_runner(client, metrics, store_check_s=3600)
    drive(runner, caught_up(runner, client, feed.ends))

    client.flushall()
    feed.wave(seed=6)  # the next batches land on the wiped store
    drive(runner, lambda: runner.rebuilds >= 1)
    drive(runner, caught_up(runner, client, feed.ends))
    assert rebuilds(metrics, "store_empty") == 1

    # the same topics into a fresh store (another database, another group)
    reference = redis.Redis(port=store.port, db=3)
    try:
        other = make_runner(reference, Metrics(), group="reference")
        drive(other, caught_up(other, reference, feed.ends))
        assert content(client, redis_snapshot) == content(reference, redis_snapshot)
    finally:
        reference.close()


class FussySink(IocStoreSink):
    """Raises a foreign exception on one alert, as a bug in a sink would."""

    def __init__(self, client: redis.Redis, poison: Callable[[dict[str, Any]], bool]) -> None:
        super().__init__(client)
        self.poison = poison

    def plan(self, record: SinkRecord, indexed: set[tuple[str, str]]) -> list[ScriptCall]:
        if self.poison(record.value):
            raise RuntimeError("cannot store this")
        return super().plan(record, indexed)


def test_a_record_that_makes_the_ioc_sink_raise_counts_as_applied(
    feed: Feed, store: Store, registry_url: str
) -> None:
    feed.wave(seed=8)
    client = store.client
    assert client is not None
    # the last alert of its partition: nothing after it would raise the offset
    sink = FussySink(client, lambda v: v.get("alert_id") == "A8-3" and v["state"] == "RESOLVED")
    metrics = Metrics()
    runner = SinkRunner(
        feed.settings.model_copy(update={"sink": FAST}),
        sink,
        name="ioc_store",
        topics=sorted(feed.topics.values()),
        group=f"test-iocrb-{feed.tag}-fussy",
        metrics=metrics,
        registry=registry_client({"url": registry_url}),
        store_check_s=0.2,
    )
    try:
        drive(runner, caught_up(runner, client, feed.ends))
        assert runner.rebuilds == 0
        labels = {"sink": "ioc_store", "reason": "sink_crashed"}
        dead = metrics.registry.get_sample_value(
            "databus_sink_dead_lettered_total",
            {**labels, "dataset": f"test.iocrb{feed.tag}.alerts"},
        )
        assert dead == 1
    finally:
        runner.close()
