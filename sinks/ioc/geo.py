"""The geo index of located entities, for the digital operations map.

Keys (one slot per layer, ``{geo:DATASET}``)::

    ioc:{geo:D}:points   GEO (ZSET)  member -> position (GEOADD)
    ioc:{geo:D}:v        HASH        member -> "VKEY<TAB>EVENT_ID" of the change that
                                     placed or removed it (the guard; kept after removal)

Layers and members: ``education.schools`` (school_id), ``health.facilities``
(facility_code), ``feedback.reports`` (report_id), ``transport.bus_positions``
(vehicle_plate) and ``environment.station_readings`` (station_id: a station sits
where its newest reading says; a deleted reading does not remove the station).

The geo write is a second script call, in the layer's slot, beside the entity's:
it has its own version guard (the entity's version; for stations the reading
time, then the version), so it converges on the position of the newest state
whatever the order, and a crash between the two calls is repaired by the replay.
A delete removes the member; a state without coordinates removes it too.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis
import redis.exceptions as rex
from redis.commands.core import Script

from sinks.ioc.codec import LUA_BYTES_LT, ScriptCall, epoch_ms, sink_error, sortable, text
from sinks.ioc.entities import EntityPlan

__all__ = ["GEO_DATASETS", "GEO_LUA", "GeoHit", "geo_guard_key", "geo_key", "plan_geo", "search"]

GEO_DATASETS = frozenset(
    {
        "education.schools",
        "health.facilities",
        "feedback.reports",
        "transport.bus_positions",
        "environment.station_readings",
    }
)
# the only layer whose member outlives a delete of one of its entities
_TIMED = "environment.station_readings"
# GEOADD's limits (EPSG:900913)
_MAX_LAT = 85.05112878

# KEYS: points, guard.  ARGV: member, vkey, event_id, lon ('' = remove), lat.
GEO_LUA = (
    LUA_BYTES_LT
    + """
local cur = redis.call('HGET', KEYS[2], ARGV[1])
if cur then
  local tab = string.find(cur, '\\t', 1, true)
  local v, e = string.sub(cur, 1, tab - 1), string.sub(cur, tab + 1)
  if bytes_lt(ARGV[2], v) then return 0 end
  if ARGV[2] == v and not bytes_lt(e, ARGV[3]) then return 0 end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. '\\t' .. ARGV[3])
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[1], ARGV[1])
else
  redis.call('GEOADD', KEYS[1], ARGV[4], ARGV[5], ARGV[1])
end
return 1
"""
)


def geo_key(dataset_id: str) -> str:
    return f"ioc:{{geo:{dataset_id}}}:points"


def geo_guard_key(dataset_id: str) -> str:
    return f"ioc:{{geo:{dataset_id}}}:v"


def _position(state: Mapping[str, Any] | None) -> tuple[str, str] | None:
    if state is None:
        return None
    lat, lon = state.get("latitude"), state.get("longitude")
    if lat is None or lon is None:
        return None
    lat, lon = float(lat), float(lon)
    if not (-_MAX_LAT <= lat <= _MAX_LAT and -180.0 <= lon <= 180.0):
        raise ValueError("coordinates outside the range Redis can index")
    return repr(lon), repr(lat)


def plan_geo(script: Script, plan: EntityPlan) -> ScriptCall | None:
    """The geo call that follows an entity change, or None when the layer has no say."""
    if plan.dataset not in GEO_DATASETS:
        return None
    position = _position(plan.state)
    vkey = plan.vkey
    if plan.dataset == _TIMED:
        if plan.state is None or position is None:
            return None
        vkey = sortable(epoch_ms(plan.state["reading_time"])) + plan.vkey
    lon, lat = position or ("", "")
    return ScriptCall(
        script,
        (geo_key(plan.dataset), geo_guard_key(plan.dataset)),
        (plan.shard_input, vkey, plan.event_id, lon, lat),
    )


@dataclass(frozen=True, slots=True)
class GeoHit:
    member: str
    distance_km: float
    longitude: float
    latitude: float


def search(
    redis_client: redis.Redis, dataset_id: str, longitude: float, latitude: float,
    radius_km: float, *, count: int | None = None,
) -> list[GeoHit]:  # fmt: skip
    """Members of a layer within ``radius_km`` of a point, nearest first (GEOSEARCH)."""
    try:
        rows: list[Any] = redis_client.geosearch(
            geo_key(dataset_id),
            longitude=longitude,
            latitude=latitude,
            radius=radius_km,
            unit="km",
            sort="ASC",
            count=count,
            withcoord=True,
            withdist=True,
        )
    except rex.RedisError as exc:
        raise sink_error(exc, "geo search") from exc
    return [
        GeoHit(text(member), float(dist), float(coord[0]), float(coord[1]))
        for member, dist, coord in rows
    ]
