"""Every metric family issue 6 lists exists, with bounded labels only; the ledger
gauges follow ``databus.ledger`` figures."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from prometheus_client import CollectorRegistry

from bus.metrics import LEDGER_STATES, Metrics
from schemas.catalog import DATASETS
from schemas.domain.delivery import build_ledger
from sinks.ioc.ledger import export_ledger_metrics

# Labels whose values come from a closed set: the catalog, reference data, code.
BOUNDED = {
    "dataset", "unit", "owner_unit", "stage", "reason", "rule", "state", "sink", "kind",
    "dimension", "group", "topic", "partition",
}  # fmt: skip
ISSUE_FAMILIES = {
    # events in and out per dataset and stage
    "databus_events_consumed": ("counter", {"dataset", "stage"}),
    "databus_events_produced": ("counter", {"dataset", "stage"}),
    # DLQ by reason
    "databus_events_dead_lettered": ("counter", {"dataset", "stage", "reason"}),
    # processing and end-to-end latency
    "databus_processing_seconds": ("histogram", {"dataset", "stage"}),
    "databus_end_to_end_latency_seconds": ("histogram", {"dataset"}),
    # consumer lag per group and partition
    "databus_consumer_lag": ("gauge", {"group", "topic", "partition"}),
    "databus_sink_consumer_lag": ("gauge", {"sink", "topic", "partition"}),
    # last-event time and quality scores per dataset
    "databus_last_event_timestamp_seconds": ("gauge", {"dataset", "stage"}),
    "databus_quality_score": ("gauge", {"dataset", "unit", "dimension"}),
    # sink writes, retries, circuit state
    "databus_sink_records_written": ("counter", {"sink", "dataset"}),
    "databus_sink_retries": ("counter", {"sink"}),
    "databus_sink_circuit_state": ("gauge", {"sink"}),
    # alerts by rule and state
    "databus_alerts": ("counter", {"rule", "state"}),
    # the delivery ledger
    "databus_ledger_datasets": ("gauge", {"owner_unit", "state"}),
    "databus_ledger_quality": ("gauge", {"owner_unit"}),
}


def families(metrics: Metrics) -> dict[str, Any]:
    return {f.name: f for f in metrics.registry.collect()}


def label_names(metrics: Metrics) -> dict[str, set[str]]:
    """Label names per family, from the metric objects (families without samples
    expose no labels in ``collect()``)."""
    out = {}
    for value in vars(metrics).values():
        names = getattr(value, "_labelnames", None)
        name = getattr(value, "_name", None)
        if names is not None and name is not None:
            out[name] = set(names)
    return out


def test_every_issue_family_exists_with_its_labels() -> None:
    metrics = Metrics(CollectorRegistry())
    found = families(metrics)
    labels = label_names(metrics)
    for name, (kind, wanted) in ISSUE_FAMILIES.items():
        assert name in found, name
        assert found[name].type == kind, name
        assert labels[name] == wanted, name


def test_every_label_is_bounded() -> None:
    for name, labels in label_names(Metrics(CollectorRegistry())).items():
        assert name.startswith("databus_"), name
        assert labels <= BOUNDED, f"{name}: {sorted(labels - BOUNDED)}"


def test_ledger_gauges_follow_the_ledger() -> None:
    now = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
    rows = [
        {
            "dataset": "health.encounters",
            "unit_code": "DNA.BV1",
            "last_event_ts": now - timedelta(hours=5),
            "last_seen_ts": now,
            "received": 10,
            "overall": 0.9,
            "ts_ms": now,
        },
        {
            "dataset": "health.disease_cases",
            "unit_code": "DNA.BV1",
            "last_event_ts": now - timedelta(hours=3),
            "last_seen_ts": now,
            "received": 30,
            "overall": 0.5,
            "ts_ms": now,
        },
    ]
    ledger = build_ledger(DATASETS.values(), rows, now)
    metrics = Metrics(CollectorRegistry())
    export_ledger_metrics(metrics, ledger)

    def value(name: str, **labels: str) -> float | None:
        return metrics.registry.get_sample_value(name, labels)

    figures = {
        s: value("databus_ledger_datasets", owner_unit="DNA.SYT", state=s) for s in LEDGER_STATES
    }
    assert figures == {"assigned": 3, "delivering": 2, "live": 1, "late": 1}
    assert value("databus_ledger_quality", owner_unit="DNA.SYT") == 0.7
    units = {ds.owner_unit for ds in DATASETS.values()}
    for unit in units - {"DNA.SYT"}:
        assert value("databus_ledger_datasets", owner_unit=unit, state="delivering") == 0
        assert value("databus_ledger_quality", owner_unit=unit) is None  # none delivers
    total = sum(
        value("databus_ledger_datasets", owner_unit=u, state="assigned") or 0 for u in units
    )
    assert total == len(DATASETS)

    # A unit whose datasets all stop counting as delivering loses its quality series.
    export_ledger_metrics(metrics, build_ledger(DATASETS.values(), [], now))
    assert value("databus_ledger_quality", owner_unit="DNA.SYT") is None
    assert value("databus_ledger_datasets", owner_unit="DNA.SYT", state="delivering") == 0
