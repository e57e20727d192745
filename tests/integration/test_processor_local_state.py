"""The batch loop's entity state on local disk, over the embedded broker.

A worker restarted with its disk replays only the changelog after its store's
checkpoint; one with a wiped, corrupt or half-restored store rebuilds from the
changelog. Whichever: every valid event standardized exactly once, re-sent events
counted as duplicates or stale, rule deltas netting to one per dossier.
Two loops sharing the partitions with cooperative-sticky assignment: the one that
keeps partitions keeps its state and goes on; nothing lost or counted twice.
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import pytest
from bus_processes import read_topic
from confluent_kafka.schema_registry import SchemaRegistryClient
from test_batch_loop import (
    DOSSIERS,
    _contributions,
    _dossier,
    _presence,
    dossiers_per_unit,
    ends,
    loop_settings,
    net_status_deltas,
    publish,
    settings,
    start_group_at,
)

from bus.metrics import Metrics
from bus.settings import Settings, load_settings
from databus.local_stack import LocalStack
from databus.standins.object_store import ObjectFiles, sweep
from producers.simulators import DossierSpec, generate_dossiers
from schemas.domain.reference import load_reference
from schemas.topics import changelog_topic
from stream_processors import batch_loop
from stream_processors.batch_core import BatchCore
from stream_processors.batch_loop import BatchLoop
from stream_processors.pipeline import DatasetPipeline
from stream_processors.state_store import EntityStore

if TYPE_CHECKING:
    from confluent_kafka import Consumer, TopicPartition

pytestmark = pytest.mark.integration
_ = settings  # the fixture, imported


class Worker:
    """One loop with a local store, in a thread."""

    def __init__(
        self,
        settings: Settings,
        path: Path,
        *,
        batch_size: int = 200,
        loop_cls: type[BatchLoop] = BatchLoop,
    ) -> None:
        registry = self.registry = SchemaRegistryClient(settings.schema_registry.client_config())
        ref = load_reference()
        pipeline = DatasetPipeline(DOSSIERS, registry, ref, standardizer=_dossier)
        self.core = BatchCore(
            {DOSSIERS.raw_topic: pipeline},
            frozenset(ref.receiving_units),
            contributions=_contributions,
            presence=_presence,
        )
        self.metrics = Metrics()
        self.store = EntityStore(path, cache_entries=50)  # smaller than the state
        self.loop = loop_cls(
            settings,
            self.metrics,
            self.core,
            {DOSSIERS.raw_topic: DOSSIERS},
            batch_size=batch_size,
            store=self.store,
        )
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.loop.run()
        except BaseException as exc:
            self.error = exc

    def consumed(self) -> float:
        return (
            self.metrics.registry.get_sample_value(
                "databus_events_consumed_total", {"dataset": DOSSIERS.id, "stage": "raw"}
            )
            or 0.0
        )

    def dropped(self, reason: str) -> float:
        return (
            self.metrics.registry.get_sample_value(
                "databus_events_dropped_total", {"dataset": DOSSIERS.id, "reason": reason}
            )
            or 0.0
        )

    def wait(self, check: Callable[[], bool], timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            assert self.thread.is_alive(), f"the loop died: {self.error!r}"
            assert time.monotonic() < deadline, "timed out waiting for the loop"
            time.sleep(0.2)  # polling a condition with a deadline

    def stop(self) -> None:
        self.loop.stop_event.set()
        self.thread.join(60)
        self.store.close()
        self.registry.close()


def _corrupt(path: Path) -> None:
    for f in path.iterdir():
        if f.name.startswith(("MANIFEST", "CURRENT", "OPTIONS")):
            f.write_bytes(b"\xffnot rocksdb" * 64)


# kept and wiped in `make test`; the other disks (each a full worker restart) in
# `make test-slow`, to keep the suite in its time budget
@pytest.mark.parametrize(
    "disk",
    [
        "kept",
        "wiped",
        pytest.param("corrupt", marks=pytest.mark.slow),
        pytest.param("restore_crashed", marks=pytest.mark.slow),
        pytest.param("snapshot", marks=pytest.mark.slow),
    ],
)
def test_a_restarted_worker_replays_the_tail_or_rebuilds(
    settings: Settings,
    tmp_path: Path,
    disk: str,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
) -> None:
    if disk == "snapshot":  # on a broker with disk storage, which trims what snapshots cover
        settings = loop_settings(request.getfixturevalue("disk_stack_settings"))
    std_start = ends(settings, DOSSIERS.std_topic)
    start_group_at(settings, ends(settings, DOSSIERS.raw_topic))
    events = generate_dossiers(
        DossierSpec(days=5, units=4, dossiers_per_unit_per_day=3.0, seed=31, bad_share=0.0),
        load_reference(),
    )
    valid = [e for e in events if e.expect_reason is None]
    half = len(events) // 2
    path = tmp_path / "entities"
    if disk == "snapshot":  # snapshots every 2 changelog records per partition
        settings = settings.model_copy(
            update={"processor": settings.processor.model_copy(update={"snapshot_every": 2})}
        )

    publish(settings, events[:half])
    first = Worker(settings, path)
    first.wait(lambda: first.consumed() >= half)
    if disk == "snapshot":
        first.wait(lambda: first.loop.snapshots >= 4)
    first.stop()
    with EntityStore(path) as store:
        applied = {p: store.applied(DOSSIERS.raw_topic, p) for p in range(4)}
    assert any(o >= 0 for o in applied.values()), "the first worker checkpointed"

    if disk == "snapshot":
        _trim_what_snapshots_cover(settings)
    if disk in ("wiped", "snapshot"):
        shutil.rmtree(path)
    elif disk == "corrupt":
        _corrupt(path)
    elif disk == "restore_crashed":
        # A restore that dies half-way (after its first chunk): the store keeps what it
        # applied with its offset, and the next restore goes on from there.
        with EntityStore(path) as store:
            for p in range(4):
                store.forget(DOSSIERS.raw_topic, p)
        monkeypatch.setattr(batch_loop, "_APPLY_CHUNK", 5)
        calls = {"n": 0}
        real_apply = EntityStore.apply

        def dying_apply(self: EntityStore, *args: object, **kw: object) -> int:
            calls["n"] += 1
            if calls["n"] > 3:
                raise SystemExit("killed during restore (test)")
            return real_apply(self, *args, **kw)  # type: ignore[arg-type]

        monkeypatch.setattr(EntityStore, "apply", dying_apply)
        doomed = Worker(settings, path)
        doomed.thread.join(60)
        assert isinstance(doomed.error, SystemExit)
        doomed.store.close()
        doomed.registry.close()
        monkeypatch.setattr(EntityStore, "apply", real_apply)

    second = Worker(settings, path)
    publish(settings, events[half:])
    publish(settings, events)  # everything again: duplicates and stale
    second.wait(lambda: second.consumed() >= len(events) * 2 - half)
    second.stop()

    changelog_records = half  # at least one per dossier changed in the first half
    replayed = second.loop.last_restore_records
    if disk == "kept":
        assert not second.store.rebuilt
        assert replayed <= 8, f"only the tail (markers) replayed, not {replayed}"
    elif disk == "corrupt":
        assert second.store.rebuilt
        assert replayed >= len({e.dossier.dossier_id for e in events[:half]})
    elif disk == "wiped":
        assert replayed >= len({e.dossier.dossier_id for e in events[:half]})
        assert second.loop.last_snapshot_entities == 0
    elif disk == "snapshot":
        # the entities from the snapshots, only the changelog after them replayed
        assert (
            second.loop.last_snapshot_entities
            >= len({e.dossier.dossier_id for e in events[:half]}) - 4 * 10
        )
        assert replayed < len({e.dossier.dossier_id for e in events[:half]})
    assert replayed < changelog_records * 4

    std = read_topic(settings, DOSSIERS.std_topic, std_start)
    std_ids = [dict(m.headers())["ce_originid"].decode() for m in std]
    assert sorted(std_ids) == sorted(e.event_id for e in valid), "each valid event exactly once"
    assert second.dropped("duplicate") == len({e.dossier.dossier_id for e in valid})
    assert second.dropped("duplicate") + second.dropped("stale") == len(valid)
    assert net_status_deltas(settings) == dossiers_per_unit(valid)


@pytest.fixture(scope="module")
def disk_stack_settings(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A stack of its own whose embedded broker keeps its records on disk."""
    requested = load_settings(
        data_dir=tmp_path_factory.mktemp("disk-stack"),
        supervise={"embedded_broker_storage": "disk"},
    )
    with LocalStack(requested) as stack:
        yield stack.settings


def _trim_what_snapshots_cover(settings: Settings) -> None:
    """On the embedded broker's disk storage, trim what the snapshots cover (the
    changelog before them), so the restore below has only snapshots and the tail."""
    storage = settings.data_dir.resolve() / "broker"
    assert storage.is_dir(), "the disk stack's broker storage"
    changelog = changelog_topic(settings.processor_group, DOSSIERS.id)
    records = storage / "tansu" / "clusters"
    before = len(list(records.glob(f"*/topics/{changelog}/partitions/*/records/*.batch")))
    sweep(ObjectFiles(storage), budget_bytes=10**12)
    after = len(list(records.glob(f"*/topics/{changelog}/partitions/*/records/*.batch")))
    assert after < before, "the changelog the snapshots cover was trimmed"


class WatchedLoop(BatchLoop):
    """A loop that notes which partitions it was given and had taken away."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.assigned: list[set[int]] = []
        self.revoked: list[set[int]] = []

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.assigned.append({tp.partition for tp in partitions})
        super()._on_assign(consumer, partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self.revoked.append({tp.partition for tp in partitions})
        super()._on_revoke(consumer, partitions)


def test_cooperative_rebalance_moves_only_what_moves(settings: Settings, tmp_path: Path) -> None:
    """A second worker joins while the first is busy: the first gives up only the
    partitions that move, keeps the others' state (no restore) and processing; the
    joined worker restores the moved ones. Nothing lost or counted twice."""
    assert settings.processor.assignment == "cooperative-sticky"
    std_start = ends(settings, DOSSIERS.std_topic)
    start_group_at(settings, ends(settings, DOSSIERS.raw_topic))
    events = generate_dossiers(
        DossierSpec(days=6, units=4, dossiers_per_unit_per_day=3.0, seed=37, bad_share=0.0),
        load_reference(),
    )
    valid = [e for e in events if e.expect_reason is None]
    half = len(events) // 2
    publish(settings, events[:half])
    first = Worker(settings, tmp_path / "a", loop_cls=WatchedLoop, batch_size=20)
    second: Worker | None = None
    try:
        first.wait(lambda: first.consumed() >= half)
        one = cast(WatchedLoop, first.loop)
        assert one.assigned == [{0, 1, 2, 3}]
        second = Worker(settings, tmp_path / "b", loop_cls=WatchedLoop, batch_size=20)
        two = cast(WatchedLoop, second.loop)
        first.wait(lambda: bool(one.revoked) and bool(two.assigned))
        publish(settings, events[half:])
        publish(settings, events)
        total = len(events) * 2  # every record once, by one worker or the other
        first.wait(lambda: first.consumed() + second.consumed() >= total)
        kept = {0, 1, 2, 3} - set().union(*one.revoked)
        moved = set().union(*two.assigned)
        assert kept and moved, (one.assigned, one.revoked, two.assigned)
        assert kept | moved == {0, 1, 2, 3} and not kept & moved
        # Incremental rounds after the first hand it nothing (no drop, no re-restore).
        assert one.assigned[0] == {0, 1, 2, 3}
        assert not set().union(*one.assigned[1:]), one.assigned
        assert len(set().union(*one.revoked)) < 4, "only the moving partitions were revoked"
    finally:
        first.stop()
        if second is not None:
            second.stop()
    assert second is not None
    std = read_topic(settings, DOSSIERS.std_topic, std_start)
    std_ids = [dict(m.headers())["ce_originid"].decode() for m in std]
    assert sorted(set(std_ids)) == sorted(e.event_id for e in valid)
    dup = first.dropped("duplicate") + second.dropped("duplicate")
    stale = first.dropped("stale") + second.dropped("stale")
    assert dup == len({e.dossier.dossier_id for e in valid})
    assert dup + stale == len(valid)
    assert first.consumed() + second.consumed() == total
    assert net_status_deltas(settings) == dossiers_per_unit(valid)
