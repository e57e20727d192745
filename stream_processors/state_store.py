"""The processor's entity state on local disk: RocksDB (``rocksdict``) with a bounded cache.

The entity changelog topics stay the source of truth. This store is a local copy of
them that lets a worker skip the replay of what it has already applied:

- it holds, per raw (topic, partition), each entity's newest state exactly as the
  changelog carries it (``Entity.to_json`` bytes), and the **changelog offset it has
  applied** up to (its checkpoint). Entities and checkpoint are written in one atomic
  RocksDB write batch, so a kill -9 at any moment leaves a store that equals the
  changelog up to its checkpoint (plus, at most, later records that a replay from the
  checkpoint writes again: a changelog replay is idempotent, last record per key wins);
- only **acknowledged** changelog records enter it: the batch loop commits a group's
  entities when the group's changelog writes are acknowledged (``commit``), with the
  offsets the broker gave them; a restore applies changelog records as read
  (``apply``). Changes still in flight live in a per-partition overlay
  (``PartitionTable``) that a rollback discards;
- reads go overlay → cache → disk; the cache of decoded entities is bounded
  (``cache_entries``, FIFO eviction), so memory no longer grows with the entities.

A store that cannot be opened (corrupt files, another format) is moved aside and
started empty: the restore then rebuilds it from the changelog. A missing one is
simply empty. Nothing in it needs a backup.

Several workers on one machine share a state directory through **slots**
(``claim_slot``): each worker locks the first free ``slot-N`` (an ``flock`` the kernel
releases when the process dies, kill -9 included), so a restarted worker takes its
predecessor's files and replays only the tail.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
import struct
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from rocksdict import (
    AccessType,
    BlockBasedOptions,
    Cache,
    Options,
    Rdict,
    WriteBatch,
    WriteOptions,
)

from bus.errors import ConfigError, DeliveryError
from bus.kafka_client import producer_config
from bus.settings import Settings
from bus.topic_admin import TopicSpec, ensure_topics
from stream_processors.entity_state import Entity

__all__ = ["EntityStore", "PartitionTable", "Slot", "claim_slot", "topics_incarnation"]

log = logging.getLogger(__name__)

FORMAT = b"databus-entity-state/1"
_FORMAT_KEY = b"\x01format"
_OFFSET = b"\x01offset\x00"  # + partition prefix: the changelog offset applied (int64)
_ENTITY = b"e"  # + partition prefix + record key: Entity.to_json bytes
_MAX_SLOTS = 64
_APPLY_BATCH = 20_000  # changelog records per write batch during a restore


def _prefix(topic: str, partition: int) -> bytes:
    # topic names never contain NUL: "<topic>\0<partition>\0" is unambiguous
    return f"{topic}\x00{partition}\x00".encode()


class PartitionTable:
    """One partition's entities as ``BatchCore`` uses them (``get``, item assignment,
    ``pop``): changes not yet committed in an overlay, the rest read through the
    store's cache from disk."""

    __slots__ = ("_dirty", "_prefix", "_store")

    def __init__(self, store: EntityStore, prefix: bytes) -> None:
        self._store = store
        self._prefix = _ENTITY + prefix
        self._dirty: dict[bytes, Entity] = {}

    def get(self, key: bytes, default: Entity | None = None) -> Entity | None:
        entity = self._dirty.get(key)
        if entity is not None:
            return entity
        found = self._store._read(self._prefix + key)
        return found if found is not None else default

    def __setitem__(self, key: bytes, entity: Entity) -> None:
        self._dirty[key] = entity

    def pop(self, key: bytes, default: Entity | None = None) -> Entity | None:
        return self._dirty.pop(key, default)

    def __len__(self) -> int:
        """Changes not committed yet (the entities on disk are not counted)."""
        return len(self._dirty)

    def discard_pending(self) -> None:
        """Forget every change not committed (after a rollback: the disk is right)."""
        self._dirty.clear()

    def _committed(self, key: bytes, entity: Entity) -> None:
        if self._dirty.get(key) is entity:
            del self._dirty[key]
        self._store._remember(self._prefix + key, entity)


def _options(cache_bytes: int) -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(True)
    opts.set_paranoid_checks(True)
    opts.set_write_buffer_size(32 * 1024 * 1024)
    opts.set_max_write_buffer_number(2)
    opts.set_max_open_files(256)
    table = BlockBasedOptions()
    table.set_block_cache(Cache(cache_bytes))
    table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    return opts


class EntityStore:
    """One worker's entity state (see the module docstring)."""

    def __init__(
        self, path: Path, *, cache_entries: int = 100_000, block_cache_mb: int = 64
    ) -> None:
        self.path = path
        self.cache_entries = max(1, cache_entries)
        self._cache: dict[bytes, Entity] = {}
        self._tables: dict[tuple[str, int], PartitionTable] = {}
        self.rebuilt = False  # the files could not be used and were set aside
        self._db = self._open(_options(block_cache_mb * 1024 * 1024))
        self._no_wal = WriteOptions()
        self._no_wal.disable_wal = True  # type: ignore[method-assign,assignment]  # a property at run time; the stub says method

    # ---- opening
    def _open(self, opts: Options) -> Rdict:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db: Rdict | None = None
        try:
            db = Rdict(str(self.path), options=opts, access_type=AccessType.read_write())
            found = db.get(_FORMAT_KEY)
            if found is None and not _empty(db):
                raise ValueError("no format marker")
            if found is not None and found != FORMAT:
                raise ValueError(f"format {found!r}, not {FORMAT!r}")
        except Exception as exc:  # corrupt, truncated, or not ours: rebuilt from Kafka
            if "LOCK" in str(exc) or "lock" in str(exc).split(":")[0]:
                # Another live process holds it: never touch its files.
                raise ConfigError(
                    f"the entity state store {self.path} is in use by another process; "
                    "give each worker its own slot (DATABUS_PROCESSOR__STATE_DIR)"
                ) from exc
            if db is not None:
                with contextlib.suppress(Exception):
                    db.close()
            aside = self.path.with_name(f"{self.path.name}.unusable-{int(time.time())}")
            log.warning(
                "entity state store %s could not be used (%s); set aside as %s and "
                "rebuilt from the changelogs",
                self.path,
                exc,
                aside.name,
            )
            if self.path.exists():
                shutil.rmtree(aside, ignore_errors=True)
                os.replace(self.path, aside)
                shutil.rmtree(aside, ignore_errors=True)
            self.rebuilt = True
            db = Rdict(str(self.path), options=opts, access_type=AccessType.read_write())
        db.put(_FORMAT_KEY, FORMAT)
        return db

    # ---- what the restore needs
    def applied(self, topic: str, partition: int) -> int:
        """The changelog offset this store has applied for (topic, partition); -1: none."""
        raw = self._db.get(_OFFSET + _prefix(topic, partition))
        return -1 if raw is None else int(struct.unpack(">q", raw)[0])

    def apply(
        self,
        topic: str,
        partition: int,
        records: Iterable[tuple[bytes, bytes | None]],
        offset: int | None,
        *,
        bulk: bool = False,
    ) -> int:
        """Apply changelog records (key, ``Entity.to_json`` bytes; None deletes) and
        checkpoint ``offset`` as applied, atomically. Returns how many.

        ``bulk`` (a restore, the partition released first): without the write-ahead
        log and without touching the cache; ``flush`` must follow before any other
        write. A kill -9 then loses only the bulk writes not yet flushed, a prefix of
        them with their checkpoints: the next restore goes on from the last one kept."""
        prefix = _ENTITY + _prefix(topic, partition)
        batch = WriteBatch(raw_mode=True)
        n = 0
        if bulk:
            put, delete = batch.put, batch.delete
            for key, value in records:
                if value is None:
                    delete(prefix + key)
                else:
                    put(prefix + key, value)
                n += 1
        else:
            for key, value in records:
                k = prefix + key
                self._cache.pop(k, None)
                if value is None:
                    batch.delete(k)
                else:
                    batch.put(k, value)
                n += 1
        if offset is not None:  # None: part of a snapshot, checkpointed at its end
            batch.put(_OFFSET + _prefix(topic, partition), struct.pack(">q", offset))
        if bulk:
            self._db.write(batch, self._no_wal)
        else:
            self._db.write(batch)
        return n

    def flush(self) -> None:
        """Persist the bulk writes (memtables to files) before any logged write."""
        self._db.flush(True)

    def forget(self, topic: str, partition: int) -> None:
        """Delete (topic, partition)'s entities and checkpoint: it is rebuilt from the
        beginning of the changelog."""
        p = _prefix(topic, partition)
        start = _ENTITY + p
        end = _ENTITY + p[:-1] + b"\x01"
        batch = WriteBatch(raw_mode=True)
        batch.delete_range(start, end)
        batch.delete(_OFFSET + p)
        self._db.write(batch)
        for k in [k for k in self._cache if k.startswith(start)]:
            del self._cache[k]
        table = self._tables.get((topic, partition))
        if table is not None:
            table.discard_pending()

    def items(self, topic: str, partition: int) -> Iterator[tuple[bytes, bytes]]:
        """Every committed entity of (topic, partition): (key, changelog bytes)."""
        start = _ENTITY + _prefix(topic, partition)
        it = self._db.iter()
        it.seek(start)
        n = len(start)
        while it.valid():
            k = it.key()
            if not k.startswith(start):
                break
            yield k[n:], it.value()
            it.next()

    # ---- what the batch loop needs
    def table(self, topic: str, partition: int) -> PartitionTable:
        where = (topic, partition)
        table = self._tables.get(where)
        if table is None:
            table = self._tables[where] = PartitionTable(self, _prefix(topic, partition))
        return table

    def release(self, topic: str, partition: int) -> None:
        """The partition was revoked: drop what memory holds of it; the disk keeps it
        (a later assignment replays only the changelog after its checkpoint)."""
        table = self._tables.pop((topic, partition), None)
        if table is not None:
            start = table._prefix
            for k in [k for k in self._cache if k.startswith(start)]:
                del self._cache[k]

    def commit(
        self,
        entities: Mapping[tuple[str, int, bytes], Entity],
        offsets: Mapping[tuple[str, int], int],
        values: Mapping[tuple[str, int, bytes], bytes] | None = None,
    ) -> None:
        """Write acknowledged entity states and the changelog offsets they reached (by
        raw (topic, partition)) in one atomic batch; ``values``: their changelog bytes,
        when already made."""
        batch = WriteBatch(raw_mode=True)
        done: list[tuple[PartitionTable | None, bytes, Entity]] = []
        for where, entity in entities.items():
            topic, partition, key = where
            value = values.get(where) if values is not None else None
            batch.put(
                _ENTITY + _prefix(topic, partition) + key,
                value if value is not None else entity.to_json(),
            )
            done.append((self._tables.get((topic, partition)), key, entity))
        for (topic, partition), offset in offsets.items():
            batch.put(_OFFSET + _prefix(topic, partition), struct.pack(">q", offset))
        self._db.write(batch)
        for table, key, entity in done:
            if table is not None:
                table._committed(key, entity)

    def discard_pending(self) -> None:
        for table in self._tables.values():
            table.discard_pending()

    def close(self) -> None:
        self._cache.clear()
        self._tables.clear()
        self._db.close()

    def __enter__(self) -> EntityStore:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # ---- the cache
    def _read(self, k: bytes) -> Entity | None:
        entity = self._cache.get(k)
        if entity is not None:
            return entity
        raw = self._db.get(k)
        if raw is None:
            return None
        entity = Entity.from_json(raw)
        self._remember(k, entity)
        return entity

    def _remember(self, k: bytes, entity: Entity) -> None:
        cache = self._cache
        cache[k] = entity
        if len(cache) > self.cache_entries:
            # FIFO: evict the oldest eighth at once (dicts keep insertion order)
            drop = max(1, len(cache) // 8)
            for old in list(_take(iter(cache), drop)):
                del cache[old]

    @property
    def cached(self) -> int:
        return len(self._cache)


def _take(it: Any, n: int) -> Iterable[bytes]:
    for _ in range(n):
        yield next(it)


def _empty(db: Rdict) -> bool:
    it = db.iter()
    it.seek_to_first()
    return not it.valid()


@dataclass
class Slot:
    """A directory of one worker's local state, locked while the worker lives."""

    path: Path
    _lock: IO[bytes]

    def release(self) -> None:
        fcntl.flock(self._lock, fcntl.LOCK_UN)
        self._lock.close()

    def match(self, incarnation: str) -> bool:
        """Keep the slot's files only if they were made against this incarnation of
        the topics (``topics_incarnation``); otherwise delete them (an embedded broker
        restarted empty: the files describe topics that no longer exist). Returns
        whether they were kept."""
        mark = self.path / "incarnation"
        kept = mark.exists() and mark.read_text(encoding="utf-8").strip() == incarnation
        if not kept:
            for child in self.path.iterdir():
                if child.name not in ("lock", "incarnation"):
                    if child.is_dir():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
            mark.write_text(incarnation + "\n", encoding="utf-8")
        return kept


def topics_incarnation(settings: Settings, group: str, timeout_s: float = 30.0) -> str:
    """An id of this incarnation of the processor's topics: the first record of
    ``<group>-state-incarnation`` (written by the first worker that finds none). A
    broker that lost its topics (the embedded one restarted) gets a new one."""
    topic = f"{group}-state-incarnation"
    ensure_topics(settings, [TopicSpec(topic, 1, compact=False)])
    reader = Consumer(
        {
            **settings.kafka.client_config(),
            "group.id": f"{group}-incarnation-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    producer: Producer | None = None
    try:
        reader.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout_s
        wrote = False
        while time.monotonic() < deadline:
            for msg in reader.consume(10, 1.0):
                if not msg.error() and msg.value():
                    return bytes(msg.value() or b"").decode()
            if not wrote:
                producer = Producer(producer_config(settings))
                producer.produce(topic, uuid.uuid4().hex.encode(), partition=0)
                producer.flush(timeout_s)
                wrote = True
        raise DeliveryError(f"{topic}: no incarnation record within {timeout_s:g} s")
    finally:
        reader.close()


def claim_slot(root: Path) -> Slot:
    """Lock the first free ``slot-N`` under ``root`` (created as needed)."""
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(
            f"DATABUS_PROCESSOR__STATE_DIR: cannot create {root} ({exc}); "
            "point it at a writable directory"
        ) from exc
    for n in range(_MAX_SLOTS):
        path = root / f"slot-{n}"
        path.mkdir(exist_ok=True)
        lock = (path / "lock").open("ab")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.close()
            continue
        return Slot(path, lock)
    raise ConfigError(
        f"DATABUS_PROCESSOR__STATE_DIR: all {_MAX_SLOTS} slots under {root} are in use "
        "by other workers; give this worker a directory of its own"
    )
