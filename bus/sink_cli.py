"""``databus sink …``: run one sink as a process.

Each sink is its own process and consumer group, so a destination that is down
pauses only its own partitions: the other sinks keep writing. Each serves
``/metrics``, ``/livez`` and ``/readyz`` (broker, registry, its destination, its
circuit) on ``DATABUS_METRICS__PORT``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import typer

from bus.cli_common import (
    broker_or_exit,
    console,
    settings_or_exit,
    setup_logging,
    stop_on_signals,
)
from bus.settings import Settings
from sinks.base import Sink

if TYPE_CHECKING:
    from bus.health_checks import Check
    from bus.metrics import Metrics

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
    from sinks.runner import SinkRunner

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
def sink_ioc() -> None:
    """The IOC store (Redis): latest state of every dataset, KPIs, alerts, geo index."""
    import redis

    from bus.health_checks import redis_check
    from bus.metrics import Metrics
    from schemas.catalog import ALERTS_TOPIC, QUALITY_TOPIC
    from sinks.ioc_store import IocStoreSink

    setup_logging()
    settings = settings_or_exit()
    if settings.redis.url is None:
        console.print("[red]DATABUS_REDIS__URL is not set[/]: point it at the IOC store's Redis.")
        raise typer.Exit(2)
    client = redis.Redis.from_url(settings.redis.url)
    metrics = Metrics()
    _run(
        settings,
        IocStoreSink(client, metrics=metrics),
        name="ioc_store",
        topics=[*std_topics(), ALERTS_TOPIC, QUALITY_TOPIC],
        group=settings.sink_group,
        metrics=metrics,
        checks={"redis": redis_check(settings.redis.url)},
    )


@sink_app.command("sql")
def sink_sql() -> None:
    """The shared repository (SQL): current state and history of every dataset."""
    from bus.health_checks import sql_check
    from sinks.shared_repo import SharedRepoSink

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
        console.print(
            "[red]DATABUS_HEALTH_AXIS__URL is not set[/]: point it at the ministry's FHIR "
            "endpoint (or at `databus health-receiver` to try it locally)."
        )
        raise typer.Exit(2)
    # The ministry's endpoint is not pinged (it would cost a token and a request per
    # probe): the circuit check says whether the last writes got through.
    _run(settings, HealthAxisSink(settings.health_axis), name="health_axis", topics=TOPICS)
