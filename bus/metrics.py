"""All metrics of one process in one object, bound to a registry the caller gives.

Names follow Prometheus conventions (docs/operations.md, "Metrics"): prefix ``databus_``, base
units, ``_total`` counters (prometheus-client adds the suffix), bounded labels
only — dataset, unit, stage, reason, rule, state, sink, dimension, consumer group,
topic and partition — never an event or citizen id. ``unit`` and ``owner_unit`` are
unit codes of the reference data and the catalog (or "unknown").

``serve_metrics`` serves, on one port: ``/metrics``; ``/livez``, 200 while the process
runs and every check of ``Metrics.liveness`` passes (an essential thread alive), else
503 naming them; ``/readyz``, 200 when every check of ``Metrics.readiness`` passes, else 503
naming the failing checks and why (``bus.health_checks``).

Counters an alert or a panel reads exist at 0 from start-up for their known label
values (``Metrics.init_sink``, ``init_publisher``, ``init_processor``): a first failure
is then a step from 0 to 1 that ``increase()`` sees, not a series that appears at 1.
``HealthServer.final_scrape`` keeps ``/metrics`` up a few seconds before a process that
failed exits, so the value it died on is scraped.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server
from wsgiref.types import StartResponse, WSGIEnvironment

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from bus.health_checks import Readiness

__all__ = [
    "DROP_REASONS",
    "SINK_CIRCUIT_STATES",
    "SINK_FAILURE_KINDS",
    "HealthServer",
    "Metrics",
    "serve_metrics",
    "start_health_server",
]

_LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)
# From the publisher to the std topic: milliseconds when caught up, minutes in a backlog.
_END_TO_END_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
LEDGER_STATES = ("assigned", "delivering", "live", "late")
# The known values of bounded labels, pre-initialised at 0 (see the init_* methods).
SINK_FAILURE_KINDS = ("retriable", "permanent", "rejected", "undecodable")
SINK_CIRCUIT_STATES = ("closed", "half_open", "open")
DROP_REASONS = ("duplicate", "stale")


class Metrics:
    def __init__(
        self, registry: CollectorRegistry | None = None, readiness: Readiness | None = None
    ) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # What /readyz checks; the process's wiring adds its checks (broker, registry, sinks).
        self.readiness = readiness if readiness is not None else Readiness()
        # What /livez checks: cheap, local, failing only when the process cannot work
        # any more (an essential thread stopped) and should be restarted.
        self.liveness = Readiness(ttl_s=0.0)
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
        self.processor_last_batch = Gauge(
            "databus_processor_last_batch_timestamp_seconds",
            "Wall-clock time the processor's loop last processed a batch of raw records "
            "(0 until it has); with lag above zero, a value that stops moving is a stuck loop.",
            registry=r,
        )
        self.processor_assigned = Gauge(
            "databus_processor_assigned_timestamp_seconds",
            "Wall-clock time the processor's loop was last given partitions, once their "
            "entity state was restored (0 until then): a value that keeps moving is a "
            "group that keeps rebalancing.",
            registry=r,
        )
        self.end_to_end_latency = Histogram(
            "databus_end_to_end_latency_seconds",
            "From the raw record's produce time (its Kafka timestamp, set by the publisher) "
            "to its std record (or dead letter) acknowledged by the broker, by dataset.",
            ["dataset"],
            buckets=_END_TO_END_BUCKETS,
            registry=r,
        )
        self.consumer_lag = Gauge(
            "databus_consumer_lag",
            "Records between a consumer group's position and the high watermark, by group, "
            "topic and partition (cached watermarks: approximate on the embedded broker).",
            ["group", "topic", "partition"],
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
        self.sink_store_rebuilds = Counter(
            "databus_sink_store_rebuilds",
            "Times a sink found its store empty or behind its committed offsets and "
            "replayed from Kafka, by sink and reason (store_empty, store_behind, "
            "store_replaced, requested).",
            ["sink", "reason"],
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
        # The delivery ledger (databus.ledger), as the IOC sink last computed it.
        self.ledger_datasets = Gauge(
            "databus_ledger_datasets",
            "Catalog datasets of an owner unit by ledger state: assigned, delivering "
            "(received at least once), live (within the update obligation), late.",
            ["owner_unit", "state"],
            registry=r,
        )
        self.ledger_quality = Gauge(
            "databus_ledger_quality",
            "Mean overall quality in [0, 1] of an owner unit's delivering datasets; "
            "absent while none delivers.",
            ["owner_unit"],
            registry=r,
        )
        self.events_dropped = Counter(
            "databus_events_dropped",
            "Events the processor dropped without dead-lettering them, by dataset and "
            "reason (duplicate: event id seen before, same content; stale: older version).",
            ["dataset", "reason"],
            registry=r,
        )

    # ---- series at 0 from start-up, for the label values a process knows it will use

    def init_sink(self, sink: str, datasets: Iterable[str] = ()) -> None:
        """Sink ``sink``'s counters at 0: failures of every kind, retries, circuit
        transitions, and records written per dataset of ``datasets``."""
        for kind in SINK_FAILURE_KINDS:
            self.sink_failures.labels(sink, kind)
        for state in SINK_CIRCUIT_STATES:
            self.sink_circuit_transitions.labels(sink, state)
        self.sink_retries.labels(sink)
        for dataset in datasets:
            self.sink_records_written.labels(sink, dataset)

    def init_publisher(self, datasets: Iterable[str]) -> None:
        """A publisher's counters at 0 for every dataset it may publish: raw events
        produced and delivery failures."""
        for dataset in datasets:
            self.events_produced.labels(dataset, "raw")
            self.delivery_failures.labels(dataset)

    def init_processor(self, datasets: Iterable[str]) -> None:
        """The processor's counters at 0 per dataset: raw events consumed, std events
        produced, events dropped. (Dead letters are by reason code, an open set: the
        alert rules count a series that appears as new failures.)"""
        for dataset in datasets:
            self.events_consumed.labels(dataset, "raw")
            self.events_produced.labels(dataset, "std")
            for reason in DROP_REASONS:
                self.events_dropped.labels(dataset, reason)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow client never holds the process at exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        """Probes every few seconds: no access log."""


class HealthServer:
    """``/metrics``, ``/livez`` and ``/readyz`` of one process, served on a daemon thread."""

    def __init__(self, metrics: Metrics, host: str = "127.0.0.1", port: int = 0) -> None:
        self._metrics = metrics
        self._scrape = make_wsgi_app(metrics.registry)
        self._server = make_server(
            host, port, self._app, server_class=_Server, handler_class=_QuietHandler
        )
        self.port = int(self._server.server_port)
        # Monotonic time of the last /metrics answer (0.0: none yet), for final_scrape.
        self._scraped_at = 0.0
        self._scraped = threading.Condition()
        self._thread = threading.Thread(
            # The poll interval only bounds how long close() waits.
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="databus-metrics",
            daemon=True,
        )
        self._thread.start()

    def final_scrape(self, timeout_s: float) -> bool:
        """Keep serving until ``/metrics`` has been scraped once more (the values a
        failing process ends on reach Prometheus), at most ``timeout_s``; returns whether
        a scrape came. Called before a process exits on an error."""
        if timeout_s <= 0:
            return False
        since = time.monotonic()
        deadline = since + timeout_s
        with self._scraped:
            while self._scraped_at <= since:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._scraped.wait(left)
        return True

    def _sent(self) -> None:
        with self._scraped:
            self._scraped_at = time.monotonic()
            self._scraped.notify_all()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _app(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        if path == "/livez":
            failing = [r for r in self._metrics.liveness.run() if not r.ok]
            if failing:
                text = "".join(f"{r.name}: {r.reason}\n" for r in failing).encode()
                return _reply(start_response, "503 Service Unavailable", text, "text/plain")
            return _reply(start_response, "200 OK", b"ok\n", "text/plain; charset=utf-8")
        if path == "/readyz":
            results = self._metrics.readiness.run()
            ready = all(r.ok for r in results)
            body = {
                "status": "ready" if ready else "not ready",
                "failing": [r.name for r in results if not r.ok],
                "checks": {r.name: {"ok": r.ok, "reason": r.reason} for r in results},
            }
            return _reply(
                start_response,
                "200 OK" if ready else "503 Service Unavailable",
                json.dumps(body, ensure_ascii=False).encode() + b"\n",
                "application/json",
            )
        if path in ("/", "/metrics"):
            return _Sent(self._scrape(environ, start_response), self._sent)
        return _reply(start_response, "404 Not Found", b"not found\n", "text/plain; charset=utf-8")


class _Sent:
    """A WSGI body that calls ``done`` once the server has written all of it (WSGI
    servers call ``close()`` after the last byte)."""

    def __init__(self, body: Iterable[bytes], done: Callable[[], None]) -> None:
        self._body = body
        self._done = done

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._body)

    def close(self) -> None:
        self._done()


def _reply(start_response: StartResponse, status: str, body: bytes, ctype: str) -> list[bytes]:
    start_response(
        status,
        [
            ("Content-Type", ctype),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-store"),
        ],
    )
    return [body]


def start_health_server(metrics: Metrics, host: str = "127.0.0.1", port: int = 0) -> HealthServer:
    """Serve ``/metrics``, ``/livez`` and ``/readyz``; ``close()`` stops it."""
    return HealthServer(metrics, host, port)


def serve_metrics(metrics: Metrics, host: str = "127.0.0.1", port: int = 0) -> int:
    """Serve ``/metrics``, ``/livez`` and ``/readyz`` in a daemon thread for the life of
    the process; returns the bound port (0 picks a free one)."""
    return start_health_server(metrics, host, port).port
