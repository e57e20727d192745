"""Files holding personal data are owner-only: 0600 files, 0700 directories.

The shared repository's SQLite file, the Publisher's spool, the audit log, the
health receiver's store and the data directory are created with these modes
whatever the process umask (and a file found more open is tightened). SQLite
gives its ``-wal``, ``-shm`` and ``-journal`` files the database file's mode, so
creating the database file 0600 first covers them. The ``databus`` command also
sets the umask to 077 (``owner_only_umask``), so what its embedded servers write
under the data directory (broker log segments, Redis, Faust tables, logs) is
owner-only too.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

__all__ = [
    "DIR_MODE",
    "FILE_MODE",
    "OWNER_ONLY_UMASK",
    "open_private",
    "owner_only_umask",
    "private_dir",
    "private_file",
    "private_sqlite",
]

FILE_MODE = 0o600
DIR_MODE = 0o700
OWNER_ONLY_UMASK = 0o077
_SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def owner_only_umask() -> int:
    """Set the process umask to 077 (children inherit it); returns the previous one."""
    return os.umask(OWNER_ONLY_UMASK)


def private_dir(path: Path, *, tighten: bool = False) -> Path:
    """Create ``path`` and any missing parents as 0700 directories.

    Existing directories keep their mode (a parent may be shared, e.g. ``/var/lib``)
    unless ``tighten`` asks for ``path`` itself to be made 0700 — for a directory the
    bus owns, such as its data directory.
    """
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    path.mkdir(mode=DIR_MODE, parents=True, exist_ok=True)
    for created in missing:  # mkdir's mode is filtered by the umask
        os.chmod(created, DIR_MODE)
    if tighten and stat.S_IMODE(path.stat().st_mode) != DIR_MODE:
        os.chmod(path, DIR_MODE)
    return path


def open_private(path: Path, flags: int) -> int:
    """``os.open`` with ``O_CREAT``: a new file is 0600, an existing one is made 0600."""
    fd = os.open(path, flags | os.O_CREAT, FILE_MODE)
    try:
        if stat.S_IMODE(os.fstat(fd).st_mode) & ~FILE_MODE:
            os.fchmod(fd, FILE_MODE)
    except OSError:
        os.close(fd)
        raise
    return fd


def private_file(path: Path) -> Path:
    """Create ``path`` empty (parents 0700) or keep its content; either way 0600."""
    private_dir(path.parent)
    os.close(open_private(path, os.O_WRONLY))
    return path


def private_sqlite(path: Path) -> Path:
    """Prepare an SQLite database file before the first connection: 0600, so the
    ``-wal``/``-shm``/``-journal`` files SQLite creates beside it are 0600 too;
    companions left more open by an earlier version are tightened."""
    private_file(path)
    for suffix in _SQLITE_COMPANIONS:
        companion = path.with_name(path.name + suffix)
        if companion.exists() and stat.S_IMODE(companion.stat().st_mode) & ~FILE_MODE:
            os.chmod(companion, FILE_MODE)
    return path
