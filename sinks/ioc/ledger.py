"""The delivery ledger in the IOC store, for the dashboards.

The processor's ``quality.v1`` reports (one per dataset and source unit) are kept
in Redis; after every batch that brought one, the ledger is computed from all of
them with ``databus.ledger.build_ledger`` — the function ``databus catalog status``
uses, so both show the same figures — and stored per owner unit.

Keys (all in the ``{ledger}`` slot)::

    ioc:{ledger}:quality      HASH  "dataset|unit" -> JSON of the newest quality report
    ioc:{ledger}:quality:ts   HASH  "dataset|unit" -> its report time (sortable), the guard
    ioc:{ledger}:units        HASH  owner unit -> JSON of its ledger row
    ioc:{ledger}:at           STRING epoch ms of the last computation

The declared-vs-received reconciliation needs the raw topics and stays with
``databus catalog status``. Given the sink's ``Metrics``, each computation also sets
``databus_ledger_datasets{owner_unit,state}`` and ``databus_ledger_quality{owner_unit}``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

import redis
from redis.commands.core import Script

from bus.metrics import Metrics
from schemas.catalog import DATASETS
from schemas.domain.delivery import UnitLedger, build_ledger
from sinks.ioc.codec import LUA_BYTES_LT, ScriptCall, epoch_ms, field_text, sortable

__all__ = [
    "LEDGER_KEY",
    "QUALITY_KEY",
    "QUALITY_LUA",
    "export_ledger_metrics",
    "is_quality",
    "plan_quality",
    "read_ledger",
    "refresh_ledger",
]

QUALITY_KEY = "ioc:{ledger}:quality"
_QUALITY_TS_KEY = "ioc:{ledger}:quality:ts"
LEDGER_KEY = "ioc:{ledger}:units"
_AT_KEY = "ioc:{ledger}:at"

# KEYS: quality, quality ts.  ARGV: field, sortable report time, json.
QUALITY_LUA = (
    LUA_BYTES_LT
    + """
local last = redis.call('HGET', KEYS[2], ARGV[1])
if last and not bytes_lt(last, ARGV[2]) then return 0 end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"""
)


def is_quality(value: Mapping[str, Any]) -> bool:
    return "unit_code" in value and "overall" in value and "dataset" in value


def plan_quality(script: Script, report: Mapping[str, Any]) -> ScriptCall:
    """Keep a quality report unless a newer one of its dataset and unit is stored."""
    field = f"{report['dataset']}|{report['unit_code']}"
    row = {k: epoch_ms(v) if isinstance(v, datetime) else v for k, v in report.items()}
    return ScriptCall(
        script,
        (QUALITY_KEY, _QUALITY_TS_KEY),
        (field, sortable(epoch_ms(report["ts_ms"])), field_text(row)),
    )


def export_ledger_metrics(metrics: Metrics, ledger: Iterable[UnitLedger]) -> None:
    """The ledger's figures per owner unit (a bounded label: the catalog's units)."""
    for row in ledger:
        counts = {"assigned": row.assigned, "delivering": row.delivering}
        counts |= {"live": row.live, "late": row.late}
        for state, n in counts.items():
            metrics.ledger_datasets.labels(row.unit, state).set(n)
        if row.quality is not None:
            metrics.ledger_quality.labels(row.unit).set(row.quality)
        else:
            with contextlib.suppress(KeyError):  # never exported
                metrics.ledger_quality.remove(row.unit)


def refresh_ledger(
    client: redis.Redis,
    now: datetime,
    unit_names: Mapping[str, str],
    metrics: Metrics | None = None,
) -> int:
    """Recompute every owner unit's ledger row from the stored reports; returns how many."""
    stored: Mapping[Any, Any] = client.hgetall(QUALITY_KEY)
    rows = [json.loads(v) for v in stored.values()]
    ledger = build_ledger(DATASETS.values(), rows, now, unit_names=unit_names)
    pipe = client.pipeline(transaction=True)
    pipe.hset(
        LEDGER_KEY, mapping={u.unit: json.dumps(u.as_json(), ensure_ascii=False) for u in ledger}
    )
    pipe.set(_AT_KEY, str(epoch_ms(now)))
    pipe.execute()
    if metrics is not None:
        export_ledger_metrics(metrics, ledger)
    return len(ledger)


def read_ledger(client: redis.Redis) -> list[dict[str, Any]]:
    """The ledger rows as stored, sorted by owner unit."""
    stored: Mapping[Any, Any] = client.hgetall(LEDGER_KEY)
    return sorted((json.loads(v) for v in stored.values()), key=lambda row: str(row["unit"]))
