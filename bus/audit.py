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

Size is bounded: with ``max_bytes`` set, a file that reached it is renamed ``<name>.1``
(``.1`` to ``.2`` and so on, the oldest beyond ``keep`` removed) and the new file starts
with an ``audit.rotated`` entry that carries on the chain (its ``prev`` is the old file's
last hash, its ``seq`` the next number), so ``verify_rotated`` checks the kept files as
one chain. Ship rotated files to the central log server before they age out.
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

__all__ = [
    "GENESIS",
    "ROTATED",
    "AuditLog",
    "Verification",
    "canonical",
    "entry_hash",
    "rotated_files",
    "verify",
    "verify_rotated",
]

GENESIS = "0" * 64
ROTATED = "audit.rotated"  # the action of the first entry of a file after a rotation
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


def rotated_files(path: Path, keep: int) -> list[Path]:
    """``path``'s rotated files that exist, oldest first (``<name>.<keep>`` .. ``.1``)."""
    names = (path.with_name(f"{path.name}.{i}") for i in range(keep, 0, -1))
    return [p for p in names if p.is_file()]


class AuditLog:
    """Appends entries to one JSON-lines file; safe across threads and processes.

    ``max_bytes``: rotate when the file reaches that size, keeping ``keep`` old files.
    """

    def __init__(self, path: Path, *, max_bytes: int | None = None, keep: int = 10) -> None:
        if keep < 1:
            raise ValueError("keep must be at least 1")
        self.path = path
        self.max_bytes = max_bytes
        self.keep = keep

    def _lock(self) -> int:
        """An exclusive ``flock`` on ``<name>.lock``, a file that is never rotated, so a
        writer that waited for the lock always appends to the current file."""
        fd = open_private(self.path.with_name(f"{self.path.name}.lock"), os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def _rotate(self) -> None:
        """Shift ``.N`` to ``.N+1`` (dropping the oldest) and the file to ``.1``."""
        for i in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{i}")
            if older.exists():
                os.replace(older, self.path.with_name(f"{self.path.name}.{i + 1}"))
        os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))

    def _previous_head(self) -> bytes:
        """The last line of ``<name>.1``, which an empty current file continues."""
        try:
            fd = os.open(self.path.with_name(f"{self.path.name}.1"), os.O_RDONLY)
        except FileNotFoundError:
            return b""
        try:
            return _last_line(fd)
        finally:
            os.close(fd)

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
        lock = self._lock()
        try:
            fd = open_private(self.path, os.O_RDWR | os.O_APPEND)  # owner-only (0600)
            try:
                when = (at or datetime.now(UTC)).isoformat(timespec="milliseconds")
                last = _last_line(fd)
                continued = not last
                full = self.max_bytes is not None and os.fstat(fd).st_size >= self.max_bytes
                if last and full:
                    self._rotate()
                    os.close(fd)
                    fd = open_private(self.path, os.O_RDWR | os.O_APPEND)  # owner-only (0600)
                    continued = True
                if continued:  # a new file after a rotation (or a crash during one)
                    last = self._previous_head()
                if last:
                    previous = json.loads(last)
                    prev, seq = str(previous["hash"]), int(previous["seq"]) + 1
                else:
                    prev, seq = GENESIS, 1
                lines = []
                if continued and last:
                    marker = _entry(
                        seq,
                        when,
                        "databus",
                        ROTATED,
                        f"{self.path.name}.1",
                        "rotated",
                        {"max_bytes": self.max_bytes},
                        prev,
                    )
                    lines.append(marker)
                    prev, seq = marker["hash"], seq + 1
                entry = _entry(seq, when, actor, action, object, outcome, dict(detail or {}), prev)
                lines.append(entry)
                os.write(fd, "".join(canonical(e) + "\n" for e in lines).encode("utf-8"))
                os.fsync(fd)
                return entry
            finally:
                os.close(fd)
        finally:
            os.close(lock)  # releases the lock


def _entry(
    seq: int,
    at: str,
    actor: str,
    action: str,
    object: str,
    outcome: str,
    detail: dict[str, Any],
    prev: str,
) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "seq": seq,
        "at": at,
        "actor": actor,
        "action": action,
        "object": object,
        "outcome": outcome,
        "detail": detail,
        "prev": prev,
    }
    entry["hash"] = entry_hash(prev, entry)
    return entry


@dataclass(frozen=True)
class Verification:
    ok: bool
    lines: int  # lines checked, the broken one included
    head: str  # hash of the last good line (GENESIS for an empty log)
    broken_line: int | None = None  # 1-based
    reason: str | None = None
    starts_after: str = GENESIS  # the hash the file's first line continues (after a rotation)


def _check(line: str, expected_seq: int | None, prev: str | None) -> tuple[str | None, Any]:
    """(why the line is broken or None, the entry). ``expected_seq`` None: the first line
    of a rotated file, whose seq goes on from the file before; ``prev`` None: any."""
    try:
        entry = json.loads(line)
    except json.JSONDecodeError as exc:
        return f"not JSON ({exc.msg})", None
    if not isinstance(entry, dict) or set(entry) != _KEYS:
        return "not an audit entry (wrong keys)", None
    if canonical(entry) != line:
        return "not written canonically (edited by hand?)", None
    if not isinstance(entry["seq"], int) or not isinstance(entry["prev"], str):
        return "not an audit entry (seq, prev)", None
    if expected_seq is not None and entry["seq"] != expected_seq:
        return f"sequence {entry['seq']!r}, expected {expected_seq}", None
    if prev is not None and entry["prev"] != prev:
        return "prev does not match the previous line's hash", None
    if entry["hash"] != entry_hash(entry["prev"], entry):
        return "hash does not match the content", None
    return None, entry


def _action(line: str) -> object:
    try:
        entry = json.loads(line)
    except json.JSONDecodeError:
        return None
    return entry.get("action") if isinstance(entry, dict) else None


def verify(path: Path, after: str | None = None) -> Verification:
    """Check the whole chain; the first broken line stops the check.

    A file starts at ``GENESIS`` with seq 1 or, after a rotation, with an
    ``audit.rotated`` entry continuing the chain of the file before it; ``after``, when
    given, is that file's head: the first line must then be a rotation continuing it.
    """
    prev = GENESIS
    start = GENESIS
    seq = 0
    number = 0
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                return Verification(False, number, prev, number, "not UTF-8", start)
            if not line.endswith("\n"):
                return Verification(False, number, prev, number, "incomplete last line", start)
            rotated = number == 1 and _action(line) == ROTATED
            if number == 1 and after is not None and not rotated:
                reason: str | None = "does not continue the previous file (no rotation entry)"
            elif rotated:
                reason, entry = _check(line[:-1], None, after)
            else:
                reason, entry = _check(line[:-1], seq + 1, prev)
            if reason is not None:
                return Verification(False, number, prev, number, reason, start)
            if rotated:
                start = str(entry["prev"])
            prev, seq = str(entry["hash"]), int(entry["seq"])
    return Verification(True, number, prev, starts_after=start)


def verify_rotated(path: Path, keep: int = 1000) -> list[tuple[Path, Verification]]:
    """Verify the rotated files (oldest first) and ``path`` as one chain; stops at the
    first broken file. The oldest kept file may continue a chain whose start aged out."""
    results = []
    head: str | None = None
    for file in [*rotated_files(path, keep), path]:
        if not file.is_file():
            continue
        result = verify(file, head)
        results.append((file, result))
        if not result.ok:
            break
        head = result.head
    return results
