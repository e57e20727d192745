"""The Faust app: the batched standardize loop plus thin agents over tables.

    <every raw topic> ──batch loop (thread)──► <std> / <dlq>
                               ├──► <group>-<dataset>-entities-changelog  (dedup, order)
                               ├──► <group>-rule-deltas   (per batch, per alert subject)
                               └──► <group>-unit-stats    (per batch, per dataset and unit)
    rule-deltas ──rules agent──► alerts.v1      (tables: rule state, open alerts)
    unit-stats  ──quality agent──► quality.v1    (table: rolling quality counts)

The loop does the per-event work outside Faust's stream machinery (see
``stream_processors.batch_loop`` for why and for its write order); Faust hosts it,
and runs the stateful stages on per-batch aggregates with changelogged tables, so
a worker that dies is replaced and its state recovers. Agents are wiring only:
the rules, lifecycle and quality scores are pure functions.

A worker that cannot work exits: when the batch loop's thread stops (an error it does
not retry), ``/livez`` fails at once and the process exits non-zero — by crashing the
Faust worker, and if that has not ended the process within ``_EXIT_GRACE_S``, at once —
so that Kubernetes, systemd or ``databus up`` restart it. Faust's table recovery skips
its consistency check (``recovery_consistency_check``): the embedded broker reports
high watermarks approximately, so a table's persisted offset can be above the reported
end of its changelog, which is not an inconsistency there (the batch loop's entity
state reads up to a marker instead).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
from datetime import UTC, datetime
from typing import Any

import faust
import orjson
from confluent_kafka.schema_registry import SchemaRegistryClient

from bus.errors import DatabusError
from bus.health_checks import CheckFailed, broker_check, registry_check, thread_check
from bus.metrics import Metrics
from bus.settings import Settings
from schemas.catalog import ALERTS_SCHEMA, ALERTS_TOPIC, DATASETS, load_schema, value_subject
from schemas.codec import AvroSerializer
from schemas.domain.reference import load_reference
from schemas.domain.working_days import warm_up
from schemas.headers import dataschema, schema_version
from schemas.topics import rule_deltas_topic, unit_stats_topic
from stream_processors.alerts.engine import RULE_GROUPS, rules_from_settings
from stream_processors.alerts.facts import contributions
from stream_processors.alerts.lifecycle import alert_headers, decide, open_alert_key
from stream_processors.batch_core import BatchCore
from stream_processors.batch_loop import BatchLoop, tune_gc_for_batches
from stream_processors.batch_stats import UnitStats
from stream_processors.faust_auth import faust_credentials
from stream_processors.pipeline import DatasetPipeline
from stream_processors.quality import (
    QUALITY_SCHEMA,
    QUALITY_TOPIC,
    apply_stats,
    field_presence,
    publish_quality_metrics,
    quality_headers,
    quality_record,
    scores,
)
from stream_processors.state_store import EntityStore, Slot, claim_slot, topics_incarnation

__all__ = ["create_app"]

log = logging.getLogger(__name__)

_TICK = "__tick__"
# Groups whose rules depend on the sequence of readings (N consecutive), not on counts
# over a window: evaluated after each delta rather than once per batch.
_STEPWISE = frozenset({"aqi_station"})
# After the batch loop stopped on an error: how long the worker may take to crash and
# shut down cleanly before the process exits at once.
_EXIT_GRACE_S = 10.0
_EXIT_CODE = 70  # EX_SOFTWARE
# The state-dir slots this process holds: referenced so that their locks live as long
# as the process (the kernel releases them when it ends).
_HELD_SLOTS: list[Slot] = []


def create_app(settings: Settings, metrics: Metrics) -> faust.App:
    kafka = settings.kafka
    assert kafka.bootstrap_servers is not None, "the local stack resolves the broker first"
    # /readyz (served already): the broker, the registry, and the loop's thread alive.
    thread: dict[str, threading.Thread] = {}
    metrics.readiness.add("broker", broker_check(settings))
    metrics.readiness.add("schema_registry", registry_check(settings))
    metrics.readiness.add("batch_loop", thread_check("the batch loop", lambda: thread.get("t")))
    stopping = threading.Event()  # a shutdown asked for: the loop's end is expected
    failed = threading.Event()  # the loop stopped on its own: the process exits

    def loop_alive() -> None:
        t = thread.get("t")
        if failed.is_set() or (t is not None and not t.is_alive() and not stopping.is_set()):
            raise CheckFailed("the batch loop stopped; the process is exiting")

    metrics.liveness.add("batch_loop", loop_alive)
    metrics.init_processor(sorted(DATASETS))  # the alert rules' series at 0 from start-up
    session_s = kafka.session_timeout_ms / 1000
    # This worker's local state: a slot of the state dir it holds while it lives (a
    # restarted worker takes its predecessor's files and replays only the changelog tail).
    local = settings.processor
    slot = claim_slot(local.resolved_state_dir(settings.data_dir) / settings.processor_group)
    _HELD_SLOTS.append(slot)  # locked until the process ends (Faust's tables use it too)
    if not slot.match(topics_incarnation(settings, settings.processor_group)):
        log.info("local state in %s started afresh (a new slot, or new topics)", slot.path)
    store = (
        EntityStore(
            slot.path / "entities",
            cache_entries=local.cache_entries,
            block_cache_mb=local.block_cache_mb,
        )
        if local.entity_store == "rocksdb"
        else None
    )
    app = faust.App(
        settings.processor_group,
        broker=[f"kafka://{b.strip()}" for b in kafka.bootstrap_servers.split(",")],
        # Tables on local disk (RocksDB through rocksdict): a restarted worker recovers
        # them from the changelog offset it had persisted, not from the beginning.
        store="rocksdb://" if local.table_store == "rocksdb" else "memory://",
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
        # Faust's own files (its tables' RocksDB) in this worker's slot
        datadir=str(slot.path / "faust"),
        broker_credentials=faust_credentials(kafka),
        # Tansu keeps no state between runs: the processor re-derives tables from
        # changelogs; standbys double the changelog traffic for one worker.
        table_standby_replicas=0,
        # Tansu's approximate high watermarks: see the module docstring.
        recovery_consistency_check=False,
        producer_max_request_size=kafka.message_max_bytes,
    )
    registry = SchemaRegistryClient(settings.schema_registry.client_config())
    reference = load_reference()
    rules = rules_from_settings(settings.alerts)
    pipelines = {ds.raw_topic: DatasetPipeline(ds, registry, reference) for ds in DATASETS.values()}
    alert_encoder = AvroSerializer(
        registry, value_subject(ALERTS_TOPIC), load_schema(ALERTS_SCHEMA)
    )
    quality_encoder = AvroSerializer(
        registry, value_subject(QUALITY_TOPIC), load_schema(QUALITY_SCHEMA)
    )
    # Register output schemas now: a registry that refuses them stops start-up.
    for pipeline in pipelines.values():
        pipeline.register()
    _ = alert_encoder.schema_id, quality_encoder.schema_id
    alert_schema, quality_schema = (
        dataschema(subject, schema_version(registry, subject, load_schema(schema)))
        for subject, schema in (
            (value_subject(ALERTS_TOPIC), ALERTS_SCHEMA),
            (value_subject(QUALITY_TOPIC), QUALITY_SCHEMA),
        )
    )

    warm_up(datetime.now(UTC).date())  # before the loop runs, not at the first evaluation
    tune_gc_for_batches()
    core = BatchCore(
        pipelines,
        frozenset(reference.receiving_units),
        contributions=contributions,
        presence=field_presence,
        event_id_window=settings.processor_event_id_window,
    )
    loop = BatchLoop(
        settings,
        metrics,
        core,
        {t: p.dataset for t, p in pipelines.items()},
        batch_size=settings.processor_batch_size,
        state_every_s=settings.processor_state_every_ms / 1000,
        store=store,
    )

    def topic(name: str, **kw: Any) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, partitions=kafka.partitions, **kw)

    deltas_topic = topic(rule_deltas_topic(settings.processor_group))
    stats_topic = topic(unit_stats_topic(settings.processor_group))
    alerts_topic = topic(ALERTS_TOPIC)
    quality_topic = topic(QUALITY_TOPIC)
    rule_state = app.Table("rule-state", key_type=str)
    open_alerts = app.Table("open-alerts", key_type=str)
    quality_state = app.Table("quality-state", key_type=str)

    # ---- hosting the loop: a thread started with the worker, stopped before it ends

    @app.task  # type: ignore[untyped-decorator]
    async def start_loop() -> None:
        t = threading.Thread(target=_run_loop, name="databus-batch-loop", daemon=True)
        thread["t"] = t
        t.start()

    def _run_loop() -> None:
        returned = False
        try:
            try:
                loop.run()
            finally:
                if store is not None:
                    store.close()
            returned = True
        finally:
            # Not ``except``: an error a librdkafka callback raised comes out of
            # ``consume`` as a bare KafkaError, which no except clause matches.
            if not returned:
                log.error("the batch loop stopped on an error; the worker exits")
                _exit_soon(DatabusError("the batch loop stopped on an error"))
            elif not (stopping.is_set() or loop.stop_event.is_set()):
                log.error("the batch loop returned without being stopped; the worker exits")
                _exit_soon(DatabusError("the batch loop returned without being stopped"))

    def _exit_soon(reason: BaseException) -> None:
        """Crash the worker (it shuts down and exits non-zero); exit at once if it has
        not within ``_EXIT_GRACE_S``."""

        failed.set()

        def hard_exit() -> None:
            log.critical("the worker did not exit within %g s; exiting now", _EXIT_GRACE_S)
            logging.shutdown()
            os._exit(_EXIT_CODE)

        timer = threading.Timer(_EXIT_GRACE_S, hard_exit)
        timer.daemon = True
        timer.start()
        app.loop.call_soon_threadsafe(lambda: asyncio.ensure_future(app.crash(reason)))

    def stop_loop(_sender: Any, /, *_args: Any, signal: Any, **_kw: Any) -> None:
        stopping.set()
        loop.stop_event.set()
        t = thread.get("t")
        if t is not None:
            t.join(timeout=60)

    app.on_before_shutdown.connect(stop_loop)

    # ---- rules: deltas folded into tables, alerts decided by the lifecycle
    async def _evaluate(
        name: str, group: str, key: str, state: dict[str, Any], now_ms: int
    ) -> None:
        for cond in RULE_GROUPS[group].evaluate(key, state, now_ms, rules):
            alert_key = open_alert_key(cond)
            current = open_alerts.get(alert_key)
            new_open, record = decide(current, cond, now_ms)
            if new_open != current:
                if new_open is None:
                    open_alerts.pop(alert_key, None)
                else:
                    open_alerts[alert_key] = new_open
            if record is not None:
                await alerts_topic.send(
                    key=name.encode(),
                    value=alert_encoder(record),
                    headers=alert_headers(record, now_ms, alert_schema),
                )
                metrics.alerts.labels(cond.rule, record["state"]).inc()
                log.info("alert %s %s", record["state"], cond.rule)

    @app.agent(deltas_topic)
    async def rules_agent(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            name = (event.key or b"").decode()
            message = orjson.loads(event.value)
            held = rule_state.get(name) or {"hw": {}, "state": None, "watermark_ms": 0}
            group = str(message.get("group") or held.get("group") or "")
            if group not in RULE_GROUPS:
                continue
            key = str(message.get("key") or held.get("key") or "")
            if message.get(_TICK):
                if held["state"] is None:
                    continue
                now_ms = max(int(held["watermark_ms"]), int(message["now_ms"]))
                await _evaluate(name, group, key, held["state"], now_ms)
                continue
            hw: dict[str, int] = held["hw"]
            fresh = [
                d
                for d in message["deltas"]
                if d["offset"] < 0 or d["offset"] > hw.get(d["src"], -1)
            ]
            if not fresh:
                continue  # a redelivered batch this state has already applied
            rule_group = RULE_GROUPS[group]
            if group in _STEPWISE:
                # A streak that starts and ends inside one batch must still be raised
                # and resolved: fold and evaluate delta by delta, in event-time order.
                state = held["state"]
                for d in sorted(fresh, key=lambda d: int(d["event_ms"])):
                    state = rule_group.apply(state, [d], rules)
                    await _evaluate(name, group, key, state, int(state.get("wm") or 0))
            else:
                state = rule_group.apply(held["state"], fresh, rules)
            for d in fresh:
                if d["offset"] >= 0:
                    hw[d["src"]] = max(hw.get(d["src"], -1), d["offset"])
            watermark = max(
                [int(held["watermark_ms"]), int(state.get("wm") or 0)]
                + [int(d["event_ms"]) for d in fresh]
            )
            rule_state[name] = {
                "group": group,
                "key": key,
                "hw": hw,
                "state": state,
                "watermark_ms": watermark,
            }
            metrics.events_consumed.labels(group, "rules").inc(len(fresh))
            await _evaluate(name, group, key, state, watermark)

    # ---- quality: rolling counts per dataset and unit, scored and published on ticks
    @app.agent(stats_topic)
    async def quality_agent(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            name = (event.key or b"").decode()
            stats = UnitStats.from_json(orjson.loads(event.value))
            quality_state[name] = apply_stats(quality_state.get(name), stats)
            metrics.events_consumed.labels(stats.dataset, "quality").inc(stats.received)

    @app.timer(settings.alerts.evaluate_every_s)  # type: ignore[untyped-decorator]
    async def tick() -> None:
        # Wall-clock evaluation only when caught up: during a backlog, wall-clock time
        # runs ahead of the events (a dossier would count overdue whose completion is
        # still queued). Caught up = the loop's last poll came back short, or idle.
        now_ms = int(time.time() * 1000)
        idle = time.monotonic() - loop.last_record_monotonic >= settings.alerts.evaluate_every_s
        if loop.caught_up or idle:
            for name in list(rule_state.keys()):
                await deltas_topic.send(
                    key=name.encode(), value=json.dumps({_TICK: True, "now_ms": now_ms}).encode()
                )
        for name in list(quality_state.keys()):
            dataset_id, unit = name.split("|", 1)
            dataset = DATASETS.get(dataset_id)
            if dataset is None:
                continue
            result = scores(dataset, quality_state[name], now_ms)
            publish_quality_metrics(metrics, dataset_id, unit, result)
            await quality_topic.send(
                key=name.encode(),
                value=quality_encoder(quality_record(dataset, unit, result, now_ms)),
                headers=quality_headers(dataset_id, unit, now_ms, quality_schema),
            )

    _ = (start_loop, stop_loop, rules_agent, quality_agent, tick)
    return app
