"""The Kafka offsets the IOC store has applied, kept in the store itself.

Every batch the IOC sink writes ends with one script that raises, per topic and
partition, the next offset to apply — in the same pipeline as the data and after
it, so the offsets Redis holds are never ahead of the data Redis holds (an AOF
replayed after a crash keeps that order). A partition's offset is raised only where
the store holds everything before the batch (the runner says where each batch
continues from): a store wiped or restored between two batches gets no offsets it
could be trusted with, and the runner's next check rewinds. A store that lost its data, was restored
from an older snapshot or is a new replica holds lower offsets, or none: the runner
compares them with the group's committed offsets and replays the difference
(``sinks.replay``).

Keys (all in the ``{offsets}`` slot)::

    ioc:{offsets}:applied   HASH    "topic|partition" -> next offset to apply
    ioc:{offsets}:store     STRING  the store's identity: a random id set by the
                                    first write into an empty store
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import redis
from redis.commands.core import Script

from bus.consumers import TP
from sinks.base import Applied
from sinks.ioc.codec import ScriptCall

__all__ = [
    "APPLIED_KEY",
    "OFFSETS_LUA",
    "STORE_KEY",
    "forget_applied",
    "plan_offsets",
    "read_applied",
]

APPLIED_KEY = "ioc:{offsets}:applied"
STORE_KEY = "ioc:{offsets}:store"

# KEYS: applied, store.  ARGV: a new store id, then (field, from, end) triples.
# A partition's offset is raised to ``end`` only where the store holds everything
# before ``from`` (-1: unknown, no condition); returns how many partitions had a gap.
OFFSETS_LUA = """
redis.call('SET', KEYS[2], ARGV[1], 'NX')
local gaps = 0
for i = 2, #ARGV, 3 do
  local have = tonumber(redis.call('HGET', KEYS[1], ARGV[i]) or '-1')
  local from = tonumber(ARGV[i + 1])
  if from > 0 and have < from then
    gaps = gaps + 1
  elseif tonumber(ARGV[i + 2]) > have then
    redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 2])
  end
end
return gaps
"""


def _field(tp: TP) -> str:
    return f"{tp[0]}|{tp[1]}"


def plan_offsets(
    script: Script, ends: Mapping[TP, int], froms: Mapping[TP, int] | None = None
) -> ScriptCall:
    """Raise the applied offsets to ``ends`` (next offset per partition) where the
    store holds everything before ``froms`` (where the batch continues from)."""
    args = [uuid.uuid4().hex]
    for tp, offset in sorted(ends.items()):
        args += [_field(tp), str((froms or {}).get(tp, -1)), str(offset)]
    return ScriptCall(script, (APPLIED_KEY, STORE_KEY), tuple(args))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def read_applied(client: redis.Redis) -> Applied:
    """The store's identity and applied offsets (one round trip)."""
    pipe = client.pipeline(transaction=False)
    pipe.get(STORE_KEY)
    pipe.hgetall(APPLIED_KEY)
    store, raw = pipe.execute()
    offsets: dict[TP, int] = {}
    for key, value in dict(raw).items():
        topic, _, partition = _text(key).rpartition("|")
        offsets[(topic, int(partition))] = int(_text(value))
    return Applied(None if store is None else _text(store), offsets)


def forget_applied(client: redis.Redis) -> None:
    """Drop the applied offsets: every sink on this store replays from the start."""
    client.delete(APPLIED_KEY, STORE_KEY)
