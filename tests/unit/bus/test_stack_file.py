"""The stack file `databus up` leaves for other shells: written owner-only and
atomically, read back, stale once its process is gone, removed on a clean stop; the
addresses it holds fill only what the settings leave empty."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from bus.settings import load_settings
from databus.stack_file import (
    LOCK_FILE,
    STACK_FILE,
    StackInfo,
    apply_stack,
    export_lines,
    read_stack,
    remove_stack,
    safe_sql_url,
    write_stack,
)


def _info(tmp_path: Path, pid: int | None = None) -> StackInfo:
    return StackInfo(
        pid=os.getpid() if pid is None else pid,
        data_dir=str(tmp_path),
        kafka="127.0.0.1:9092",
        schema_registry="http://127.0.0.1:8081",
        redis="redis://127.0.0.1:6379/0",
        sql=f"sqlite:///{tmp_path}/shared_repo.sqlite",
        health_receiver="http://127.0.0.1:8090",
        metrics_ports={"processor": 9101, "sink-ioc": 9102},
        pids={"processor": 11, "sink-ioc": 12},
    )


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_written_owner_only_and_read_back(tmp_path: Path) -> None:
    path = write_stack(tmp_path, _info(tmp_path))
    assert path == tmp_path / STACK_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_stack(tmp_path) == _info(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == [STACK_FILE]  # no temporary left


def test_a_stack_whose_process_is_gone_is_stale(tmp_path: Path) -> None:
    write_stack(tmp_path, _info(tmp_path, pid=_dead_pid()))
    assert read_stack(tmp_path) is None
    assert read_stack(tmp_path, include_stale=True) is not None


def test_a_free_lock_makes_a_live_pid_stale(tmp_path: Path) -> None:
    """A reused pid is not taken for `up`: `up` holds the data directory's lock."""
    import fcntl

    write_stack(tmp_path, _info(tmp_path))
    lock = (tmp_path / LOCK_FILE).open("ab")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        assert read_stack(tmp_path) is not None  # held: `up` runs
        fcntl.flock(lock, fcntl.LOCK_UN)
        assert read_stack(tmp_path) is None  # free: whoever has that pid, it is not `up`
    finally:
        lock.close()


def test_missing_or_broken_files_read_as_no_stack(tmp_path: Path) -> None:
    assert read_stack(tmp_path) is None
    (tmp_path / STACK_FILE).write_text("{not json")
    assert read_stack(tmp_path) is None


def test_removed_only_by_its_own_process(tmp_path: Path) -> None:
    write_stack(tmp_path, _info(tmp_path))
    remove_stack(tmp_path, pid=os.getpid() + 1)
    assert (tmp_path / STACK_FILE).exists()
    remove_stack(tmp_path, pid=os.getpid())
    assert not (tmp_path / STACK_FILE).exists()


def test_the_stack_fills_empty_addresses_and_the_environment_wins(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("DATABUS_KAFKA__BOOTSTRAP_SERVERS", "DATABUS_REDIS__URL"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.delenv("DATABUS_SCHEMA_REGISTRY__URL", raising=False)
    monkeypatch.setenv("DATABUS_REDIS__URL", "redis://10.0.0.5:6379/1")
    settings = apply_stack(load_settings(), _info(tmp_path))
    assert settings.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert settings.schema_registry.url == "http://127.0.0.1:8081"
    assert settings.redis.url == "redis://10.0.0.5:6379/1"  # set in the environment
    assert apply_stack(load_settings(), None) == load_settings()


def test_export_lines_for_a_shell(tmp_path: Path) -> None:
    lines = export_lines(_info(tmp_path))
    assert "export DATABUS_KAFKA__BOOTSTRAP_SERVERS=127.0.0.1:9092" in lines
    assert "export DATABUS_SCHEMA_REGISTRY__URL=http://127.0.0.1:8081" in lines
    assert f"export DATABUS_DATA_DIR={tmp_path}" in lines
    # not exported: the health sink needs this run's secrets too, never written anywhere
    assert not any(line.startswith("export DATABUS_HEALTH_AXIS") for line in lines)
    assert "# processor: http://127.0.0.1:9101/metrics (pid 11)" in lines


def test_a_sql_url_with_a_password_is_not_recorded() -> None:
    assert safe_sql_url("sqlite:///x.sqlite") == "sqlite:///x.sqlite"
    assert safe_sql_url("postgresql+psycopg://bus:s3cret@db/bus") is None
    assert safe_sql_url("postgresql+psycopg://bus@db/bus") == "postgresql+psycopg://bus@db/bus"
