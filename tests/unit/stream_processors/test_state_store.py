"""The entity state store on local disk: overlay, commit with checkpoint, reopen,
corrupt and deleted files, slots."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bus.errors import ConfigError
from stream_processors.entity_state import Entity
from stream_processors.state_store import EntityStore, claim_slot

T = "dossiers.raw.v1"


def entity(version: int, offset: int = 0) -> Entity:
    return Entity(version, f"e{version}", f"d{version}", offset, [("g", "k", {"n": 1})], [])


def test_overlay_then_commit_then_reopen(tmp_path: Path) -> None:
    path = tmp_path / "entities"
    with EntityStore(path) as store:
        assert store.applied(T, 0) == -1
        table = store.table(T, 0)
        a = table[b"a"] = entity(1)
        assert table.get(b"a") == entity(1)
        store.commit({(T, 0, b"a"): a}, {(T, 0): 17})
        assert len(table) == 0  # no longer pending
        assert table.get(b"a") == entity(1)
        assert store.applied(T, 0) == 17
        assert store.applied(T, 1) == -1
    with EntityStore(path) as store:
        assert not store.rebuilt
        assert store.applied(T, 0) == 17
        assert store.table(T, 0).get(b"a") == entity(1)
        assert store.table(T, 1).get(b"a") is None  # another partition


def test_uncommitted_changes_are_discarded_and_never_reach_disk(tmp_path: Path) -> None:
    path = tmp_path / "entities"
    with EntityStore(path) as store:
        store.commit({(T, 0, b"a"): entity(1)}, {(T, 0): 1})
        table = store.table(T, 0)
        table[b"a"] = entity(2)
        table[b"b"] = entity(1)
        store.discard_pending()
        assert table.get(b"a") == entity(1)
        assert table.get(b"b") is None
        table[b"a"] = entity(3)
    with EntityStore(path) as store:
        assert store.table(T, 0).get(b"a") == entity(1)


def test_a_newer_pending_change_survives_the_commit_of_an_older_one(tmp_path: Path) -> None:
    with EntityStore(tmp_path / "e") as store:
        table = store.table(T, 0)
        older, newer = entity(1), entity(2)
        table[b"a"] = older
        table[b"a"] = newer
        store.commit({(T, 0, b"a"): older}, {(T, 0): 5})
        assert table.get(b"a") is newer


def test_apply_replays_changelog_records_and_deletes(tmp_path: Path) -> None:
    with EntityStore(tmp_path / "e") as store:
        store.apply(T, 2, [(b"a", entity(1).to_json()), (b"b", entity(1).to_json())], 10)
        store.apply(T, 2, [(b"a", entity(4).to_json()), (b"b", None)], 12)
        table = store.table(T, 2)
        assert table.get(b"a") == entity(4)
        assert table.get(b"b") is None
        assert store.applied(T, 2) == 12


def test_forget_clears_one_partition_only(tmp_path: Path) -> None:
    with EntityStore(tmp_path / "e") as store:
        store.apply(T, 1, [(b"a", entity(1).to_json())], 3)
        store.apply(T, 10, [(b"a", entity(1).to_json())], 4)
        store.table(T, 1).get(b"a")  # cached
        store.forget(T, 1)
        assert store.applied(T, 1) == -1
        assert store.table(T, 1).get(b"a") is None
        assert store.table(T, 10).get(b"a") == entity(1)
        assert store.applied(T, 10) == 4


def test_the_cache_is_bounded(tmp_path: Path) -> None:
    with EntityStore(tmp_path / "e", cache_entries=100) as store:
        records = [(str(i).encode(), entity(i).to_json()) for i in range(1000)]
        store.apply(T, 0, records, 999)
        table = store.table(T, 0)
        for i in range(1000):
            assert table.get(str(i).encode()) == entity(i)
        assert store.cached <= 100
        store.release(T, 0)
        assert store.cached == 0
        assert store.table(T, 0).get(b"5") == entity(5)


def test_a_deleted_store_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "e"
    with EntityStore(path) as store:
        store.apply(T, 0, [(b"a", entity(1).to_json())], 3)
    shutil.rmtree(path)
    with EntityStore(path) as store:
        assert store.applied(T, 0) == -1
        assert store.table(T, 0).get(b"a") is None


def test_a_corrupt_store_is_set_aside_and_starts_empty(tmp_path: Path) -> None:
    path = tmp_path / "e"
    with EntityStore(path) as store:
        store.apply(T, 0, [(b"a", entity(1).to_json())], 3)
    for f in path.iterdir():
        if f.name.startswith(("MANIFEST", "CURRENT")):
            f.write_bytes(b"\x00garbage" * 100)
    with EntityStore(path) as store:
        assert store.rebuilt
        assert store.applied(T, 0) == -1
        assert store.table(T, 0).get(b"a") is None
        store.apply(T, 0, [(b"a", entity(2).to_json())], 3)
    assert not any(p.name.startswith("e.unusable") for p in tmp_path.iterdir())
    with EntityStore(path) as store:
        assert not store.rebuilt
        assert store.table(T, 0).get(b"a") == entity(2)


def test_a_store_of_another_format_is_rebuilt(tmp_path: Path) -> None:
    path = tmp_path / "e"
    with EntityStore(path) as store:
        store._db.put(b"\x01format", b"something-else/9")
    with EntityStore(path) as store:
        assert store.rebuilt


_KILLED_WRITER = """
import os, sys
from pathlib import Path
from stream_processors.entity_state import Entity
from stream_processors.state_store import EntityStore
store = EntityStore(Path(sys.argv[1]))
for i in range(1, 10_000):
    e = Entity(i, f"e{i}", "d", i)
    store.commit({("t", 0, b"k%d" % (i % 50)): e, ("t", 0, b"last"): e}, {("t", 0): i})
    if i == int(sys.argv[2]):
        os.kill(os.getpid(), 9)
"""


def test_kill_9_during_checkpoints_leaves_entities_and_offset_consistent(
    tmp_path: Path,
) -> None:
    path = tmp_path / "e"
    done = subprocess.run([sys.executable, "-c", _KILLED_WRITER, str(path), "4321"], check=False)
    assert done.returncode == -9
    with EntityStore(path) as store:
        applied = store.applied("t", 0)
        last = store.table("t", 0).get(b"last")
        assert last is not None and applied == last.version == 4321  # same write batch


def test_slots_are_exclusive_and_freed(tmp_path: Path) -> None:
    a = claim_slot(tmp_path)
    b = claim_slot(tmp_path)
    assert a.path != b.path
    a.release()
    c = claim_slot(tmp_path)
    assert c.path == a.path
    b.release()
    c.release()


def test_an_unwritable_state_dir_names_the_setting(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="DATABUS_PROCESSOR__STATE_DIR"):
        claim_slot(blocker / "sub")


def test_a_store_another_handle_holds_is_refused_not_wiped(tmp_path: Path) -> None:
    path = tmp_path / "e"
    with EntityStore(path) as store:
        store.apply(T, 0, [(b"a", entity(1).to_json())], 3)
        with pytest.raises(ConfigError, match="in use by another process"):
            EntityStore(path)
        assert store.table(T, 0).get(b"a") == entity(1)


_KILLED_RESTORE = """
import os, sys
from pathlib import Path
from stream_processors.entity_state import Entity
from stream_processors.state_store import EntityStore
store = EntityStore(Path(sys.argv[1]))
store.commit({("t", 0, b"before"): Entity(1, "e", "d", 1)}, {("t", 0): 1})
for chunk in range(2, 400):
    e = Entity(chunk, "e", "d", chunk).to_json()
    records = [(b"k%d" % i, e) for i in range(500)] + [(b"last", e)]
    store.apply("t", 0, records, chunk, bulk=True)
    if chunk == int(sys.argv[2]):
        os.kill(os.getpid(), 9)
"""


def test_kill_9_during_a_bulk_restore_keeps_a_consistent_prefix(tmp_path: Path) -> None:
    path = tmp_path / "e"
    done = subprocess.run([sys.executable, "-c", _KILLED_RESTORE, str(path), "321"], check=False)
    assert done.returncode == -9
    with EntityStore(path) as store:
        applied = store.applied("t", 0)
        table = store.table("t", 0)
        assert table.get(b"before") == Entity(1, "e", "d", 1)  # logged: kept
        last = table.get(b"last")
        if applied == 1:
            assert last is None  # nothing of the bulk writes kept: replayed again
        else:
            assert last is not None and last.version == applied
            assert {table.get(b"k%d" % i).version for i in range(500)} == {applied}  # type: ignore[union-attr]


def test_a_slot_made_for_other_topics_is_emptied(tmp_path: Path) -> None:
    slot = claim_slot(tmp_path)
    try:
        assert not slot.match("one")  # a new slot: nothing to keep
        with EntityStore(slot.path / "entities") as store:
            store.apply(T, 0, [(b"a", entity(1).to_json())], 3)
        assert slot.match("one")
        assert (slot.path / "entities").exists()
        assert not slot.match("two")  # the broker lost its topics
        assert not (slot.path / "entities").exists()
        assert (slot.path / "lock").exists()
    finally:
        slot.release()
