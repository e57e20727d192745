"""The Faust app: thin agents wiring the pure functions of this package.

    <raw> ──standardize──► <std>            (keyed by dossier id)
                 ├──────► <dlq>            (original bytes + error headers)
                 └──────► facts-by-unit    (internal, keyed by receiving unit)
    facts-by-unit ──overdue──► alerts.v1   (tables: dossier facts, unit state, open alerts)

Outputs are sent before the input offset is committed: Faust flushes its
producer before every commit, so a crash re-processes rather than loses.
"""

from __future__ import annotations

import json
import logging
import time
from datetime import UTC, datetime
from typing import Any

import faust
from confluent_kafka.schema_registry import SchemaRegistryClient
from tenacity import AsyncRetrying, retry_if_exception, wait_exponential_jitter

from bus.errors import DatabusError
from bus.metrics import Metrics
from bus.settings import Settings
from schemas.catalog import ALERTS_SCHEMA, ALERTS_TOPIC, DOSSIERS, load_schema, value_subject
from schemas.codec import AvroSerializer
from stream_processors.dlq import dlq_headers
from stream_processors.dossier_pipeline import DossierPipeline, Refused
from stream_processors.overdue_alert import (
    RULE,
    DossierFact,
    apply_fact,
    contribution,
    decide,
    evaluate,
)
from stream_processors.reference import load_reference

__all__ = ["create_app"]

log = logging.getLogger(__name__)

# A tick asks the overdue agent to re-evaluate a unit at wall-clock time, so a
# dossier that passes its deadline raises an alert with no new event arriving.
_TICK = "__tick__"


def _retriable(exc: BaseException) -> bool:
    return isinstance(exc, DatabusError) and exc.retriable


def create_app(settings: Settings, metrics: Metrics) -> faust.App:
    kafka = settings.kafka
    assert kafka.bootstrap_servers is not None, "the local stack resolves the broker first"
    session_s = kafka.session_timeout_ms / 1000
    app = faust.App(
        settings.processor_group,
        broker=[f"kafka://{b.strip()}" for b in kafka.bootstrap_servers.split(",")],
        store="memory://",
        key_serializer="raw",
        value_serializer="raw",
        topic_partitions=kafka.partitions,
        topic_replication_factor=kafka.replication_factor,
        broker_session_timeout=session_s,
        broker_rebalance_timeout=session_s,
        broker_heartbeat_interval=max(0.5, session_s / 6),
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_linger=0.005,
        web_enabled=False,
        # Tansu keeps no state between runs: the processor re-derives tables from
        # changelogs; standbys double the changelog traffic for one worker.
        table_standby_replicas=0,
    )
    registry = SchemaRegistryClient(settings.schema_registry.client_config())
    pipeline = DossierPipeline(registry, load_reference())
    alert_encoder = AvroSerializer(
        registry, value_subject(ALERTS_TOPIC), load_schema(ALERTS_SCHEMA)
    )
    cfg = settings.alerts
    ds = DOSSIERS.id

    def topic(name: str, **kw: Any) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, partitions=kafka.partitions, **kw)

    raw_topic = topic(DOSSIERS.raw_topic)
    std_topic = topic(DOSSIERS.std_topic)
    dlq_topic = topic(DOSSIERS.dlq_topic)
    alerts_topic = topic(ALERTS_TOPIC)
    by_unit = topic(f"{settings.processor_group}-dossier-facts-by-unit", internal=True)

    facts = app.Table("dossier-facts", key_type=str)
    units = app.Table("unit-overdue-state", key_type=str)
    open_alerts = app.Table("unit-overdue-alert", key_type=str)
    # When this worker last took a raw event, and the source time of the newest one.
    activity = {"last_raw_s": 0.0, "last_event_ms": 0}

    # Register output schemas now: a registry that refuses them stops start-up.
    pipeline.register()
    _ = alert_encoder.schema_id

    async def _retrying(fn: Any, *args: Any) -> Any:
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(_retriable),
            wait=wait_exponential_jitter(initial=0.2, max=10),
            reraise=True,
        ):
            with attempt:
                return fn(*args)
        raise AssertionError("unreachable")

    @app.agent(raw_topic)
    async def standardize(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            started = time.perf_counter()
            activity["last_raw_s"] = time.monotonic()
            metrics.events_consumed.labels(ds, "raw").inc()
            msg = event.message
            headers = list(msg.headers or [])
            out = await _retrying(pipeline.process, event.value, headers)
            if isinstance(out, Refused):
                await dlq_topic.send(
                    key=event.key,
                    value=event.value,
                    headers=dlq_headers(
                        headers,
                        topic=msg.topic,
                        partition=msg.partition,
                        offset=msg.offset,
                        letter=out.letter,
                    ),
                )
                metrics.events_dead_lettered.labels(ds, out.letter.stage, out.letter.reason).inc()
            else:
                await std_topic.send(key=out.key, value=out.value, headers=out.headers)
                await by_unit.send(
                    key=out.fact.unit.encode(), value=json.dumps(out.fact.to_json()).encode()
                )
                metrics.events_produced.labels(ds, "std").inc()
                metrics.last_event_timestamp.labels(ds, "std").set(out.fact.event_ms / 1000)
                activity["last_event_ms"] = max(activity["last_event_ms"], out.fact.event_ms)
            metrics.processing_seconds.labels(ds, "standardize").observe(
                time.perf_counter() - started
            )

    async def _evaluate(unit: str, state: dict[str, Any], now_ms: int) -> None:
        ev = evaluate(state, now_ms, cfg.window_days)
        new_state, record = decide(open_alerts.get(unit), ev, unit, cfg)
        if new_state != open_alerts.get(unit):
            if new_state is None:
                del open_alerts[unit]
            else:
                open_alerts[unit] = new_state
        if record is not None:
            await alerts_topic.send(key=unit.encode(), value=alert_encoder(record))
            metrics.alerts.labels(RULE, record["state"]).inc()
            log.info("alert %s %s for unit %s", record["state"], RULE, unit)

    @app.agent(by_unit)
    async def overdue(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            unit = (event.key or b"").decode()
            payload = json.loads(event.value)
            if payload.get(_TICK):
                state = units.get(unit)
                if state is not None:
                    now_ms = max(int(state["watermark_ms"]), int(payload["now_ms"]))
                    units[unit] = {**state, "watermark_ms": now_ms}
                    await _evaluate(unit, units[unit], now_ms)
                continue
            fact = DossierFact.from_json(payload)
            metrics.events_consumed.labels(ds, "facts").inc()
            previous = facts.get(fact.dossier_id)
            if previous is not None and previous[0] >= fact.version:
                continue  # replayed or out of order: the newer state already counts
            old = (previous[1], previous[2]) if previous and previous[1] else None
            new = contribution(fact)
            facts[fact.dossier_id] = [fact.version, *(new or (None, None))]
            state = apply_fact(units.get(unit), old, new, fact.event_ms, cfg.window_days)
            units[unit] = state
            await _evaluate(unit, state, int(state["watermark_ms"]))

    @app.timer(cfg.evaluate_every_s)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        # Only when caught up: during a backlog wall-clock time would run ahead of
        # the events and count dossiers overdue whose completion is still queued.
        # Caught up = idle for a period, or the newest event is itself recent (live).
        now_ms = int(datetime.now(UTC).timestamp() * 1000)
        idle = time.monotonic() - activity["last_raw_s"] >= cfg.evaluate_every_s
        live = now_ms - activity["last_event_ms"] <= 2 * cfg.evaluate_every_s * 1000
        if not (idle or live):
            return
        for unit in list(units.keys()):
            await by_unit.send(
                key=unit.encode(), value=json.dumps({_TICK: True, "now_ms": now_ms}).encode()
            )

    _ = (standardize, overdue, tick)
    return app
