"""The durable local spool: accepted events wait here until the broker has them.

A FIFO on disk in one SQLite file (WAL journal, ``synchronous=FULL``): once
``append`` returns, the records survive a crash of the process or of the machine.
Rows leave only through ``ack``, after the broker acknowledged them. The spool is
bounded by ``max_bytes`` of payload (key + value + headers): a full spool refuses
the whole batch with ``SpoolFullError`` instead of dropping anything.

The file is opened in SQLite's exclusive locking mode: one process owns a spool at
a time (two publishers draining one spool would send everything twice). The lock
goes with the process, so a killed publisher's spool opens again at once.

Pure storage: nothing here talks to Kafka.
"""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from bus.errors import ConfigError, DeliveryError, SpoolFullError
from bus.private_files import private_sqlite

__all__ = ["Spool", "SpoolRecord", "SpooledRecord"]

Headers = list[tuple[str, bytes | None]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers TEXT NOT NULL,
    event_id TEXT NOT NULL,
    created REAL NOT NULL,
    size INTEGER NOT NULL
)
"""


@dataclass(frozen=True)
class SpoolRecord:
    """A record to keep: what the producer will send."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Headers
    event_id: str


@dataclass(frozen=True)
class SpooledRecord(SpoolRecord):
    """A record in the spool, with its place in the queue."""

    seq: int
    created: float


def _encode_headers(headers: Headers) -> str:
    return json.dumps(
        [[name, None if v is None else base64.b64encode(v).decode("ascii")] for name, v in headers]
    )


def _decode_headers(text: str) -> Headers:
    return [(name, None if v is None else base64.b64decode(v)) for name, v in json.loads(text)]


class Spool:
    def __init__(self, path: Path, max_bytes: int) -> None:
        if max_bytes <= 0:
            raise ConfigError(f"spool max_bytes must be positive, got {max_bytes}")
        self.path = Path(path)
        self.max_bytes = max_bytes
        try:
            private_sqlite(self.path)  # holds events with personal data: owner-only
        except OSError as exc:
            raise ConfigError(f"cannot create spool {self.path}: {exc}") from exc
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT).
        self._db = sqlite3.connect(self.path, isolation_level=None, timeout=1.0)
        try:
            self._db.execute("PRAGMA locking_mode=EXCLUSIVE")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # The first write takes the exclusive lock and keeps it until close().
            self._db.execute("BEGIN IMMEDIATE")
            self._db.execute(_SCHEMA)
            self._db.execute("COMMIT")
            row = self._db.execute("SELECT count(*), coalesce(sum(size), 0) FROM spool").fetchone()
        except sqlite3.OperationalError as exc:
            self._db.close()
            if "locked" in str(exc):
                raise ConfigError(
                    f"spool {self.path} is in use by another process; "
                    "give each publishing process its own DATABUS_SPOOL__PATH"
                ) from exc
            raise ConfigError(f"cannot open spool {self.path}: {exc}") from exc
        self._count, self._size = int(row[0]), int(row[1])

    def __len__(self) -> int:
        return self._count

    @property
    def size_bytes(self) -> int:
        """Payload bytes held (key + value + encoded headers), what ``max_bytes`` bounds."""
        return self._size

    def append(self, records: Sequence[SpoolRecord]) -> list[int]:
        """Keep all of ``records`` durably, or none of them; returns their sequence numbers.

        Raises ``SpoolFullError`` (nothing kept) when they do not fit in ``max_bytes``,
        ``DeliveryError`` (nothing kept) when the database refuses them.
        """
        rows = []
        added = 0
        for r in records:
            headers = _encode_headers(r.headers)
            size = len(r.key or b"") + len(r.value) + len(headers)
            added += size
            rows.append((r.topic, r.key, r.value, headers, r.event_id, time.time(), size))
        if not rows:
            return []
        if self._size + added > self.max_bytes:
            raise SpoolFullError(
                f"spool {self.path} is full: it holds {self._count} events, {self._size} of "
                f"{self.max_bytes} bytes, and {len(rows)} more ({added} bytes) do not fit; "
                "nothing of this call was accepted. The broker has been unreachable for a "
                "while: retry later, or raise DATABUS_SPOOL__MAX_BYTES"
            )
        seqs = []
        self._db.execute("BEGIN IMMEDIATE")
        try:
            for row in rows:
                cur = self._db.execute(
                    "INSERT INTO spool (topic, key, value, headers, event_id, created, size)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    row,
                )
                assert cur.lastrowid is not None
                seqs.append(cur.lastrowid)
            self._db.execute("COMMIT")
        except sqlite3.Error as exc:
            self._db.execute("ROLLBACK")
            # a full or locked disk may heal; a row the database refuses will not
            raise DeliveryError(
                f"spool {self.path}: the database did not keep the records "
                f"({type(exc).__name__}); nothing of this call was accepted",
                retriable=isinstance(exc, sqlite3.OperationalError),
            ) from exc
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._count += len(rows)
        self._size += added
        return seqs

    def peek(self, n: int, *, after: int = 0) -> list[SpooledRecord]:
        """Up to ``n`` records with ``seq > after``, oldest first; they stay in the spool."""
        cur = self._db.execute(
            "SELECT seq, topic, key, value, headers, event_id, created FROM spool"
            " WHERE seq > ? ORDER BY seq LIMIT ?",
            (after, n),
        )
        return [
            SpooledRecord(
                topic=topic,
                key=key,
                value=value,
                headers=_decode_headers(headers),
                event_id=event_id,
                seq=seq,
                created=created,
            )
            for seq, topic, key, value, headers, event_id, created in cur
        ]

    def ack(self, seqs: Iterable[int]) -> None:
        """Forget these records (the broker has them), in one durable transaction."""
        wanted = [(s,) for s in seqs]
        if not wanted:
            return
        self._db.execute("BEGIN IMMEDIATE")
        try:
            self._db.execute("CREATE TEMP TABLE IF NOT EXISTS acked (seq INTEGER PRIMARY KEY)")
            self._db.execute("DELETE FROM acked")
            self._db.executemany("INSERT OR IGNORE INTO acked VALUES (?)", wanted)
            gone = self._db.execute(
                "SELECT count(*), coalesce(sum(size), 0) FROM spool"
                " WHERE seq IN (SELECT seq FROM acked)"
            ).fetchone()
            self._db.execute("DELETE FROM spool WHERE seq IN (SELECT seq FROM acked)")
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._count -= int(gone[0])
        self._size -= int(gone[1])

    def close(self) -> None:
        self._db.close()
