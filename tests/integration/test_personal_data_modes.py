"""Personal data at rest: what real runs of the shared-repository sink (SQLite, WAL),
the Publisher's spool and the audit log create is owner-only — 0600 files, including
SQLite's -wal and -shm, in 0700 directories — under the usual umask 022."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from std_samples import sink_records, std_events

from bus.audit import AuditLog, verify
from producers.spool import Spool, SpoolRecord
from sinks.shared_repo import SharedRepoSink, create_repo_engine

DATASET = "health.encounters"  # patients' citizen ids


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(root: Path) -> dict[str, int]:
    """Every file and directory under ``root`` (itself included) → its permission bits."""
    found = {".": stat.S_IMODE(root.stat().st_mode)}
    for path in root.rglob("*"):
        found[str(path.relative_to(root))] = stat.S_IMODE(path.stat().st_mode)
    return found


def test_the_shared_repository_file_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    root = tmp_path / "data"
    engine = create_repo_engine(f"sqlite:///{root / 'shared_repo.sqlite'}")
    try:
        sink = SharedRepoSink(engine)
        sink.setup()
        records = sink_records(DATASET, std_events(DATASET)[:20])
        assert not sink.write(records)
        # while connections are open SQLite keeps its -wal and -shm beside the file
        assert {"shared_repo.sqlite-wal", "shared_repo.sqlite-shm"} <= {
            p.name for p in root.iterdir()
        }
        found = modes(root)
    finally:
        engine.dispose()
    assert found == {
        ".": 0o700,
        "shared_repo.sqlite": 0o600,
        "shared_repo.sqlite-wal": 0o600,
        "shared_repo.sqlite-shm": 0o600,
    }


def test_a_shared_repository_file_left_world_readable_is_tightened(tmp_path: Path) -> None:
    db = tmp_path / "shared_repo.sqlite"
    db.write_bytes(b"")
    os.chmod(db, 0o644)
    create_repo_engine(f"sqlite:///{db}").dispose()
    assert stat.S_IMODE(db.stat().st_mode) == 0o600


def test_the_spool_and_its_wal_are_owner_only(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    spool = Spool(root / "publisher.sqlite", max_bytes=1 << 20)
    try:
        spool.append([SpoolRecord("t", b"k", b"v" * 100, [], f"e{i}") for i in range(10)])
        found = modes(root)
    finally:
        spool.close()
    # exclusive locking mode keeps WAL's shared memory in the process: no -shm file
    assert found == {".": 0o700, "publisher.sqlite": 0o600, "publisher.sqlite-wal": 0o600}


def test_the_audit_log_is_owner_only(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "data" / "audit.jsonl")
    for i in range(3):
        log.append(actor="agency:A", action="read", object=f"d{i}", outcome="allowed")
    assert modes(tmp_path / "data") == {".": 0o700, "audit.jsonl": 0o600, "audit.jsonl.lock": 0o600}
    assert verify(log.path).ok
