"""Owner-only files and directories whatever the umask: created 0600/0700, a file
found more open is tightened, existing parent directories are left alone."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from bus.private_files import (
    OWNER_ONLY_UMASK,
    open_private,
    owner_only_umask,
    private_dir,
    private_file,
    private_sqlite,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """A distribution's default umask (022), under which files come out 0644."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def test_missing_directories_are_created_0700(tmp_path: Path) -> None:
    os.chmod(tmp_path, 0o755)
    target = private_dir(tmp_path / "a" / "b" / "c")
    assert [mode(p) for p in (target, target.parent, target.parent.parent)] == [0o700] * 3
    assert mode(tmp_path) == 0o755  # an existing parent keeps its mode


def test_an_existing_directory_is_tightened_only_when_asked(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    folder.mkdir(mode=0o755)
    private_dir(folder)
    assert mode(folder) == 0o755
    private_dir(folder, tighten=True)
    assert mode(folder) == 0o700


def test_a_new_file_is_0600_and_an_open_one_is_tightened_keeping_its_content(
    tmp_path: Path,
) -> None:
    fresh = private_file(tmp_path / "new" / "f.db")
    assert (mode(fresh), mode(fresh.parent), fresh.read_bytes()) == (0o600, 0o700, b"")
    old = tmp_path / "old.jsonl"
    old.write_text("kept\n")
    os.chmod(old, 0o644)
    os.close(open_private(old, os.O_RDONLY))
    assert (mode(old), old.read_text()) == (0o600, "kept\n")


def test_sqlite_companions_left_open_are_tightened(tmp_path: Path) -> None:
    db = tmp_path / "repo.sqlite"
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"repo.sqlite{suffix}").write_bytes(b"")
    private_sqlite(db)
    assert {p.name: mode(p) for p in tmp_path.iterdir()} == {
        "repo.sqlite": 0o600,
        "repo.sqlite-wal": 0o600,
        "repo.sqlite-shm": 0o600,
    }


def test_the_umask_is_owner_only_and_what_follows_is_created_so(tmp_path: Path) -> None:
    previous = owner_only_umask()
    try:
        assert previous == 0o022
        (tmp_path / "plain.txt").write_text("x")
        (tmp_path / "plain").mkdir()
    finally:
        assert os.umask(previous) == OWNER_ONLY_UMASK
    assert (mode(tmp_path / "plain.txt"), mode(tmp_path / "plain")) == (0o600, 0o700)
