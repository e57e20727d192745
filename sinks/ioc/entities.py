"""Latest state per entity of every catalog dataset, and its KPI sums: one plan.

Every std event goes through :func:`plan_entity`: one script call that applies
the entity's new state, removes its old KPI contribution and adds the new one,
all under one hash tag (one Redis Cluster slot). What differs between datasets is
configuration: where an entity lives (its :class:`Placement`) and what it
contributes (its :class:`sinks.ioc.kpis.Contributor`).

Placements. Most datasets spread their entities over ``SHARDS`` hash tags
``{DATASET:NN}`` (NN = CRC16 of the shard input mod ``SHARDS``, two digits); the
shard input is the catalog key, except station readings, which shard by
``station_id`` so all readings of a station share a slot::

    ioc:{D:NN}:e:KEY        HASH  latest non-personal fields of entity KEY (the
                                  catalog key, values joined with "|"), plus _vkey,
                                  _version, _event_id, _op, _ts_ms and _c (its
                                  contribution); after op d a tombstone (meta only)
    ioc:{D:NN}:sum          HASH  counter field -> sum over the shard's entities
                                  (see :mod:`sinks.ioc.kpis`; 0 is removed)
    ioc:{D:NN}:due          ZSET  feedback: open reports by response deadline
    ioc:{D:NN}:aqi:STATION  ZSET  station readings: "READING_MS|AQI" by reading time

Dossiers live per receiving unit instead (the shard input is the state's
``receiving_unit_code``; the unit's figures are read per unit)::

    ioc:units                   SET   every unit seen (own slot, SADD beside the scripts)
    ioc:{unit:U}:dossier:ID     HASH  as an entity hash (tombstone ``_op`` d or "moved")
    ioc:{unit:U}:kpi            HASH  the unit's sums (received, completed, ...)
    ioc:{unit:U}:kpi:daily      HASH  "YYYY-MM-DD|measure" -> count
    ioc:{unit:U}:open           ZSET  open dossier ids by due time

An entity whose shard input changes (a dossier moving to another unit) leaves a
tombstone ``_op = moved`` at the same version where it was.

Version guard: ``source.version`` as a fixed-width string, ties broken by the
greater ``event_id``; older and replayed events change nothing. Personal fields
(catalog ``personal_fields``) never reach Redis: only the std schema's fields
minus those are copied.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from redis.commands.core import Script

from schemas.catalog import DATASETS, DOSSIERS, Dataset, load_schema
from sinks.ioc.codec import LUA_BYTES_LT, ScriptCall, field_text, sortable
from sinks.ioc.kpis import CONTRIBUTORS, NOTHING, Contribution, Contributor

__all__ = [
    "ENTITY_DATASETS",
    "ENTITY_LUA",
    "SHARDED_DATASETS",
    "SHARDS",
    "UNITS_KEY",
    "EntityPlan",
    "Placement",
    "entity_key",
    "placement",
    "plan_entity",
    "public_fields",
    "shard_input",
    "shard_of",
    "shard_tag",
    "slot_key",
    "sum_key",
    "zset_key",
]

SHARDS = 16
UNITS_KEY = "ioc:units"
_SHARD_FIELDS = {"environment.station_readings": ("station_id",)}
_NO_CONTRIBUTOR = Contributor(lambda _state: NOTHING)

ENTITY_DATASETS: tuple[str, ...] = tuple(sorted(DATASETS))
# the datasets spread over SHARDS tags (all but those with their own placement)
SHARDED_DATASETS: tuple[str, ...] = tuple(d for d in ENTITY_DATASETS if d != DOSSIERS.id)

# KEYS: entity, sum, then the sorted sets, then the other hashes the dataset
# declares for the entity. ARGV: vkey, event_id, tombstone ttl ms ("0" = keep),
# contribution, then field/value pairs. A contribution is lines
# "h<TAB>field<TAB>amount" (into the sum), "z<TAB>key index<TAB>member<TAB>score"
# and "H<TAB>key index<TAB>field<TAB>amount".
ENTITY_LUA = (
    LUA_BYTES_LT
    + """
local cur = redis.call('HMGET', KEYS[1], '_vkey', '_event_id', '_c')
if cur[1] then
  if bytes_lt(ARGV[1], cur[1]) then return 0 end
  if ARGV[1] == cur[1] and not bytes_lt(cur[2] or '', ARGV[2]) then return 0 end
end
local function split(s, sep)
  local out, start = {}, 1
  while true do
    local i = string.find(s, sep, start, true)
    if not i then out[#out + 1] = string.sub(s, start); return out end
    out[#out + 1] = string.sub(s, start, i - 1)
    start = i + 1
  end
end
local function count(key, field, amount)
  -- zero fields are removed so every delivery order leaves the same hash
  if redis.call('HINCRBY', key, field, amount) == 0 then redis.call('HDEL', key, field) end
end
local function apply(c, sign)
  if (not c) or c == '' then return end
  for _, line in ipairs(split(c, '\\n')) do
    local p = split(line, '\\t')
    if p[1] == 'h' then
      count(KEYS[2], p[2], sign * tonumber(p[3]))
    elseif p[1] == 'H' then
      count(KEYS[tonumber(p[2])], p[3], sign * tonumber(p[4]))
    elseif sign < 0 then
      redis.call('ZREM', KEYS[tonumber(p[2])], p[3])
    else
      redis.call('ZADD', KEYS[tonumber(p[2])], p[4], p[3])
    end
  end
end
apply(cur[3], -1)
apply(ARGV[4], 1)
-- replace, not merge: a field that became null must not linger
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], '_vkey', ARGV[1], '_event_id', ARGV[2], '_c', ARGV[4],
  unpack(ARGV, 5))
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) end
return 1
"""
)


@dataclass(frozen=True, slots=True)
class Placement:
    """Where a dataset's entities live.

    ``tag`` names the hash tag (without braces) of a shard input; the shard input
    is ``state[routed_by]`` when set (a delete needs its ``before`` then), else a
    prefix of the catalog key. ``index`` is a SET every shard input is added to.
    """

    tag: Callable[[str], str]
    entity: str = "e"
    sum: str = "sum"
    routed_by: str | None = None
    index: str | None = None


def _sharded(dataset_id: str) -> Placement:
    return Placement(lambda sin: _tag(dataset_id, shard_of(dataset_id, sin)))


_PLACEMENTS: Mapping[str, Placement] = {
    DOSSIERS.id: Placement(
        # The tag is everything up to the first "}" after "{", so even a unit code
        # holding braces yields one identical tag for all of that unit's keys.
        lambda unit: f"unit:{unit}",
        entity="dossier",
        sum="kpi",
        routed_by="receiving_unit_code",
        index=UNITS_KEY,
    ),
}


@cache
def placement(dataset_id: str) -> Placement:
    return _PLACEMENTS.get(dataset_id) or _sharded(dataset_id)


def _record_fields(schema: Any) -> list[str]:
    """Field names of the record the envelope carries (defined in ``before``)."""
    for f in schema["fields"]:
        if f["name"] in ("before", "after"):
            for branch in f["type"]:
                if isinstance(branch, dict) and branch.get("type") == "record":
                    return [g["name"] for g in branch["fields"]]
    raise ValueError(f"schema {schema.get('name')} carries no record")


@cache
def public_fields(dataset_id: str) -> tuple[str, ...]:
    """The fields the IOC store keeps: the std record's fields minus personal ones."""
    dataset = DATASETS[dataset_id]
    schema = json.loads(load_schema(dataset.std_value_schema))
    personal = set(dataset.personal_fields)
    return tuple(name for name in _record_fields(schema) if name not in personal)


def shard_of(dataset_id: str, shard_input: str) -> int:
    # CRC16-XMODEM, the checksum Redis Cluster uses: stable across processes
    return binascii.crc_hqx(shard_input.encode(), 0) % SHARDS


def _tag(dataset_id: str, shard: int) -> str:
    return f"{dataset_id}:{shard:02d}"


def shard_tag(dataset_id: str, shard: int) -> str:
    return f"{{{_tag(dataset_id, shard)}}}"


def slot_key(dataset_id: str, shard_input: str, name: str) -> str:
    """Key ``name`` in the hash tag of ``shard_input`` of a dataset."""
    return _tagged(placement(dataset_id).tag(shard_input), name)


def _tagged(tag: str, name: str) -> str:
    return f"ioc:{{{tag}}}:{name}"


def entity_key(dataset_id: str, key: str, state: Mapping[str, Any] | None = None) -> str:
    """The hash of entity ``key`` (the catalog key: values joined with "|"); ``state``
    for a dataset routed by a field of its state."""
    sin = shard_input(DATASETS[dataset_id], key, state)
    return slot_key(dataset_id, sin, f"{placement(dataset_id).entity}:{key}")


def sum_key(dataset_id: str, shard: int) -> str:
    return zset_key(dataset_id, shard, "sum")


def zset_key(dataset_id: str, shard: int, name: str) -> str:
    return f"ioc:{shard_tag(dataset_id, shard)}:{name}"


def shard_input(dataset: Dataset, key: str, state: Mapping[str, Any] | None = None) -> str:
    """The shard input of an entity: a field of its state for a dataset routed by
    one, else from its catalog key (a prefix of the key fields)."""
    routed_by = placement(dataset.id).routed_by
    if routed_by is not None:
        if state is None:
            raise ValueError(f"{dataset.id}: no state to route the entity by")
        return str(state[routed_by])
    n = len(_SHARD_FIELDS.get(dataset.id, dataset.key_fields))
    return "|".join(key.split("|")[:n]) if n < len(dataset.key_fields) else key


def _clean(part: str) -> str:
    if "\t" in part or "\n" in part:
        raise ValueError("a KPI dimension holds a tab or a newline")
    return part


def _encode(c: Contribution, zsets: tuple[str, ...], hashes: tuple[str, ...]) -> str:
    lines = [f"h\t{_clean(name)}\t{int(n)}" for name, n in sorted(c.counters.items()) if n]
    for m in c.members:
        # ValueError on a set the dataset did not declare: the script could not
        # name it to Redis Cluster before running
        index = zsets.index(m.zset) + 3
        lines.append(f"z\t{index}\t{_clean(m.member)}\t{int(m.score)}")
    for t in c.tallies:
        if t.amount:
            index = hashes.index(t.hash) + 3 + len(zsets)
            lines.append(f"H\t{index}\t{_clean(t.field)}\t{int(t.amount)}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class EntityPlan:
    """One entity change, planned: the script calls (a tombstone where the entity
    was, when it moved, then its new state), and what the geo index needs."""

    calls: tuple[ScriptCall, ...]
    dataset: str
    shard_input: str
    vkey: str
    event_id: str
    state: Mapping[str, Any] | None  # None after a delete
    # (SET key, member) to add beside the scripts, for a placement with an index
    index: tuple[str, str] | None


def _call(
    script: Script, dataset_id: str, key: str, sin: str, contributor: Contributor,
    args: tuple[str, ...],
) -> ScriptCall:  # fmt: skip
    place = placement(dataset_id)
    names = (f"{place.entity}:{key}", place.sum, *contributor.zsets(sin), *contributor.hashes(sin))
    tag = place.tag(sin)
    return ScriptCall(script, tuple(_tagged(tag, name) for name in names), args)


def plan_entity(
    script: Script, dataset: Dataset, event: Mapping[str, Any], record_key: bytes | None,
    tombstone_ttl_ms: str,
) -> EntityPlan:  # fmt: skip
    """Plan one std event of a catalog dataset. Raises ``KeyError``/``TypeError``/
    ``ValueError`` on a malformed event."""
    op: str = event["op"]
    if op not in ("c", "u", "r", "d"):
        raise ValueError(f"unknown op {op!r}")
    after: Mapping[str, Any] | None = event.get("after")
    before: Mapping[str, Any] | None = event.get("before")
    state = after if op != "d" else None
    if op != "d" and after is None:
        raise ValueError(f"op {op!r} without 'after'")
    located = after if op != "d" else (before or after)
    if located is not None:
        key = dataset.key_of(located)
    elif record_key:
        key = record_key.decode()
    else:
        raise ValueError("delete without a state or a record key to find the entity by")
    place = placement(dataset.id)
    sin = shard_input(dataset, key, located)
    contributor = CONTRIBUTORS.get(dataset.id, _NO_CONTRIBUTOR)
    contribution = NOTHING if state is None else contributor.contribute(state)
    version = int(event["source"]["version"])
    vkey = sortable(version)
    event_id = str(event["event_id"])
    ts_ms = field_text(event["ts_ms"])
    fields: list[str] = ["_version", str(version), "_op", op, "_ts_ms", ts_ms]
    if state is not None:
        for name in public_fields(dataset.id):
            value = state.get(name)
            if value is not None:
                fields += (name, field_text(value))
    calls: list[ScriptCall] = []
    if (
        place.routed_by is not None
        and state is not None
        and before is not None
        and dataset.key_of(before) == key
    ):
        old = shard_input(dataset, key, before)
        if old != sin:
            # moved: a tombstone at the same version where it was
            moved = (vkey, event_id, tombstone_ttl_ms, "")
            meta = ("_version", str(version), "_op", "moved", "_ts_ms", ts_ms)
            calls.append(_call(script, dataset.id, key, old, contributor, (*moved, *meta)))
    ttl = tombstone_ttl_ms if state is None else "0"
    encoded = _encode(contribution, contributor.zsets(sin), contributor.hashes(sin))
    calls.append(
        _call(script, dataset.id, key, sin, contributor, (vkey, event_id, ttl, encoded, *fields))
    )
    index = None if place.index is None else (place.index, sin)
    return EntityPlan(tuple(calls), dataset.id, sin, vkey, event_id, state, index)
