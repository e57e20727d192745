"""Quality metrics: gauges per dataset, unit and dimension, on a fresh registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from bus.metrics import Metrics
from schemas.catalog import DOSSIERS
from stream_processors.batch_stats import UnitStats
from stream_processors.quality import apply_stats, count_dropped, publish_quality_metrics, scores

T0 = 1_754_276_400_000
UNIT = "DNA.VPUB"


def _value(metrics: Metrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def test_scores_freshness_and_liveness_are_published() -> None:
    metrics = Metrics(CollectorRegistry())
    stats = UnitStats(
        DOSSIERS.id,
        UNIT,
        received=10,
        valid=8,
        dead_lettered=2,
        required_present=9,
        required_checked=10,
        last_seen_ms=T0,
    )
    publish_quality_metrics(
        metrics, DOSSIERS.id, UNIT, scores(DOSSIERS, apply_stats(None, stats), T0 + 30_000)
    )
    labels = {"dataset": DOSSIERS.id, "unit": UNIT}
    assert _value(metrics, "databus_quality_score", **labels, dimension="validity") == 0.8
    assert _value(metrics, "databus_quality_score", **labels, dimension="completeness") == 0.9
    assert _value(metrics, "databus_quality_score", **labels, dimension="uniqueness") == 1.0
    assert _value(metrics, "databus_dataset_freshness_seconds", **labels) == 30.0
    assert _value(metrics, "databus_dataset_live", **labels) == 1.0


def test_unknown_shares_remove_their_series() -> None:
    metrics = Metrics(CollectorRegistry())
    stats = UnitStats(DOSSIERS.id, UNIT, received=1, valid=1, last_seen_ms=T0)
    publish_quality_metrics(
        metrics, DOSSIERS.id, UNIT, scores(DOSSIERS, apply_stats(None, stats), T0)
    )
    labels = {"dataset": DOSSIERS.id, "unit": UNIT}
    # No field was checked: completeness unknown, so no series rather than a false 0.
    assert _value(metrics, "databus_quality_score", **labels, dimension="completeness") is None
    assert _value(metrics, "databus_quality_score", **labels, dimension="validity") == 1.0
    publish_quality_metrics(metrics, DOSSIERS.id, UNIT, scores(DOSSIERS, None, T0))
    assert _value(metrics, "databus_quality_score", **labels, dimension="validity") is None
    assert _value(metrics, "databus_dataset_freshness_seconds", **labels) is None
    assert _value(metrics, "databus_dataset_live", **labels) == 0.0


def test_dropped_duplicates_and_stale_events_are_counted() -> None:
    metrics = Metrics(CollectorRegistry())
    count_dropped(metrics, UnitStats(DOSSIERS.id, UNIT, received=9, duplicates=3, stale=2))
    count_dropped(metrics, UnitStats(DOSSIERS.id, UNIT, received=1, duplicates=1))
    name = "databus_events_dropped_total"
    assert _value(metrics, name, dataset=DOSSIERS.id, reason="duplicate") == 4
    assert _value(metrics, name, dataset=DOSSIERS.id, reason="stale") == 2
