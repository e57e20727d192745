"""The audit log: access decisions and exports, append-only, hash-chained.

One JSON object per line, written canonically (sorted keys, no spaces, UTF-8):

    {"action": ..., "actor": ..., "at": ..., "detail": {...}, "hash": ..., "object": ...,
     "outcome": ..., "prev": ..., "seq": ...}

``hash = sha256(prev + canonical JSON of the entry without "hash")`` and ``prev`` is the
previous line's hash (64 zeros on the first line), so changing, inserting or removing a
line breaks the chain at that line; ``verify`` names the first broken one. Cutting lines
off the *end* leaves a valid shorter chain: to detect that, keep the head hash that
``verify`` reports somewhere else (the central log server Decree 85 asks for).

Writers from several processes (the API, the share loop) append under an exclusive
``flock``, reading the last line's hash inside the lock, so the chain stays linear.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bus.private_files import open_private, private_dir

__all__ = ["GENESIS", "AuditLog", "Verification", "canonical", "entry_hash", "verify"]

GENESIS = "0" * 64
_KEYS = frozenset({"seq", "at", "actor", "action", "object", "outcome", "detail", "prev", "hash"})


def canonical(obj: Mapping[str, Any]) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def entry_hash(prev: str, entry: Mapping[str, Any]) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256((prev + canonical(body)).encode("utf-8")).hexdigest()


def _last_line(fd: int) -> bytes:
    """The last complete line of the file (b"" when empty)."""
    size = os.lseek(fd, 0, os.SEEK_END)
    chunk = 4096
    end = size
    tail = b""
    while end > 0:
        start = max(0, end - chunk)
        tail = os.pread(fd, end - start, start) + tail
        end = start
        stripped = tail.rstrip(b"\n")
        if b"\n" in stripped or end == 0:
            return stripped.rsplit(b"\n", 1)[-1]
    return b""


class AuditLog:
    """Appends entries to one JSON-lines file; safe across threads and processes."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def append(
        self,
        *,
        actor: str,
        action: str,
        object: str,
        outcome: str,
        detail: Mapping[str, Any] | None = None,
        at: datetime | None = None,
    ) -> dict[str, Any]:
        private_dir(self.path.parent)
        fd = open_private(self.path, os.O_RDWR | os.O_APPEND)  # owner-only (0600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            last = _last_line(fd)
            if last:
                previous = json.loads(last)
                prev, seq = str(previous["hash"]), int(previous["seq"]) + 1
            else:
                prev, seq = GENESIS, 1
            entry: dict[str, Any] = {
                "seq": seq,
                "at": (at or datetime.now(UTC)).isoformat(timespec="milliseconds"),
                "actor": actor,
                "action": action,
                "object": object,
                "outcome": outcome,
                "detail": dict(detail or {}),
                "prev": prev,
            }
            entry["hash"] = entry_hash(prev, entry)
            os.write(fd, (canonical(entry) + "\n").encode("utf-8"))
            os.fsync(fd)
            return entry
        finally:
            os.close(fd)  # releases the lock


@dataclass(frozen=True)
class Verification:
    ok: bool
    lines: int  # lines checked, the broken one included
    head: str  # hash of the last good line (GENESIS for an empty log)
    broken_line: int | None = None  # 1-based
    reason: str | None = None


def _check(line: str, expected_seq: int, prev: str) -> tuple[str | None, str]:
    """(why the line is broken or None, its hash)."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg})", prev
    if not isinstance(entry, dict) or set(entry) != _KEYS:
        return "not an audit entry (wrong keys)", prev
    if canonical(entry) != line:
        return "not written canonically (edited by hand?)", prev
    if entry["seq"] != expected_seq:
        return f"sequence {entry['seq']!r}, expected {expected_seq}", prev
    if entry["prev"] != prev:
        return "prev does not match the previous line's hash", prev
    if entry["hash"] != entry_hash(prev, entry):
        return "hash does not match the content", prev
    return None, str(entry["hash"])


def verify(path: Path) -> Verification:
    """Check the whole chain; the first broken line stops the check."""
    prev = GENESIS
    number = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                return Verification(False, number, prev, number, "not UTF-8")
            if not line.endswith("\n"):
                return Verification(False, number, prev, number, "incomplete last line")
            reason, digest = _check(line[:-1], number, prev)
            if reason is not None:
                return Verification(False, number, prev, number, reason)
            prev = digest
    return Verification(True, number, prev)
