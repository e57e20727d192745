"""Dossiers in the IOC store: their keys and the unit, day and sector KPIs.

Dossiers are stored by the entity plan (:mod:`sinks.ioc.entities`) like every
dataset; their placement is per receiving unit and their contribution is the
unit KPIs (:func:`sinks.ioc.kpis.dossier`, :mod:`sinks.ioc.dossier_kpis`). Keys
(the ``{unit:U}`` hash tag puts all of one unit in one Redis Cluster slot)::

    ioc:units                   SET   unit codes that ever received a dossier (own slot:
                                      added beside the scripts, SADD is idempotent)
    ioc:{unit:U}:dossier:ID     HASH  public fields + _version, _vkey, _event_id, _op,
                                      _ts_ms and its contribution _c; after op d a
                                      tombstone (meta only, _op = d, or "moved")
    ioc:{unit:U}:kpi            HASH  received, completed, completed_on_time,
                                      completed_late (a field at 0 is removed)
    ioc:{unit:U}:kpi:daily      HASH  "YYYY-MM-DD|measure" -> count (local days; see
                                      :mod:`sinks.ioc.dossier_kpis`)
    ioc:{unit:U}:open           ZSET  open dossier ids scored by due time (ms)

Personal fields (``applicant_*``, the catalog's ``personal_fields``) never reach
Redis. Open overdue is not stored (a dossier becomes overdue while no one
writes); readers count the open set below ``now``. Sectors are not stored either:
a unit's sector comes from the reference data at reading time, so the per-sector
figures are sums of unit figures and no script crosses a slot.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta

import redis
import redis.exceptions as rex

from schemas.catalog import DOSSIERS
from schemas.domain.reference import load_reference
from sinks.ioc.codec import ceil_epoch_ms, local_day, sink_error, text
from sinks.ioc.dossier_kpis import (
    MEASURES,
    UnitDayKpis,
    UnitKpis,
    kpis_from_counts,
    unit_day_kpis,
)
from sinks.ioc.entities import UNITS_KEY, placement, slot_key
from sinks.ioc.kpis import DAILY_KPIS, OPEN_DOSSIERS

__all__ = [
    "UNITS_KEY",
    "daily_kpi_key",
    "dossier_key",
    "kpi_key",
    "open_dossiers_key",
    "read_sector_kpis",
    "read_unit_day_kpis",
    "read_unit_kpis",
    "unit_sectors",
    "upgrade_legacy_dossiers",
]

_PLACE = placement(DOSSIERS.id)

# KEYS: kpi, open.  ARGV: exclusive upper bound "(ms" for overdue due times.
_READ_LUA = """
local k = redis.call('HMGET', KEYS[1], 'received', 'completed', 'completed_on_time',
  'completed_late')
local overdue = redis.call('ZCOUNT', KEYS[2], '-inf', ARGV[1])
return {tonumber(k[1] or '0'), tonumber(k[2] or '0'), tonumber(k[3] or '0'),
  tonumber(k[4] or '0'), overdue}
"""

# KEYS: daily, open.  ARGV: exclusive upper bound "(ms".  Both read in one call.
_READ_DAILY_LUA = """
return {redis.call('HGETALL', KEYS[1]),
  redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1], 'WITHSCORES')}
"""


# A dossier hash written before dossiers went through the entity plan keeps its
# contribution in _c_received, _c_completed, _c_completed_on_time, _c_completed_late,
# _c_due (ms or "") and _c_days ("DAY|measure" joined by tabs). KEYS: the hash.
# ARGV: the dossier id. Rewrites it as the _c the entity plan writes (counters by
# name, the open member, the daily tallies), byte for byte; 1 when it did.
_LEGACY_LUA = """
local c = redis.call('HMGET', KEYS[1], '_c_completed', '_c_completed_late',
  '_c_completed_on_time', '_c_received', '_c_due', '_c_days')
if not c[4] then return 0 end
local names = {'completed', 'completed_late', 'completed_on_time', 'received'}
local lines = {}
for i = 1, 4 do
  if (c[i] or '0') ~= '0' then lines[#lines + 1] = 'h\\t' .. names[i] .. '\\t' .. c[i] end
end
if c[5] and c[5] ~= '' then lines[#lines + 1] = 'z\\t3\\t' .. ARGV[1] .. '\\t' .. c[5] end
for f in string.gmatch(c[6] or '', '[^\\t]+') do lines[#lines + 1] = 'H\\t4\\t' .. f .. '\\t1' end
redis.call('HSET', KEYS[1], '_c', table.concat(lines, '\\n'))
redis.call('HDEL', KEYS[1], '_c_completed', '_c_completed_late', '_c_completed_on_time',
  '_c_received', '_c_due', '_c_days')
return 1
"""
_LEGACY_MATCH = "ioc:{unit:*}:dossier:*"


def upgrade_legacy_dossiers(redis_client: redis.Redis, batch: int = 500) -> int:
    """Rewrite dossier hashes of the earlier layout (see ``_LEGACY_LUA``) so the entity
    script finds their contribution; the KPI hashes are already right. Idempotent;
    returns how many it rewrote. One SCAN of the keyspace."""
    done = 0
    keys: list[str] = []

    def rewrite() -> int:
        pipe = redis_client.pipeline(transaction=False)
        for key in keys:
            pipe.eval(_LEGACY_LUA, 1, key, key.partition("}:dossier:")[2])
        keys.clear()
        return sum(int(n) for n in pipe.execute())

    for key in redis_client.scan_iter(match=_LEGACY_MATCH, count=1000):
        keys.append(text(key))
        if len(keys) == batch:
            done += rewrite()
    if keys:
        done += rewrite()
    return done


def dossier_key(unit_code: str, dossier_id: str) -> str:
    return slot_key(DOSSIERS.id, unit_code, f"{_PLACE.entity}:{dossier_id}")


def kpi_key(unit_code: str) -> str:
    return slot_key(DOSSIERS.id, unit_code, _PLACE.sum)


def daily_kpi_key(unit_code: str) -> str:
    return slot_key(DOSSIERS.id, unit_code, DAILY_KPIS)


def open_dossiers_key(unit_code: str) -> str:
    return slot_key(DOSSIERS.id, unit_code, OPEN_DOSSIERS)


def unit_sectors() -> dict[str, str]:
    """Unit code -> sector, from the reference data (``receiving_units.csv``)."""
    return {code: u.sector for code, u in load_reference().receiving_units.items()}


def _units(redis_client: redis.Redis) -> list[str]:
    return sorted(text(u) for u in redis_client.smembers(UNITS_KEY))


def read_unit_kpis(redis_client: redis.Redis, now: datetime) -> list[UnitKpis]:
    """Every unit's KPIs as of ``now`` (aware), sorted by unit code.

    Units whose dossiers were all deleted are left out, as
    :func:`sinks.ioc.dossier_kpis.compute_unit_kpis` leaves them out.
    """
    # due_ms < now  <=>  due_ms < ceil(now in ms), for integer due_ms
    bound = f"({ceil_epoch_ms(now)}"
    try:
        units = _units(redis_client)
        # one atomic script per unit, so counters and open set are read together
        pipe = redis_client.pipeline(transaction=False)
        for unit in units:
            pipe.eval(_READ_LUA, 2, kpi_key(unit), open_dossiers_key(unit), bound)
        rows: list[list[int]] = pipe.execute()
    except rex.RedisError as exc:
        raise sink_error(exc, "read_unit_kpis") from exc
    # row: received, completed, on time, late, open overdue
    return [kpis_from_counts(unit, row) for unit, row in zip(units, rows, strict=True) if row[0]]


def read_sector_kpis(
    redis_client: redis.Redis, now: datetime, sectors: Mapping[str, str] | None = None
) -> list[UnitKpis]:
    """Per sector (``unit_code`` holds the sector), summed from the unit KPIs."""
    by_unit = read_unit_kpis(redis_client, now)
    sector_of = unit_sectors() if sectors is None else sectors
    sums: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
    for k in by_unit:
        acc = sums[sector_of.get(k.unit_code, "unknown")]
        for i, n in enumerate(
            (k.received, k.completed, k.completed_on_time, k.completed_late, k.open_overdue)
        ):
            acc[i] += n
    return [kpis_from_counts(sector, a) for sector, a in sorted(sums.items())]


def read_unit_day_kpis(
    redis_client: redis.Redis,
    now: datetime,
    sectors: Mapping[str, str] | None = None,
    units: Sequence[str] | None = None,
) -> list[UnitDayKpis]:
    """Per unit, sector and local day, sorted by (unit, day); equals
    :func:`sinks.ioc.dossier_kpis.compute_unit_day_kpis` over the stored latest states."""
    bound = f"({ceil_epoch_ms(now)}"
    sector_of = unit_sectors() if sectors is None else sectors
    try:
        wanted = _units(redis_client) if units is None else sorted(units)
        pipe = redis_client.pipeline(transaction=False)
        for unit in wanted:
            pipe.eval(_READ_DAILY_LUA, 2, daily_kpi_key(unit), open_dossiers_key(unit), bound)
        rows: list[list[list[bytes | str]]] = pipe.execute()
    except rex.RedisError as exc:
        raise sink_error(exc, "read_unit_day_kpis") from exc
    result: list[UnitDayKpis] = []
    for unit, (flat, overdue) in zip(wanted, rows, strict=True):
        days: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])
        for i in range(0, len(flat), 2):
            day, measure = text(flat[i]).split("|")
            days[day][MEASURES.index(measure)] = int(flat[i + 1])
        for i in range(1, len(overdue), 2):
            ms = int(float(text(overdue[i])))
            due = datetime.fromtimestamp(ms // 1000, UTC) + timedelta(milliseconds=ms % 1000)
            days[local_day(due)][4] += 1
        result.extend(unit_day_kpis(unit, sector_of.get(unit, "unknown"), days))
    return result
