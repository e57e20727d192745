"""Counters an alert rule reads exist at 0 from start-up (issue 17): the first failure
is a step 0 → 1 that ``increase()`` sees. Scrapes a registry and reads the samples;
the sink runner and the publisher are built against closed ports (nothing connects)."""

from __future__ import annotations

import re
import socket
import threading
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka.schema_registry import SchemaRegistryClient
from prometheus_client import CollectorRegistry, generate_latest

from bus.metrics import (
    DROP_REASONS,
    SINK_CIRCUIT_STATES,
    SINK_FAILURE_KINDS,
    Metrics,
    start_health_server,
)
from bus.settings import Settings, load_settings
from schemas.catalog import DATASETS
from sinks.base import Rejected, SinkRecord

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "deploy" / "prometheus" / "rules" / "databus.rules.yml"


def scraped(registry: CollectorRegistry) -> str:
    return generate_latest(registry).decode()


def value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def offline() -> Iterator[tuple[Settings, SchemaRegistryClient]]:
    url = f"http://127.0.0.1:{_closed_port()}"
    settings = load_settings(
        kafka={"bootstrap_servers": f"127.0.0.1:{_closed_port()}"}, schema_registry={"url": url}
    )
    registry = SchemaRegistryClient({"url": url, "max.retries": 0, "retries.wait.ms": 1})
    yield settings, registry
    registry.close()


def test_init_sink_scrapes_every_failure_kind_at_zero() -> None:
    m = Metrics()
    m.init_sink("health_axis", ["health.encounters"])
    text = scraped(m.registry)
    for kind in SINK_FAILURE_KINDS:
        line = f'databus_sink_failures_total{{kind="{kind}",sink="health_axis"}} 0.0'
        assert line in text
    for state in SINK_CIRCUIT_STATES:
        assert (
            value(m, "databus_sink_circuit_transitions_total", sink="health_axis", state=state) == 0
        )
    assert value(m, "databus_sink_retries_total", sink="health_axis") == 0
    written = value(
        m, "databus_sink_records_written_total", sink="health_axis", dataset="health.encounters"
    )
    assert written == 0


def test_init_publisher_and_processor_scrape_zero_per_dataset() -> None:
    m = Metrics()
    m.init_publisher(DATASETS)
    m.init_processor(DATASETS)
    for dataset in DATASETS:
        assert value(m, "databus_delivery_failures_total", dataset=dataset) == 0
        assert value(m, "databus_events_produced_total", dataset=dataset, stage="raw") == 0
        assert value(m, "databus_events_consumed_total", dataset=dataset, stage="raw") == 0
        assert value(m, "databus_events_produced_total", dataset=dataset, stage="std") == 0
        for reason in DROP_REASONS:
            assert value(m, "databus_events_dropped_total", dataset=dataset, reason=reason) == 0


def test_a_fresh_metrics_object_has_no_labelled_series() -> None:
    """Nothing is invented: the series exist only for what a process says it uses."""
    assert value(Metrics(), "databus_sink_failures_total", sink="x", kind="permanent") is None


class _NullSink:
    def setup(self) -> None: ...

    def write(self, batch: Sequence[SinkRecord]) -> Sequence[Rejected]:
        return []

    def flush(self) -> None: ...

    def close(self) -> None: ...


def test_a_sink_runner_exports_its_failure_counters_at_zero_before_any_batch(
    offline: tuple[Settings, SchemaRegistryClient],
) -> None:
    from sinks import SinkRunner

    settings, registry = offline
    metrics = Metrics()
    runner = SinkRunner(
        settings,
        _NullSink(),
        name="health_axis",
        topics=["health.encounters.std.v1"],
        group="preinit-test",
        metrics=metrics,
        registry=registry,
    )
    try:
        assert (
            value(metrics, "databus_sink_failures_total", sink="health_axis", kind="permanent") == 0
        )
        assert (
            value(metrics, "databus_sink_failures_total", sink="health_axis", kind="rejected") == 0
        )
        assert value(metrics, "databus_sink_circuit_state", sink="health_axis") == 0
        written = value(
            metrics,
            "databus_sink_records_written_total",
            sink="health_axis",
            dataset="health.encounters",
        )
        assert written == 0
    finally:
        runner.close()


def test_a_publisher_exports_delivery_failures_at_zero_for_every_dataset(
    offline: tuple[Settings, SchemaRegistryClient],
) -> None:
    from producers.publisher import Publisher

    settings, registry = offline
    metrics = Metrics()
    publisher = Publisher(
        settings, source_system="preinit-test", registry=registry, metrics=metrics
    )
    try:
        for dataset in DATASETS:
            assert value(metrics, "databus_delivery_failures_total", dataset=dataset) == 0
    finally:
        publisher.close(timeout=1)


# ---- the rules: each counter an alert reads is pre-initialised, or read so that a
# series appearing at 1 counts (deploy/prometheus/rules, top comment)


def _alert_and_recorded_exprs() -> list[str]:
    """Every alert's expression and those of the recording rules alerts read."""
    doc: dict[str, Any] = yaml.safe_load(RULES.read_text(encoding="utf-8"))
    rules = [r for g in doc["groups"] for r in g["rules"]]
    recorded = {r["record"]: str(r["expr"]) for r in rules if "record" in r}
    todo = [str(r["expr"]) for r in rules if "alert" in r]
    seen: list[str] = []
    while todo:
        expr = todo.pop()
        seen.append(expr)
        todo += [e for name, e in recorded.items() if name in expr and e not in seen]
    return seen


def _preinitialised_counters() -> set[str]:
    m = Metrics()
    m.init_sink("s", ["d"])
    m.init_publisher(["d"])
    m.init_processor(["d"])
    return set(re.findall(r"^(databus_\w+_total)\{", scraped(m.registry), flags=re.MULTILINE))


def test_every_counter_the_rules_read_is_at_zero_or_read_from_nothing() -> None:
    ready = _preinitialised_counters()
    for expr in _alert_and_recorded_exprs():
        for counter in set(re.findall(r"\b(databus_\w+_total)\b", expr)):
            from_nothing = re.search(
                rf"max_over_time\({counter}[^\[]*\[(\w+)\]\)\s+unless {counter}[^ ]* offset (\w+)",
                " ".join(expr.split()),
            )
            assert counter in ready or (
                from_nothing and from_nothing.group(1) == from_nothing.group(2)
            ), f"{counter} is neither at 0 from start-up nor read from nothing in: {expr}"


# ---- the final scrape before a failing process exits


def _get(port: int, path: str) -> bytes:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
        body: bytes = resp.read()
        return body


def test_final_scrape_returns_once_metrics_is_scraped() -> None:
    metrics = Metrics()
    metrics.init_sink("health_axis")
    server = start_health_server(metrics)
    try:
        metrics.sink_failures.labels("health_axis", "permanent").inc()
        got: dict[str, bool] = {}
        waiter = threading.Thread(target=lambda: got.update(ok=server.final_scrape(30)))
        started = time.monotonic()
        waiter.start()
        # a probe is not a scrape: only /metrics ends the wait
        assert _get(server.port, "/livez") == b"ok\n"
        body = b""
        deadline = time.monotonic() + 10
        while waiter.is_alive() and time.monotonic() < deadline:
            body = _get(server.port, "/metrics")
            waiter.join(0.2)
        assert got == {"ok": True}
        assert time.monotonic() - started < 10
        assert b'databus_sink_failures_total{kind="permanent",sink="health_axis"} 1.0' in body
    finally:
        server.close()


def test_final_scrape_gives_up_at_its_deadline_and_zero_means_at_once() -> None:
    server = start_health_server(Metrics())
    try:
        started = time.monotonic()
        assert server.final_scrape(0) is False
        assert time.monotonic() - started < 0.1
        assert server.final_scrape(0.3) is False
        assert 0.3 <= time.monotonic() - started < 5
    finally:
        server.close()
