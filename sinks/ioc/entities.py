"""Latest state per entity of every catalog dataset but the dossiers, and its KPI sums.

Keys. Each dataset's entities are spread over ``SHARDS`` hash tags
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

One script call touches one entity, its shard's ``sum`` and the sorted sets the
dataset declares for that entity: all under one tag, so one Redis Cluster slot.
Readers add the ``SHARDS`` sums of a dataset; there is no cross-slot write.

Version guard (the same as the dossiers'): ``source.version`` as a fixed-width
string, ties broken by the greater ``event_id``; older and replayed events change
nothing. Personal fields (catalog ``personal_fields``) never reach Redis: only the
std schema's fields minus those are copied.
"""

from __future__ import annotations

import binascii
import json
from collections.abc import Mapping
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
    "SHARDS",
    "EntityPlan",
    "entity_key",
    "plan_entity",
    "public_fields",
    "shard_input",
    "shard_of",
    "shard_tag",
    "sum_key",
    "zset_key",
]

SHARDS = 16
_SHARD_FIELDS = {"environment.station_readings": ("station_id",)}
_NO_CONTRIBUTOR = Contributor(lambda _state: NOTHING)

ENTITY_DATASETS: tuple[str, ...] = tuple(sorted(d for d in DATASETS if d != DOSSIERS.id))

# KEYS: entity, sum, then the sorted sets the dataset declares for the entity.
# ARGV: vkey, event_id, tombstone ttl ms ("0" = keep), contribution, then
# field/value pairs. A contribution is lines "h<TAB>field<TAB>amount" and
# "z<TAB>key index<TAB>member<TAB>score".
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
local function apply(c, sign)
  if (not c) or c == '' then return end
  for _, line in ipairs(split(c, '\\n')) do
    local p = split(line, '\\t')
    if p[1] == 'h' then
      -- zero fields are removed so every delivery order leaves the same hash
      if redis.call('HINCRBY', KEYS[2], p[2], sign * tonumber(p[3])) == 0 then
        redis.call('HDEL', KEYS[2], p[2])
      end
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


def shard_tag(dataset_id: str, shard: int) -> str:
    return f"{{{dataset_id}:{shard:02d}}}"


def entity_key(dataset_id: str, key: str) -> str:
    """The hash of entity ``key`` (the catalog key: values joined with "|")."""
    sin = shard_input(DATASETS[dataset_id], key)
    return f"ioc:{shard_tag(dataset_id, shard_of(dataset_id, sin))}:e:{key}"


def sum_key(dataset_id: str, shard: int) -> str:
    return f"ioc:{shard_tag(dataset_id, shard)}:sum"


def zset_key(dataset_id: str, shard: int, name: str) -> str:
    return f"ioc:{shard_tag(dataset_id, shard)}:{name}"


def shard_input(dataset: Dataset, key: str) -> str:
    """The shard input of an entity, from its catalog key (a prefix of the key fields)."""
    n = len(_SHARD_FIELDS.get(dataset.id, dataset.key_fields))
    return "|".join(key.split("|")[:n]) if n < len(dataset.key_fields) else key


def _clean(part: str) -> str:
    if "\t" in part or "\n" in part:
        raise ValueError("a KPI dimension holds a tab or a newline")
    return part


def _encode(c: Contribution, zsets: tuple[str, ...]) -> str:
    lines = [f"h\t{_clean(name)}\t{int(n)}" for name, n in sorted(c.counters.items()) if n]
    for m in c.members:
        # ValueError on a set the dataset did not declare: the script could not
        # name it to Redis Cluster before running
        index = zsets.index(m.zset) + 3
        lines.append(f"z\t{index}\t{_clean(m.member)}\t{int(m.score)}")
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class EntityPlan:
    """One entity change, planned: the script call, and what the geo index needs."""

    call: ScriptCall
    dataset: str
    shard_input: str
    vkey: str
    event_id: str
    state: Mapping[str, Any] | None  # None after a delete


def plan_entity(
    script: Script, dataset: Dataset, event: Mapping[str, Any], record_key: bytes | None,
    tombstone_ttl_ms: str,
) -> EntityPlan:  # fmt: skip
    """Plan one std event of a sector dataset. Raises ``KeyError``/``TypeError``/
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
    sin = shard_input(dataset, key)
    shard = shard_of(dataset.id, sin)
    contributor = CONTRIBUTORS.get(dataset.id, _NO_CONTRIBUTOR)
    zsets = contributor.zsets(sin)
    contribution = NOTHING if state is None else contributor.contribute(state)
    version = int(event["source"]["version"])
    vkey = sortable(version)
    event_id = str(event["event_id"])
    fields: list[str] = [
        "_version", str(version), "_op", op, "_ts_ms", field_text(event["ts_ms"]),
    ]  # fmt: skip
    if state is not None:
        for name in public_fields(dataset.id):
            value = state.get(name)
            if value is not None:
                fields += (name, field_text(value))
    call = ScriptCall(
        script,
        (
            entity_key(dataset.id, key),
            sum_key(dataset.id, shard),
            *(zset_key(dataset.id, shard, z) for z in zsets),
        ),
        (
            vkey,
            event_id,
            tombstone_ttl_ms if state is None else "0",
            _encode(contribution, zsets),
            *fields,
        ),
    )
    return EntityPlan(call, dataset.id, sin, vkey, event_id, state)
