"""``databus sink …``: run one sink as a process.

Each sink is its own process and consumer group, so a destination that is down
pauses only its own partitions: the other sinks keep writing. Each serves
``/metrics``, ``/livez`` and ``/readyz`` (broker, registry, its destination, its
circuit) on ``DATABUS_METRICS__PORT``.

``databus sink ioc --rebuild`` replays the std, alert and quality topics from their
start into the IOC store, with a progress bar per topic, and exits when it has
reached the ends the topics had when it started (runbook:
``docs/runbooks/ioc-store.md``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import typer

from bus.settings import Settings
from databus.cli_common import (
    broker_or_exit,
    console,
    fail,
    settings_or_exit,
    setup_logging,
    stop_on_signals,
)
from sinks import Sink

if TYPE_CHECKING:
    import redis

    from bus.health_checks import Check
    from bus.metrics import Metrics

TP = tuple[str, int]

__all__ = ["sink_app"]

sink_app = typer.Typer(no_args_is_help=True, help="Run a sink.")
log = logging.getLogger("databus")


def _run(
    settings: Settings,
    sink: Sink,
    *,
    name: str,
    topics: Sequence[str],
    group: str | None = None,
    metrics: Metrics | None = None,
    checks: Mapping[str, Check] | None = None,
) -> None:
    """Serve metrics and probes, then consume ``topics`` into ``sink`` until Ctrl-C or
    SIGTERM. ``checks``: readiness checks of the destination, by name."""
    from bus.health_checks import broker_check, registry_check
    from bus.metrics import Metrics, serve_metrics
    from sinks import SinkRunner

    broker_or_exit(settings)  # exit 3 saying why the broker cannot be used
    metrics = metrics or Metrics()
    runner = SinkRunner(
        settings,
        sink,
        name=name,
        topics=topics,
        group=group or f"databus-sink-{name.replace('_', '-')}",
        metrics=metrics,
    )
    # Every check registered before the port opens: /readyz never answers without them.
    readiness = metrics.readiness
    readiness.add("broker", broker_check(settings))
    readiness.add("schema_registry", registry_check(settings))
    for check_name, check in (checks or {}).items():
        readiness.add(check_name, check)
    readiness.add("circuit", runner.check_circuit)
    port = serve_metrics(metrics, settings.metrics.host, settings.metrics.port)
    log.info("%s sink: metrics on http://%s:%d/metrics", name, settings.metrics.host, port)
    runner.run(stop_on_signals())


def std_topics(datasets: Sequence[str] | None = None) -> list[str]:
    """The std topics of the given datasets (default: every catalog dataset)."""
    from schemas.catalog import DATASETS

    return [ds.std_topic for ds in DATASETS.values() if datasets is None or ds.id in datasets]


@sink_app.command("ioc")
def sink_ioc(
    rebuild: bool = typer.Option(
        False,
        "--rebuild",
        help="Replay every std, alert and quality topic from its start into the store, "
        "show progress per topic, and exit once caught up.",
    ),
) -> None:
    """The IOC store (Redis): latest state of every dataset, KPIs, alerts, geo index.

    It heals by itself: a store that comes back empty or behind (lost its data,
    restored from an old snapshot, a new replica) is replayed from Kafka."""
    import redis

    from bus.health_checks import redis_check
    from bus.metrics import Metrics
    from schemas.catalog import ALERTS_TOPIC, QUALITY_TOPIC
    from sinks.ioc import IocStoreSink

    setup_logging()
    settings = settings_or_exit()
    if settings.redis.url is None:
        fail("DATABUS_REDIS__URL is not set: point it at the IOC store's Redis.", 2)
    client = redis.Redis.from_url(settings.redis.url)
    metrics = Metrics()
    topics = [*std_topics(), ALERTS_TOPIC, QUALITY_TOPIC]
    if rebuild:
        _rebuild_ioc(settings, client, metrics, topics)
        return
    _run(
        settings,
        IocStoreSink(client, metrics=metrics),
        name="ioc_store",
        topics=topics,
        group=settings.sink_group,
        metrics=metrics,
        checks={"redis": redis_check(settings.redis.url)},
    )


def _watermarks(settings: Settings, topics: Sequence[str]) -> dict[TP, tuple[int, int]]:
    """(low, high) of every partition of the existing ``topics``."""
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    probe = Consumer({**settings.kafka.client_config(), "group.id": "databus-rebuild-probe"})
    try:
        meta = probe.list_topics(timeout=10)
        out: dict[TP, tuple[int, int]] = {}
        for topic in topics:
            found = meta.topics.get(topic)
            if found is None or found.error is not None:
                continue
            for partition in found.partitions:
                low, high = probe.get_watermark_offsets(
                    TopicPartition(topic, partition), timeout=10
                )
                out[(topic, partition)] = (max(low, 0), max(high, 0))
        return out
    except KafkaException as exc:
        fail(
            f"cannot read the topics' ends from the broker at "
            f"{settings.kafka.bootstrap_servers} ({exc.args[0]}); try again once it answers",
            3,
        )
    finally:
        probe.close()


def _rebuild_ioc(
    settings: Settings, client: redis.Redis, metrics: Metrics, topics: Sequence[str]
) -> None:
    """Forget the store's applied offsets (an ioc sink running on it replays too),
    then replay every topic from its start up to the ends it has now."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from sinks import SinkRunner
    from sinks.ioc import IocStoreSink, forget_applied

    started = time.monotonic()
    ends = _watermarks(settings, topics)
    forget_applied(client)
    if not ends:
        console.print("nothing to replay: none of the topics exists yet")
        return
    runner = SinkRunner(
        settings,
        IocStoreSink(client, metrics=metrics),
        name="ioc_store",
        topics=topics,
        group=settings.sink_group,
        metrics=metrics,
        rewind_all=True,
    )
    by_topic: dict[str, list[TP]] = {}
    for tp in ends:
        by_topic.setdefault(tp[0], []).append(tp)
    stop = stop_on_signals()
    log.info("ioc store: rebuilding from %d topics, %d partitions", len(by_topic), len(ends))

    def replayed(tp: TP, positions: Mapping[TP, int]) -> int:
        low, _high = ends[tp]
        return max(0, positions.get(tp, low) - low)

    def caught_up(owned: set[TP], positions: Mapping[TP, int]) -> bool:
        """Every partition this process owns has reached its end at the start (the
        others, if any, belong to another member of the group, which replays them)."""
        return bool(owned) and all(
            positions.get(tp, -1) >= ends[tp][1]
            for tp in owned
            if tp in ends and ends[tp][1] > ends[tp][0]
        )

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        tasks = {
            topic: progress.add_task(topic, total=sum(ends[tp][1] - ends[tp][0] for tp in tps))
            for topic, tps in sorted(by_topic.items())
        }
        try:
            reached = False
            while not stop.is_set():
                got = runner.poll_once(0.5)
                positions, owned = runner.positions(), set(runner.assigned())
                for topic, tps in by_topic.items():
                    done = sum(replayed(tp, positions) for tp in tps)
                    total = progress.tasks[tasks[topic]].total or 0
                    progress.update(tasks[topic], completed=done, total=max(total, done))
                # past the ends, one poll that finds nothing more: the embedded
                # broker reports a partition's end as its last batch's first record
                if reached and got == 0 and not runner.holding:
                    break
                reached = caught_up(owned, positions)
        finally:
            runner.close()
    if stop.is_set():
        console.print("[yellow]rebuild interrupted[/]: the ioc sink replays the rest when it runs")
        raise typer.Exit(1)
    console.print(
        f"ioc store rebuilt: {runner.records_written} records replayed from "
        f"{len(by_topic)} topics in {time.monotonic() - started:.1f} s"
    )


@sink_app.command("sql")
def sink_sql() -> None:
    """The shared repository (SQL): current state and history of every dataset."""
    from bus.health_checks import sql_check
    from sinks import SharedRepoSink

    setup_logging()
    settings = settings_or_exit()
    sink = SharedRepoSink.from_settings(settings)
    _run(
        settings,
        sink,
        name="shared_repo",
        topics=std_topics(),
        checks={"database": sql_check(sink.engine)},
    )


@sink_app.command("health")
def sink_health() -> None:
    """The ministry health axis: health datasets as FHIR R4 transaction bundles over HTTPS."""
    from sinks.health_axis import TOPICS, HealthAxisSink

    setup_logging()
    settings = settings_or_exit()
    if settings.health_axis.url is None:
        fail(
            "DATABUS_HEALTH_AXIS__URL is not set: point it at the ministry's FHIR "
            "endpoint (or at `databus health-receiver` to try it locally).",
            2,
        )
    # The ministry's endpoint is not pinged (it would cost a token and a request per
    # probe): the circuit check says whether the last writes got through.
    _run(settings, HealthAxisSink(settings.health_axis), name="health_axis", topics=TOPICS)
