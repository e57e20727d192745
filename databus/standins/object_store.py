"""The embedded broker's storage on disk: a file-backed subset of the S3 API, with retention.

The embedded broker (Tansu) keeps its records either in its own memory (``memory://``),
which only grows and is lost when it stops, or in an S3 bucket (``s3://``). This
stand-in is that bucket: one file per object under ``<root>/<bucket>/<key>``, served
over HTTP on loopback with the calls Tansu's object-store client makes — GET, HEAD,
PUT (``If-Match`` / ``If-None-Match: *``, which Tansu's watermark and batch writes rely
on), DELETE and ListObjectsV2 (prefix, delimiter, pagination). ETags are the MD5 of
the content, as S3's are for a single-part upload; requests are handled one at a time
on one event loop, so a conditional write is atomic. Writes go to a temporary file
renamed into place (no fsync: a machine crash may lose the last second, which the
producers' acknowledgements do not cover on a one-node broker anyway). Every file and
directory is owner-only (the records carry personal data).

**Retention.** Every ``sweep_every_s`` the store trims record batches, the way a
Kafka broker deletes old segments:

- a topic with a finite ``retention.ms`` loses the batches whose newest record is
  older than that (the batch's max timestamp, as Kafka reads it);
- the topics kept without a time limit (``retention.ms=-1``, not compacted: raw, std,
  alerts, declarations) share a disk budget (``budget_bytes``); past it the oldest of
  their batches go first — but only batches that every consumer group reading the
  topic has committed past, so the budget never takes a record that is still to be
  delivered (when that leaves the store over budget, the sweep says so);
- compacted topics (entity changelogs, ``_schemas``, snapshots) lose only what every
  group that commits offsets on them has committed past (the processor commits, in a
  group of its own, the changelog offset its latest snapshot covers);
- the newest batch of a partition is never deleted (Kafka keeps the active segment),
  and the partition's low watermark moves to its first remaining offset.

    python -m databus.standins.object_store --root DIR [--port N] [--budget-mb 2048]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import signal
import struct
import time
from bisect import bisect_right, insort
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web
from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from bus.private_files import OWNER_ONLY_UMASK, private_dir

__all__ = [
    "BUCKET",
    "BatchFile",
    "ObjectFiles",
    "PreconditionFailed",
    "SweepPlan",
    "SweepResult",
    "TopicPolicy",
    "apply_sweep",
    "build_app",
    "main",
    "merge_batches",
    "plan_merges",
    "plan_sweep",
    "plan_trim",
    "release_freed_memory",
    "sweep",
]

log = logging.getLogger(__name__)

BUCKET = "tansu"
"""The bucket the embedded broker writes to (``--storage-engine s3://tansu/``)."""
_CLUSTER_PREFIX = "clusters/"
_MAX_KEYS = 1000
# merging small batch files (plan_merges): batches up to _MERGE_SMALL bytes, merged
# up to _MERGE_TARGET; a partition's newest _MERGE_KEEP_NEWEST are left alone; at
# most _MERGE_MAX_PER_SWEEP bytes of merged batches held by one sweep round (while
# merges remain, the next round follows after _MERGE_PAUSE_S or the time the round
# took, whichever is longer).
# The broker answers a fetch with one batch file, whatever the fetch's byte limit, and
# pays for every file of the partition on each fetch: a file of 8 MB rather than 1 MB
# reads a replay of 9 M changelog records (2 GB, 4 partitions) in 27 s instead of
# 300 s (30 k records/s with ~1,900 files per partition; docs/benchmarks.md).
_MERGE_SMALL = 4 * 1024 * 1024
_MERGE_TARGET = 8 * 1024 * 1024
_MERGE_KEEP_NEWEST = 8
_MERGE_MAX_PER_SWEEP = 64 * 1024 * 1024
_MERGE_PAUSE_S = 1.0
# batch attributes that forbid a merge: compression, log-append time, transactional, control
_UNMERGEABLE = 0x07 | 0x08 | 0x10 | 0x20
_TMP_SUFFIX = ".tmp"
# A Kafka record batch (v2) starts: baseOffset i64, batchLength i32, leaderEpoch i32,
# magic i8, crc u32, attributes i16, lastOffsetDelta i32, baseTimestamp i64, maxTimestamp i64
_BATCH_HEADER = struct.Struct(">qiibIhiqq")


class PreconditionFailed(Exception):
    """A conditional write whose condition does not hold (HTTP 412)."""


def _etag(data: bytes) -> str:
    return f'"{hashlib.md5(data, usedforsecurity=False).hexdigest()}"'


def _http_date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def _iso_date(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(ts))


@dataclass(frozen=True)
class Listed:
    key: str
    size: int
    mtime: float


def _contents(key: str, size: int, mtime: float) -> str:
    """One object's ``<Contents>`` element in a listing."""
    etag = f'"{size:x}-{int(mtime * 1e6):x}"'  # listings: no content read (not compared)
    return (
        f"<Contents><Key>{escape(key)}</Key><LastModified>{_iso_date(mtime)}</LastModified>"
        f"<ETag>{escape(etag)}</ETag><Size>{size}</Size><StorageClass>STANDARD</StorageClass></Contents>"
    )


@dataclass
class _Folder:
    """What a directory holds: files (name → size, mtime) and subdirectories.

    ``order`` (the files' names sorted, built on the first listing) and ``xml`` (each
    file's listing element) make listing a folder of files a slice and a join: the
    broker lists a partition's whole folder of batches on every fetch, so the cost
    of a listing element is paid once per file, not once per fetch."""

    files: dict[str, tuple[int, float]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    order: list[str] | None = None
    xml: dict[str, str] = field(default_factory=dict)

    def names(self) -> list[str]:
        if self.order is None:
            self.order = sorted(self.files)
        return self.order

    def set_file(self, name: str, stat: tuple[int, float]) -> None:
        if name not in self.files and self.order is not None:
            insort(self.order, name)  # batches come in key order: an append
        self.files[name] = stat
        self.xml.pop(name, None)

    def drop_file(self, name: str) -> None:
        if self.files.pop(name, None) is not None:
            self.order = None  # sorted again at the next listing
            self.xml.pop(name, None)


class ObjectFiles:
    """Objects as files under ``root``: ``<root>/<bucket>/<key>``.

    Listings come from an in-memory index of the directories (read from disk once,
    then kept up to date by ``put`` and ``delete``): the broker lists a partition's
    batches on every fetch that has records to return, and a walk of the disk each
    time cost most of the store's CPU under load. The sweep's thread reads the disk,
    not the index; everything else runs on the event loop."""

    def __init__(self, root: Path) -> None:
        self.root = private_dir(root, tighten=True)
        self._folders: dict[str, _Folder] = {}  # "bucket/dir/…" → what it holds
        # stored batches' (lastOffsetDelta, maxTimestamp): batches are written once
        self.batch_headers: dict[str, tuple[int, int]] = {}

    def path(self, bucket: str, key: str) -> Path:
        if not bucket or "/" in bucket or bucket.startswith("."):
            raise KeyError(bucket)
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or key.endswith(_TMP_SUFFIX):
            raise KeyError(key)
        return self.root / bucket / key

    def get(self, bucket: str, key: str) -> tuple[bytes, float]:
        """The object's bytes and modification time; ``KeyError`` when there is none."""
        path = self.path(bucket, key)
        try:
            return path.read_bytes(), path.stat().st_mtime
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise KeyError(key) from None

    def put(
        self,
        bucket: str,
        key: str,
        data: bytes,
        *,
        if_match: str | None = None,
        if_none_match: str | None = None,
        mtime: float | None = None,
    ) -> str:
        """Write the object (replacing it) and return its ETag.

        ``if_none_match="*"``: only when there is none; ``if_match``: only when the
        current one has that ETag. Otherwise ``PreconditionFailed``. ``mtime``: the
        modification time to keep (a merged batch keeps its first batch's)."""
        path = self.path(bucket, key)
        if if_none_match is not None or if_match is not None:
            try:
                current: bytes | None = path.read_bytes()
            except FileNotFoundError:
                current = None
            if if_none_match == "*" and current is not None:
                raise PreconditionFailed(key)
            if if_match is not None and (current is None or _etag(current) != if_match):
                raise PreconditionFailed(key)
        private_dir(path.parent)
        tmp = path.with_name(path.name + _TMP_SUFFIX)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if mtime is not None:
            os.utime(tmp, (mtime, mtime))
        os.replace(tmp, path)
        self._indexed(bucket, key, (len(data), path.stat().st_mtime))
        self.batch_headers.pop(key, None)  # a batch rewritten by a merge
        return _etag(data)

    def delete(self, bucket: str, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path(bucket, key).unlink()
        self._indexed(bucket, key, None)
        self.batch_headers.pop(key, None)

    def _indexed(self, bucket: str, key: str, stat: tuple[int, float] | None) -> None:
        """Keep the index of the folders already read in step with a write or delete."""
        parts = [bucket, *key.split("/")]
        for depth in range(1, len(parts) - 1):  # each folder now holds the next one
            folder = self._folders.get("/".join(parts[:depth]))
            if folder is not None and stat is not None:
                folder.dirs.add(parts[depth])
        folder = self._folders.get("/".join(parts[:-1]))
        if folder is not None:
            if stat is None:
                folder.drop_file(parts[-1])
            else:
                folder.set_file(parts[-1], stat)

    def _folder(self, rel: str) -> _Folder:
        """What ``root/rel`` holds, from the index (read from disk the first time)."""
        folder = self._folders.get(rel)
        if folder is None:
            folder = _Folder()
            with (
                contextlib.suppress(FileNotFoundError, NotADirectoryError),
                os.scandir(self.root / rel) as it,
            ):
                for entry in it:
                    if entry.is_dir(follow_symlinks=False):
                        folder.dirs.add(entry.name)
                    elif not entry.name.endswith(_TMP_SUFFIX):
                        st = entry.stat(follow_symlinks=False)
                        folder.files[entry.name] = (st.st_size, st.st_mtime)
            self._folders[rel] = folder
        return folder

    def list(
        self, bucket: str, prefix: str, delimiter: str | None, after: str, max_keys: int
    ) -> tuple[list[Listed], list[str], bool]:
        """Keys under ``prefix`` after ``after`` in key order (S3's ListObjectsV2):
        the objects, the common prefixes (with ``delimiter="/"``) and whether more follow."""
        entries: list[tuple[str, Listed | None]] = []
        for key, listed in self._walk(bucket, prefix, delimiter == "/"):
            if key > after:
                entries.append((key, listed))
        entries.sort(key=lambda e: e[0])
        page = entries[:max_keys]
        objects = [e[1] for e in page if e[1] is not None]
        prefixes = [e[0] for e in page if e[1] is None]
        return objects, prefixes, len(entries) > max_keys

    def listing(
        self, bucket: str, prefix: str, delimiter: str | None, after: str, max_keys: int
    ) -> tuple[Sequence[str], Sequence[str], str | None]:
        """``list`` as a listing's parts: the objects' ``<Contents>`` elements, the
        common prefixes, and the last key when more follow (None: the last page).

        A prefix that names a folder of files only (a partition's batches) is served
        from the folder's sorted names and cached elements; anything else walks."""
        if prefix == "" or prefix.endswith("/"):
            folder = self._folder(f"{bucket}/{prefix[:-1]}" if prefix else bucket)
            if not folder.dirs:
                names = folder.names()
                if after.startswith(prefix):
                    start = bisect_right(names, after[len(prefix) :])
                else:
                    start = 0 if after < prefix else len(names)
                page = names[start : start + max_keys]
                xml = folder.xml
                elements = []
                for name in page:
                    element = xml.get(name)
                    if element is None:
                        size, mtime = folder.files[name]
                        element = xml[name] = _contents(prefix + name, size, mtime)
                    elements.append(element)
                more = start + max_keys < len(names)
                return elements, [], prefix + page[-1] if more and page else None
        objects, prefixes, truncated = self.list(bucket, prefix, delimiter, after, max_keys)
        last = max([o.key for o in objects] + prefixes) if truncated else None
        return [_contents(o.key, o.size, o.mtime) for o in objects], prefixes, last

    def _walk(
        self, bucket: str, prefix: str, by_folder: bool
    ) -> Iterator[tuple[str, Listed | None]]:
        start = prefix.rpartition("/")[0]  # the deepest folder the prefix names
        stack = [start]
        while stack:
            here = stack.pop()
            folder = self._folder(f"{bucket}/{here}" if here else bucket)
            lead = f"{here}/" if here else ""
            for name in folder.dirs:
                sub = f"{lead}{name}/"
                if sub.startswith(prefix):
                    if by_folder:
                        yield sub, None
                    else:
                        stack.append(sub[:-1])
                elif prefix.startswith(sub):
                    stack.append(sub[:-1])
            for name, (size, mtime) in folder.files.items():
                key = lead + name
                if key.startswith(prefix):
                    yield key, Listed(key, size, mtime)


# --- retention -------------------------------------------------------------------


@dataclass(frozen=True)
class TopicPolicy:
    """What the store may trim of a topic (from its configs in the broker's metadata)."""

    retention_ms: int = -1  # -1: no time limit
    compact: bool = False

    @classmethod
    def from_configs(cls, configs: Mapping[str, str]) -> TopicPolicy:
        try:
            retention = int(configs.get("retention.ms", "-1"))
        except ValueError:
            retention = -1
        return cls(retention, "compact" in configs.get("cleanup.policy", ""))


@dataclass(frozen=True)
class BatchFile:
    """One stored record batch of a partition."""

    topic: str
    partition: int
    offset: int  # of its first record
    last_offset: int
    max_timestamp_ms: int
    size: int
    key: str


@dataclass(frozen=True)
class SweepResult:
    deleted: int
    freed_bytes: int
    held_bytes: int  # every batch still stored
    budget_held_bytes: int  # the batches the budget covers
    over_budget: bool  # the budget could not be met without taking undelivered records
    merged: int = 0  # small batch files folded into larger ones
    more_merges: bool = False  # merges left for the next round

    def line(self) -> str:
        mb = 1e6
        text = (
            f"trimmed {self.deleted} record batches ({self.freed_bytes / mb:,.1f} MB); "
            f"the store holds {self.held_bytes / mb:,.1f} MB, "
            f"{self.budget_held_bytes / mb:,.1f} MB of it in topics kept without a time limit"
        )
        if self.over_budget:
            text += " — over the budget, but the rest is not yet delivered to every group"
        if self.merged:
            text += f"; {self.merged} small record batches merged into larger ones"
            if self.more_merges:
                text += " (more in the next round)"
        return text


def plan_trim(
    batches: Mapping[tuple[str, int], list[BatchFile]],
    policies: Mapping[str, TopicPolicy],
    committed: Mapping[tuple[str, int], int],
    now_ms: int,
    budget_bytes: int,
) -> tuple[list[BatchFile], bool]:
    """The batches to delete, and whether the budget stays exceeded.

    ``batches``: each partition's batches in offset order; ``committed``: per
    partition, the lowest offset any group reading it has committed (absent: no group
    commits on it). Pure: the sweep reads the files and applies the plan."""
    doomed: list[BatchFile] = []
    budget_candidates: list[BatchFile] = []
    budget_held = 0
    for (topic, partition), files in batches.items():
        policy = policies.get(topic, TopicPolicy())
        floor = committed.get((topic, partition))
        for batch in files[:-1]:  # never the newest: the partition's active end
            delivered = floor is not None and batch.last_offset < floor
            if policy.compact:
                if delivered:
                    doomed.append(batch)
            elif policy.retention_ms >= 0:
                if batch.max_timestamp_ms < now_ms - policy.retention_ms:
                    doomed.append(batch)
            elif delivered:
                budget_candidates.append(batch)
        if not policy.compact and policy.retention_ms < 0:
            budget_held += sum(b.size for b in files)
    over = budget_held > budget_bytes
    if over:
        budget_candidates.sort(key=lambda b: (b.max_timestamp_ms, b.topic, b.partition, b.offset))
        target = int(budget_bytes * 0.9)
        for batch in budget_candidates:
            if budget_held <= target:
                break
            doomed.append(batch)
            budget_held -= batch.size
        over = budget_held > budget_bytes
    return doomed, over


def plan_merges(
    batches: Mapping[tuple[str, int], list[BatchFile]],
    doomed: set[str],
    small: int = _MERGE_SMALL,
    target: int = _MERGE_TARGET,
) -> list[list[BatchFile]]:
    """Runs of a partition's small, consecutive, older batches, each to be rewritten as
    one batch (pure).

    The broker lists a partition's whole folder of batch files on every fetch, so a
    partition written in many small batches (a live feed, a flushing publisher) gets
    slower to read with every batch it keeps; past a couple of thousand files, fetches
    stall. Merged, the same records take a file per ~``target`` bytes. The newest batches are left
    alone (the broker's active end), and so are the ones this sweep deletes. A fetch
    gets one file: the larger the files, the more records each fetch brings."""
    runs: list[list[BatchFile]] = []
    for files in batches.values():
        run: list[BatchFile] = []
        size = 0
        for batch in files[: max(0, len(files) - _MERGE_KEEP_NEWEST)]:
            is_small = batch.key not in doomed and batch.size <= small
            follows = bool(run) and batch.offset == run[-1].last_offset + 1
            if is_small and follows and size + batch.size <= target:
                run.append(batch)
                size += batch.size
                continue
            if len(run) > 1:
                runs.append(run)
            run, size = ([batch], batch.size) if is_small else ([], 0)
        if len(run) > 1:
            runs.append(run)
    return runs


def merge_batches(blobs: Sequence[tuple[int, bytes]]) -> bytes | None:
    """One record batch (Kafka format v2) holding every record of ``blobs``, stored
    batches of consecutive offsets (each with the offset its key names), with their
    offsets, timestamps, keys, values and headers; None when one of them cannot be
    merged safely (compressed, transactional, a control batch, log-append time, not
    exactly one batch).

    The broker keeps a batch's offset in its key and writes its header's base offset
    as it came (0 from a producer): the merged batch keeps the first one's header
    base offset, and the records' deltas count from the first key's offset."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=0,
        is_transactional=0,
        producer_id=-1,
        producer_epoch=-1,
        base_sequence=-1,
        batch_size=2**31 - 1,
    )
    try:
        return _merged(builder, blobs)
    except Exception:  # anything unreadable is left as it is: a merge only saves listings
        return None


def _merged(builder: Any, blobs: Sequence[tuple[int, bytes]]) -> bytes | None:
    first: int | None = None
    count = 0
    header_base = b""
    for offset, blob in blobs:
        if len(blob) < _BATCH_HEADER.size:
            return None
        _b, length, _e, magic, _c, attrs, _d, _f, _m = _BATCH_HEADER.unpack_from(blob)
        if magic != 2 or attrs & _UNMERGEABLE or length + 12 != len(blob):
            return None
        batch = DefaultRecordBatch(blob)
        if not batch.validate_crc():
            return None
        if first is None:
            first, header_base = offset, blob[:8]
        elif offset != first + count:
            return None  # a gap: merged offsets would not be the stored ones
        for i, record in enumerate(batch):
            if record.offset - batch.base_offset != i:
                return None  # a batch with holes in its offsets
            headers = list(record.headers)
            if builder.append(count, record.timestamp, record.key, record.value, headers) is None:
                return None
            count += 1
    if first is None or count == 0:
        return None
    out = builder.build()
    out[0:8] = header_base  # outside the CRC
    return bytes(out)


def _read_batch(path: Path) -> tuple[int, int] | None:
    """(lastOffsetDelta, maxTimestamp) from a stored batch's header."""
    try:
        with path.open("rb") as f:
            head = f.read(_BATCH_HEADER.size)
    except OSError:
        return None
    if len(head) < _BATCH_HEADER.size:
        return None
    _base, _len, _epoch, magic, _crc, _attrs, last_delta, _first_ts, max_ts = _BATCH_HEADER.unpack(
        head
    )
    return (last_delta, max_ts) if magic == 2 else None


def _scan(
    files: ObjectFiles,
) -> tuple[
    dict[str, TopicPolicy], dict[tuple[str, int], list[BatchFile]], dict[tuple[str, int], int]
]:
    """Topic policies, every partition's batches and the lowest committed offsets,
    read from the broker's files (every cluster in the bucket)."""
    bucket = files.root / BUCKET
    policies: dict[str, TopicPolicy] = {}
    batches: dict[tuple[str, int], list[BatchFile]] = {}
    committed: dict[tuple[str, int], int] = {}
    for cluster in sorted((bucket / "clusters").glob("*")):
        with contextlib.suppress(OSError, ValueError, AttributeError, TypeError):
            meta = json.loads((cluster / "meta.json").read_bytes())
            for name, topic in (meta.get("topics") or {}).items():
                configs = {
                    c["name"]: c.get("value") or "" for c in topic["topic"].get("configs") or []
                }
                policies[name] = TopicPolicy.from_configs(configs)
        for records in (cluster / "topics").glob("*/partitions/*/records"):
            topic, partition = records.parent.parent.parent.name, int(records.parent.name)
            found = []
            for entry in os.scandir(records):
                if not entry.name.endswith(".batch"):
                    continue
                key = Path(entry.path).relative_to(bucket).as_posix()
                header = files.batch_headers.get(key) or _read_batch(Path(entry.path))
                if header is None:
                    continue
                files.batch_headers[key] = header
                offset = int(entry.name.removesuffix(".batch"))
                size = entry.stat().st_size
                found.append(
                    BatchFile(topic, partition, offset, offset + header[0], header[1], size, key)
                )
            found.sort(key=lambda b: b.offset)
            batches[(topic, partition)] = found
        for offset_file in (cluster / "groups" / "consumers").glob("*/offsets/*/partitions/*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                topic = offset_file.parent.parent.name
                at = int(json.loads(offset_file.read_bytes())["offset"])
                tp = (topic, int(offset_file.stem))
                if at >= 0:
                    committed[tp] = min(committed.get(tp, at), at)
    return policies, batches, committed


@dataclass(frozen=True)
class SweepPlan:
    """What a sweep found and decided (read-only: made off the event loop)."""

    batches: dict[tuple[str, int], list[BatchFile]]
    policies: dict[str, TopicPolicy]
    doomed: list[BatchFile]
    over_budget: bool
    # (the first batch's key, the merged batch, the keys it replaces, the first's mtime)
    merges: list[tuple[str, bytes, list[str], float]] = field(default_factory=list)
    more_merges: bool = False  # runs left for the next round (this one held its most)


def plan_sweep(files: ObjectFiles, budget_bytes: int, now_ms: int | None = None) -> SweepPlan:
    """Read the broker's files and decide what goes (``plan_trim``); deletes nothing."""
    now_ms = int(time.time() * 1000) if now_ms is None else now_ms
    policies, batches, committed = _scan(files)
    doomed, over = plan_trim(batches, policies, committed, now_ms, budget_bytes)
    merges: list[tuple[str, bytes, list[str], float]] = []
    held = 0
    more = False
    for run in plan_merges(batches, {b.key for b in doomed}):
        if held > _MERGE_MAX_PER_SWEEP:
            more = True  # the rest at the next round
            break
        try:
            mtime = (files.root / BUCKET / run[0].key).stat().st_mtime
            merged = merge_batches(
                [(b.offset, (files.root / BUCKET / b.key).read_bytes()) for b in run]
            )
        except OSError:
            continue  # trimmed meanwhile
        if merged is not None:
            merges.append((run[0].key, merged, [b.key for b in run[1:]], mtime))
            held += len(merged)
    return SweepPlan(batches, policies, doomed, over, merges, more)


def apply_sweep(files: ObjectFiles, plan: SweepPlan) -> SweepResult:
    """Delete the planned batches and move each trimmed partition's low watermark to
    its first remaining offset. Runs on the event loop, between requests, so the
    watermark rewrite cannot interleave with the broker's conditional writes."""
    for key, merged, replaced, mtime in plan.merges:
        # The merged batch first, at its first key: a reader between the two steps
        # finds the same records either way. It keeps the first batch's modification
        # time: the broker takes a partition's earliest offset from its oldest object,
        # and a merged batch dated now would hide every record before the newest ones.
        files.put(BUCKET, key, merged, mtime=mtime)
        for old in replaced:
            files.delete(BUCKET, old)
    touched: set[tuple[str, int]] = set()
    for batch in plan.doomed:
        files.delete(BUCKET, batch.key)
        touched.add((batch.topic, batch.partition))
    gone = {b.key for b in plan.doomed}
    for tp in touched:
        remaining = [b for b in plan.batches[tp] if b.key not in gone]
        _move_low_watermark(files, remaining[0])
    kept = [b for batches in plan.batches.values() for b in batches if b.key not in gone]
    unlimited = {t for t, p in plan.policies.items() if not p.compact and p.retention_ms < 0} | {
        t for t, _ in plan.batches if t not in plan.policies
    }
    return SweepResult(
        deleted=len(plan.doomed),
        freed_bytes=sum(b.size for b in plan.doomed),
        held_bytes=sum(b.size for b in kept),
        budget_held_bytes=sum(b.size for b in kept if b.topic in unlimited),
        over_budget=plan.over_budget,
        merged=sum(len(replaced) for _k, _m, replaced, _t in plan.merges),
        more_merges=plan.more_merges,
    )


def sweep(files: ObjectFiles, budget_bytes: int, now_ms: int | None = None) -> SweepResult:
    """Trim by retention and budget: ``plan_sweep`` then ``apply_sweep``."""
    return apply_sweep(files, plan_sweep(files, budget_bytes, now_ms))


def _move_low_watermark(files: ObjectFiles, first: BatchFile) -> None:
    key = first.key.rsplit("/records/", 1)[0] + "/watermark.json"
    try:
        data, _ = files.get(BUCKET, key)
        mark = json.loads(data)
    except (KeyError, ValueError):
        return
    if isinstance(mark, dict) and (mark.get("low") or 0) < first.offset:
        mark["low"] = first.offset
        files.put(BUCKET, key, json.dumps(mark, separators=(",", ":")).encode())


# --- HTTP ------------------------------------------------------------------------


def _error(status: int, code: str, message: str) -> web.Response:
    body = (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f"<Error><Code>{code}</Code><Message>{escape(message)}</Message></Error>"
    )
    return web.Response(status=status, text=body, content_type="application/xml")


def build_app(files: ObjectFiles) -> web.Application:
    """The S3 subset over ``files`` (no authentication: it listens on loopback only)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        bucket, _, key = request.path.lstrip("/").partition("/")
        try:
            if not key:
                if request.method == "GET":
                    return _list(files, bucket, request.query)
                if request.method in ("HEAD", "PUT"):  # bucket exists / create bucket
                    private_dir(files.root / bucket)
                    return web.Response()
                return _error(405, "MethodNotAllowed", request.method)
            if request.method in ("GET", "HEAD"):
                data, mtime = files.get(bucket, key)
                headers = {"ETag": _etag(data), "Last-Modified": _http_date(mtime)}
                if request.headers.get("If-None-Match") == headers["ETag"]:
                    return web.Response(status=304, headers=headers)  # the caller's copy holds
                if request.method == "HEAD":
                    headers["Content-Length"] = str(len(data))
                    return web.Response(headers=headers)
                return web.Response(
                    body=data, headers=headers, content_type="application/octet-stream"
                )
            if request.method == "PUT":
                if "x-amz-copy-source" in request.headers:
                    return _error(501, "NotImplemented", "copy is not supported")
                etag = files.put(
                    bucket,
                    key,
                    await request.read(),
                    if_match=request.headers.get("If-Match"),
                    if_none_match=request.headers.get("If-None-Match"),
                )
                return web.Response(headers={"ETag": etag})
            if request.method == "DELETE":
                files.delete(bucket, key)
                return web.Response(status=204)
            return _error(405, "MethodNotAllowed", request.method)
        except KeyError:
            return _error(404, "NoSuchKey", key)
        except PreconditionFailed:
            return _error(412, "PreconditionFailed", key)

    app = web.Application(client_max_size=128 * 1024 * 1024)
    app.router.add_route("*", "/{tail:.*}", handle)
    return app


def _list(files: ObjectFiles, bucket: str, query: Mapping[str, str]) -> web.Response:
    if query.get("list-type") != "2":
        return _error(501, "NotImplemented", "only ListObjectsV2 (list-type=2)")
    prefix = query.get("prefix", "")
    after = query.get("continuation-token") or query.get("start-after") or ""
    try:
        max_keys = max(1, min(_MAX_KEYS, int(query.get("max-keys", _MAX_KEYS))))
    except ValueError:
        return _error(400, "InvalidArgument", "max-keys")
    elements, prefixes, last = files.listing(
        bucket, prefix, query.get("delimiter"), after, max_keys
    )
    parts = [
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
        f"<Name>{escape(bucket)}</Name><Prefix>{escape(prefix)}</Prefix>",
        f"<KeyCount>{len(elements) + len(prefixes)}</KeyCount><MaxKeys>{max_keys}</MaxKeys>",
        f"<IsTruncated>{'false' if last is None else 'true'}</IsTruncated>",
    ]
    if last is not None:
        parts.append(f"<NextContinuationToken>{escape(last)}</NextContinuationToken>")
    parts.extend(elements)
    for p in prefixes:
        parts.append(f"<CommonPrefixes><Prefix>{escape(p)}</Prefix></CommonPrefixes>")
    parts.append("</ListBucketResult>")
    return web.Response(text="".join(parts), content_type="application/xml")


_LIBC: Any = None  # the C library, once looked up (False: none to be had)


def release_freed_memory() -> None:
    """Hand the pages the sweep freed back to the system (glibc's ``malloc_trim``).

    A merge round reads and writes up to ~64 MB of batches in large blocks; glibc keeps
    freed blocks in the allocating thread's arena, so without this the storage's
    resident memory climbed by a round's worth every few rounds (43 → 197 MB in 8
    minutes at 300 events/s, two 64 MB arenas fully resident). A no-op where the C
    library has no ``malloc_trim`` (musl, macOS)."""
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        except OSError:
            _LIBC = False
    trim = getattr(_LIBC, "malloc_trim", None) if _LIBC else None
    if trim is not None:
        trim(0)


async def _sweep_forever(files: ObjectFiles, budget_bytes: int, every_s: float) -> None:
    pause = every_s
    # One thread for every sweep: its allocations stay in one arena of the C library
    # (the default executor's changing threads spread them over several).
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweep")
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(pause)
        pause = every_s
        began = time.monotonic()
        plan: SweepPlan | None = None
        try:
            # reading every batch header takes a while: off the loop, so requests go on
            plan = await loop.run_in_executor(worker, plan_sweep, files, budget_bytes)
            result = apply_sweep(files, plan)
        except OSError as exc:  # a file vanished mid-scan, a full disk: next time
            log.warning("retention sweep failed: %s", exc)
            continue
        except Exception:  # a defect: said, and the next sweep tries again
            log.exception("retention sweep failed")
            continue
        finally:
            plan = None  # the merged batches are on disk: not held through the pause
            release_freed_memory()  # every arena: the sweep thread's and the loop's
        if result.deleted or result.over_budget or result.merged:
            log.info("retention: %s", result.line())
        if result.more_merges:
            # a backlog of small batches (a bulk load): merged round after round, each
            # holding at most _MERGE_MAX_PER_SWEEP, with a pause at least as long as
            # the round took, so the broker's requests keep at least half the time
            pause = min(every_s, max(_MERGE_PAUSE_S, time.monotonic() - began))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m databus.standins.object_store",
        description="Serve the embedded broker's storage (an S3 subset on local files).",
    )
    parser.add_argument("--root", required=True, type=Path, help="directory holding the objects")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--budget-mb", type=float, default=2048.0)
    parser.add_argument("--sweep-every-s", type=float, default=30.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    os.umask(OWNER_ONLY_UMASK)
    files = ObjectFiles(args.root)
    private_dir(files.root / BUCKET)
    budget = int(args.budget_mb * 1e6)

    async def serve() -> None:
        runner = web.AppRunner(build_app(files), access_log=None)
        await runner.setup()
        await web.TCPSite(runner, args.host, args.port).start()
        print(f"object store on http://{args.host}:{args.port}, files in {files.root}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        sweeper = asyncio.create_task(_sweep_forever(files, budget, args.sweep_every_s))
        await stop.wait()
        sweeper.cancel()
        await runner.cleanup()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
