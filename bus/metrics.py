"""All metrics of one process in one object, bound to a registry the caller gives.

Names follow Prometheus conventions and DESIGN.md: prefix ``databus_``, base
units, ``_total`` counters (prometheus-client adds the suffix), bounded labels
only — dataset, unit, stage, reason, rule, state, sink, dimension — never an event
or citizen id. ``unit`` is an owner unit code of the reference data or "unknown".
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

__all__ = ["Metrics", "serve_metrics"]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class Metrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.events_consumed = Counter(
            "databus_events_consumed",
            "Events read from a topic, by dataset and stage.",
            ["dataset", "stage"],
            registry=r,
        )
        self.events_produced = Counter(
            "databus_events_produced",
            "Events written to a topic, by dataset and stage.",
            ["dataset", "stage"],
            registry=r,
        )
        self.events_dead_lettered = Counter(
            "databus_events_dead_lettered",
            "Events sent to a dead-letter topic, by dataset, stage and reason code.",
            ["dataset", "stage", "reason"],
            registry=r,
        )
        self.delivery_failures = Counter(
            "databus_delivery_failures",
            "Records the broker did not acknowledge, by dataset.",
            ["dataset"],
            registry=r,
        )
        self.processing_seconds = Histogram(
            "databus_processing_seconds",
            "Time to process one event in a stage.",
            ["dataset", "stage"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.alerts = Counter(
            "databus_alerts",
            "Alert transitions emitted, by rule and state.",
            ["rule", "state"],
            registry=r,
        )
        self.sink_records_written = Counter(
            "databus_sink_records_written",
            "Records a sink wrote durably, by sink and dataset.",
            ["sink", "dataset"],
            registry=r,
        )
        self.sink_batch_seconds = Histogram(
            "databus_sink_batch_seconds",
            "Time to write one batch to a destination.",
            ["sink"],
            buckets=_LATENCY_BUCKETS,
            registry=r,
        )
        self.sink_failures = Counter(
            "databus_sink_failures",
            "Sink failures, by sink and kind: retriable or permanent (batch writes that "
            "raised), rejected or undecodable (records sent to the sink's DLQ).",
            ["sink", "kind"],
            registry=r,
        )
        self.sink_retries = Counter(
            "databus_sink_retries",
            "Attempts to write a held batch again after a retriable failure, by sink.",
            ["sink"],
            registry=r,
        )
        self.sink_dead_lettered = Counter(
            "databus_sink_dead_lettered",
            "Records a sink sent to its dead-letter topic, by sink, dataset and reason code.",
            ["sink", "dataset", "reason"],
            registry=r,
        )
        self.sink_circuit_state = Gauge(
            "databus_sink_circuit_state",
            "The circuit breaker in front of a sink's destination: 0 closed, 1 half-open, 2 open.",
            ["sink"],
            registry=r,
        )
        self.sink_circuit_transitions = Counter(
            "databus_sink_circuit_transitions",
            "Circuit breaker state changes, by sink and the state entered.",
            ["sink", "state"],
            registry=r,
        )
        self.sink_held_records = Gauge(
            "databus_sink_held_records",
            "Records a sink holds in memory while its destination is unavailable.",
            ["sink"],
            registry=r,
        )
        self.sink_paused_partitions = Gauge(
            "databus_sink_paused_partitions",
            "Partitions a sink paused while its destination is unavailable.",
            ["sink"],
            registry=r,
        )
        self.sink_consumer_lag = Gauge(
            "databus_sink_consumer_lag",
            "Records not yet committed by a sink, by topic and partition (from the cached "
            "high watermark; approximate on brokers that report it per batch).",
            ["sink", "topic", "partition"],
            registry=r,
        )
        self.last_event_timestamp = Gauge(
            "databus_last_event_timestamp_seconds",
            "Source time of the newest event seen, by dataset and stage.",
            ["dataset", "stage"],
            registry=r,
        )
        # Data quality (stream_processors.quality), per dataset and delivering unit.
        self.quality_score = Gauge(
            "databus_quality_score",
            "Data quality share in [0, 1] over the rolling window, by dataset, unit and "
            "dimension (completeness, validity, uniqueness); absent when nothing was seen.",
            ["dataset", "unit", "dimension"],
            registry=r,
        )
        self.dataset_freshness = Gauge(
            "databus_dataset_freshness_seconds",
            "Time since the processor last received an event of the dataset from the unit.",
            ["dataset", "unit"],
            registry=r,
        )
        self.dataset_live = Gauge(
            "databus_dataset_live",
            "1 when the dataset meets its catalog update obligation for the unit, else 0.",
            ["dataset", "unit"],
            registry=r,
        )
        self.events_dropped = Counter(
            "databus_events_dropped",
            "Events the processor dropped without dead-lettering them, by dataset and "
            "reason (duplicate: event id seen before, same content; stale: older version).",
            ["dataset", "reason"],
            registry=r,
        )


def serve_metrics(metrics: Metrics, host: str = "127.0.0.1", port: int = 0) -> int:
    """Serve ``/metrics`` in a daemon thread; returns the bound port (0 picks a free one)."""
    server, _thread = start_http_server(port, addr=host, registry=metrics.registry)
    return int(server.server_port)
