"""IOC store sink: latest state of every catalog dataset, the dashboards' KPIs, the
geo index and the alerts, in Redis (or Redis Cluster).

This module plans and executes; the parts live beside it:

=================== ==============================================================
module              what it does
=================== ==============================================================
``ioc_entities``    the one plan: latest state of every dataset, with KPI sums
``ioc_kpis``        pure: what a dataset's state contributes to the KPIs
``ioc_dossiers``    dossier keys (per receiving unit); unit, day and sector KPIs
``ioc_read``        reading the sector KPIs (education, health, AQI, feedback)
``ioc_geo``         the geo index of located entities (GEOADD / GEOSEARCH)
``ioc_alerts``      the capped alert stream, open alerts, the pub/sub channel
``ioc_ledger``      quality reports and the delivery ledger per owner unit
``ioc_codec``       values to Redis strings, sortable versions, error mapping
=================== ==============================================================

Key layout (every key starts with ``ioc:``; ``{...}`` is the Redis Cluster hash
tag; every script touches keys of one tag only — ``docs/ioc-store.md`` has the
whole table)::

    ioc:units                          SET    units with dossiers (own slot)
    ioc:{unit:U}:dossier:ID            HASH   a dossier's latest public state
    ioc:{unit:U}:kpi | :kpi:daily      HASH   unit totals | "DAY|measure" counts
    ioc:{unit:U}:open                  ZSET   open dossiers by due time
    ioc:{D:NN}:e:KEY                   HASH   latest state of entity KEY of dataset D
    ioc:{D:NN}:sum                     HASH   KPI counters of shard NN of D
    ioc:{D:NN}:due | :aqi:STATION      ZSET   feedback deadlines | AQI by reading time
    ioc:{geo:D}:points | :v            GEO    located members of D | their guard
    ioc:{alerts}:stream | :open | :seen:ID    alerts (capped stream, open, dedup)
    ioc:{ledger}:quality | :units      HASH   quality reports | delivery ledger rows
    ioc:{offsets}:applied | :store     HASH   Kafka offsets applied | the store's id
    channel ioc:alerts                 PUBLISH every newly appended alert

Idempotence: every state change is one Lua script with a version guard
(``source.version`` compared as a fixed-width string, ties broken by the greater
``event_id``), which removes the entity's old KPI contribution and adds the new one
in the same step; deletes leave a versioned tombstone, so an older event replayed
later cannot resurrect the entity. Replays and any delivery order converge.

Healing: each batch's pipeline ends with the Kafka offsets it applied
(``ioc_offsets``); the runner compares them with the group's committed offsets
and replays from Kafka whatever a store that lost data, came back from an older
snapshot or is a new replica lacks (``sinks.replay``, runbook
``docs/runbooks/ioc-store.md``).

Personal fields (catalog ``personal_fields``) never reach Redis: every dataset
copies its std schema's fields minus the personal ones.

Failures: a record that cannot be planned (missing fields, naive times, unknown
shape) is returned as ``Rejected(reason="malformed")`` and the rest of the batch
is written; a script Redis refuses for one record is ``Rejected("redis_rejected")``.
A connection error, a timeout, a loading or read-only server raise a retriable
``SinkError``; NOSCRIPT (Redis restarted or SCRIPT FLUSH) reloads the scripts
and sends the batch again, which the guards make safe.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import redis
import redis.exceptions as rex

from bus.consumers import TP, next_offsets
from bus.errors import SinkError
from bus.metrics import Metrics
from schemas.catalog import ALERTS_TOPIC, DATASETS, DOSSIERS, QUALITY_TOPIC, Dataset
from schemas.domain.reference import load_reference
from sinks.base import Applied, Rejected, SinkRecord
from sinks.ioc.alerts import (
    ALERT_CHANNEL,
    ALERT_LUA,
    ALERT_STREAM_KEY,
    OPEN_ALERTS_KEY,
    alert_seen_key,
    is_alert,
    plan_alert,
)
from sinks.ioc.codec import RETRIABLE, ScriptCall, sink_error
from sinks.ioc.dossiers import (
    UNITS_KEY,
    daily_kpi_key,
    dossier_key,
    kpi_key,
    open_dossiers_key,
    read_unit_kpis,
    upgrade_legacy_dossiers,
)
from sinks.ioc.entities import ENTITY_LUA, plan_entity
from sinks.ioc.geo import GEO_LUA, plan_geo
from sinks.ioc.ledger import QUALITY_LUA, is_quality, plan_quality, refresh_ledger
from sinks.ioc.offsets import OFFSETS_LUA, plan_offsets, read_applied

__all__ = [
    "ALERT_CHANNEL",
    "ALERT_STREAM_KEY",
    "ALERT_TOPIC",
    "DOSSIER_TOPIC",
    "OPEN_ALERTS_KEY",
    "UNITS_KEY",
    "IocStoreSink",
    "alert_seen_key",
    "daily_kpi_key",
    "dossier_key",
    "kpi_key",
    "open_dossiers_key",
    "read_unit_kpis",
]

log = logging.getLogger(__name__)

DOSSIER_TOPIC = DOSSIERS.std_topic
ALERT_TOPIC = ALERTS_TOPIC

_MS = timedelta(milliseconds=1)
# what a malformed value raises while planned (missing key, wrong type, naive time)
_MALFORMED = (KeyError, TypeError, ValueError, AttributeError, IndexError, ArithmeticError)


class IocStoreSink:
    """Writes std events of every catalog dataset and alerts into the IOC store.

    The caller owns ``redis_client`` (``close`` leaves it open). Works with
    clients built with or without ``decode_responses``.
    """

    def __init__(
        self,
        redis_client: redis.Redis,
        *,
        dossier_topic: str = DOSSIER_TOPIC,
        alert_topic: str = ALERT_TOPIC,
        alert_stream_maxlen: int = 10_000,
        alert_channel: str = ALERT_CHANNEL,
        alert_dedup_ttl: timedelta = timedelta(days=7),
        tombstone_ttl: timedelta | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        if alert_stream_maxlen < 1:
            raise ValueError("alert_stream_maxlen must be positive")
        self._redis = redis_client
        self._alert_topic = alert_topic
        self._maxlen = str(alert_stream_maxlen)
        self._channel = alert_channel
        # a replay older than this TTL appends its alert to the stream again;
        # keep it at least as long as the alerts topic's retention
        self._dedup_ttl_ms = str(max(1, alert_dedup_ttl // _MS))
        self._tombstone_ttl_ms = "0" if tombstone_ttl is None else str(max(1, tombstone_ttl // _MS))
        self._alert_script = redis_client.register_script(ALERT_LUA)
        self._entity_script = redis_client.register_script(ENTITY_LUA)
        self._geo_script = redis_client.register_script(GEO_LUA)
        self._quality_script = redis_client.register_script(QUALITY_LUA)
        self._offsets_script = redis_client.register_script(OFFSETS_LUA)
        self._unit_names = {u.code: u.name for u in load_reference().receiving_units.values()}
        self._by_topic: dict[str, Dataset] = {d.std_topic: d for d in DATASETS.values()}
        self._by_topic[dossier_topic] = DOSSIERS
        self._closed = False
        self._metrics = metrics  # for the ledger gauges
        self._from: dict[TP, int] = {}
        self._behind = False

    # -- Sink -----------------------------------------------------------------

    def setup(self) -> None:
        try:
            self._redis.ping()
            self._load_scripts()
            upgraded = upgrade_legacy_dossiers(self._redis)
            if upgraded:
                log.info("ioc_store: %d dossier hashes moved to the entity layout", upgraded)
        except rex.RedisError as exc:
            raise sink_error(exc, "setup") from exc

    def write(self, batch: Sequence[SinkRecord]) -> Sequence[Rejected]:
        if self._closed:
            raise SinkError("ioc_store: write after close", retriable=False)
        plans: list[tuple[int, list[ScriptCall]]] = []
        rejected: dict[int, Rejected] = {}
        indexed: set[tuple[str, str]] = set()
        for i, record in enumerate(batch):
            try:
                plans.append((i, self.plan(record, indexed)))
            except _MALFORMED as exc:
                rejected[i] = Rejected(
                    record,
                    "malformed",
                    f"{record.topic}[{record.partition}]@{record.offset}: "
                    f"{type(exc).__name__}: cannot be stored",
                    type(exc).__name__,
                )
        calls = [(i, call) for i, cs in plans for call in cs]
        # last in the pipeline: the store's offsets are never ahead of its data
        offsets = plan_offsets(
            self._offsets_script,
            next_offsets((r.topic, r.partition, r.offset) for r in batch),
            self._from,
        )
        if batch:
            try:
                results = self._execute([*calls, (-1, offsets)], indexed)
                if any(isinstance(r, rex.NoScriptError) for r in results):
                    # Redis restarted or SCRIPT FLUSH ran: load and resend the
                    # batch, which the version guards make safe.
                    self._load_scripts()
                    results = self._execute([*calls, (-1, offsets)], indexed)
            except rex.RedisError as exc:
                raise sink_error(exc, "write") from exc
            first = len({index for index, _member in indexed})
            self._note_gaps(results[-1])
            for (i, _call), result in zip(calls, results[first:-1], strict=True):
                if isinstance(result, rex.ResponseError) and i not in rejected:
                    if isinstance(result, rex.NoScriptError):
                        raise SinkError("ioc_store: scripts vanished twice", retriable=True)
                    log.error("ioc_store: Redis refused a script for %s", batch[i].topic)
                    rejected[i] = Rejected(
                        batch[i], "redis_rejected", str(result)[:200], type(result).__name__
                    )
        if any(self._is_quality(r) for r in batch):
            try:
                refresh_ledger(self._redis, datetime.now(UTC), self._unit_names, self._metrics)
            except rex.RedisError as exc:
                raise sink_error(exc, "ledger") from exc
        return [rejected[i] for i in sorted(rejected)]

    def flush(self) -> None:
        """Nothing is buffered: ``write`` returns once Redis has applied the batch."""

    def close(self) -> None:
        self._closed = True

    # -- TracksOffsets ----------------------------------------------------------

    def applied(self) -> Applied:
        try:
            return read_applied(self._redis)
        except rex.RedisError as exc:
            raise sink_error(exc, "reading the applied offsets") from exc

    def expect_from(self, positions: Mapping[TP, int]) -> None:
        self._from = dict(positions)

    def behind(self) -> bool:
        return self._behind

    def _note_gaps(self, result: Any) -> None:
        if isinstance(result, rex.ResponseError):
            raise SinkError(
                f"ioc_store: Redis refused the offsets script: {type(result).__name__}",
                retriable=True,
            )
        self._behind = bool(int(result))
        if self._behind:
            log.warning("ioc_store: the store lacks records before this batch (%s)", result)

    def mark_applied(self, ends: Mapping[TP, int]) -> None:
        if not ends:
            return
        call = plan_offsets(self._offsets_script, ends, self._from)
        try:
            results = self._execute([(-1, call)], set())
            if isinstance(results[-1], rex.NoScriptError):
                self._load_scripts()
                results = self._execute([(-1, call)], set())
        except rex.RedisError as exc:
            raise sink_error(exc, "marking offsets") from exc
        self._note_gaps(results[-1])

    # -- planning -------------------------------------------------------------

    def plan(self, record: SinkRecord, indexed: set[tuple[str, str]]) -> list[ScriptCall]:
        """The script calls that store one record (no I/O); raises on a malformed one.
        Adds to ``indexed`` the (SET key, member) pairs to add beside the scripts."""
        value = record.value
        if record.topic == self._alert_topic or (
            record.topic not in self._by_topic and is_alert(value)
        ):
            return [
                plan_alert(
                    self._alert_script,
                    value,
                    maxlen=self._maxlen,
                    dedup_ttl_ms=self._dedup_ttl_ms,
                    channel=self._channel,
                )
            ]
        if self._is_quality(record):
            return [plan_quality(self._quality_script, value)]
        entity = plan_entity(
            self._entity_script,
            self._dataset_of(record),
            value,
            record.key,
            self._tombstone_ttl_ms,
        )
        if entity.index is not None:
            indexed.add(entity.index)
        geo = plan_geo(self._geo_script, entity)
        return [*entity.calls] if geo is None else [*entity.calls, geo]

    def _is_quality(self, record: SinkRecord) -> bool:
        return record.topic == QUALITY_TOPIC or (
            record.topic not in self._by_topic and is_quality(record.value)
        )

    def _dataset_of(self, record: SinkRecord) -> Dataset:
        """The catalog dataset of a record; ValueError when it is none's."""
        found = self._by_topic.get(record.topic)
        if found is not None:
            return found
        value: Mapping[str, Any] = record.value
        source = value.get("source")
        named = source.get("dataset") if isinstance(source, Mapping) else None
        if named in DATASETS:
            return DATASETS[named]
        state = value.get("after") or value.get("before")
        if isinstance(state, Mapping) and "dossier_id" in state and "receiving_unit_code" in state:
            return DOSSIERS
        raise ValueError("neither a std event of a catalog dataset nor an alert")

    # -- execution ------------------------------------------------------------

    def _load_scripts(self) -> None:
        for script in (
            self._alert_script,
            self._entity_script,
            self._geo_script,
            self._quality_script,
            self._offsets_script,
        ):
            self._redis.script_load(script.script)

    def _execute(
        self, calls: Sequence[tuple[int, ScriptCall]], indexed: set[tuple[str, str]]
    ) -> list[Any]:
        # EVALSHA straight on the pipeline: redis-py's Script-in-pipeline path
        # sends SCRIPT EXISTS first, a second round trip on every batch.
        pipe = self._redis.pipeline(transaction=False)
        members: dict[str, list[str]] = {}
        for index, member in sorted(indexed):
            members.setdefault(index, []).append(member)
        for index, names in members.items():
            pipe.sadd(index, *names)
        for _i, call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        results: list[Any] = pipe.execute(raise_on_error=False)
        for result in results:
            # a connection dropped mid-pipeline comes back as a value here
            if isinstance(result, RETRIABLE) or (
                isinstance(result, rex.RedisError) and not isinstance(result, rex.ResponseError)
            ):
                raise result
        return results
