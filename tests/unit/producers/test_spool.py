"""The durable local spool, on real files (no broker)."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import time
from pathlib import Path

import pytest

from bus.errors import ConfigError, DeliveryError, SpoolFullError
from bus.settings import load_settings
from producers.spool import Spool, SpoolRecord

HEADERS: list[tuple[str, bytes | None]] = [
    ("ce_id", b"id"),
    ("binary", bytes(range(256))),
    ("empty", b""),
    ("none", None),
]


def rec(i: int, key: bytes | None = b"k", size: int = 10) -> SpoolRecord:
    return SpoolRecord(
        topic="publicservice.dossiers.raw.v1",
        key=key,
        value=i.to_bytes(4, "big") + b"x" * size,
        headers=[("ce_id", f"ev-{i}".encode())],
        event_id=f"ev-{i}",
    )


def test_fifo_order_and_round_trip(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", 1 << 20)
    first = SpoolRecord("t", None, b"\x00\x01", HEADERS, "e0")
    seqs = spool.append([first])
    seqs += spool.append([rec(i, key=f"k{i % 3}".encode()) for i in range(1, 50)])
    assert seqs == sorted(seqs) and len(set(seqs)) == 50
    got = spool.peek(100)
    assert [r.seq for r in got] == seqs
    assert (got[0].topic, got[0].key, got[0].value) == ("t", None, b"\x00\x01")
    assert got[0].headers == HEADERS and got[0].event_id == "e0"
    assert [r.event_id for r in got[1:]] == [f"ev-{i}" for i in range(1, 50)]
    assert [r.seq for r in spool.peek(5, after=seqs[10])] == seqs[11:16]
    assert spool.peek(5, after=seqs[-1]) == []
    assert len(spool) == 50
    spool.close()


def test_ack_removes_only_the_acked(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "s.db", 1 << 20)
    seqs = spool.append([rec(i) for i in range(10)])
    size = spool.size_bytes
    spool.ack([seqs[0], seqs[5], seqs[5], 10_000])  # duplicates and unknowns are harmless
    assert [r.seq for r in spool.peek(100)] == [s for s in seqs if s not in (seqs[0], seqs[5])]
    assert len(spool) == 8
    assert spool.size_bytes == size * 8 // 10
    spool.ack([])
    spool.ack(seqs)
    assert len(spool) == 0 and spool.size_bytes == 0 and spool.peek(10) == []
    # sequence numbers are never reused, so a late ack cannot hit a newer record
    assert spool.append([rec(99)])[0] > seqs[-1]
    spool.close()


def test_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "s.db"
    spool = Spool(path, 1 << 20)
    seqs = spool.append([rec(i) for i in range(20)])
    spool.ack(seqs[:5])
    size = spool.size_bytes
    spool.close()
    again = Spool(path, 1 << 20)
    assert len(again) == 15 and again.size_bytes == size
    assert [r.event_id for r in again.peek(100)] == [f"ev-{i}" for i in range(5, 20)]
    assert again.append([rec(20)])[0] > seqs[-1]
    again.close()


def _append_then_die(path: str, ready: multiprocessing.synchronize.Event) -> None:
    spool = Spool(Path(path), 1 << 20)
    spool.append([rec(i) for i in range(7)])
    ready.set()
    time.sleep(60)  # killed by the test long before


def test_survives_kill_9_and_releases_the_lock(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(target=_append_then_die, args=(str(path), ready))
    proc.start()
    try:
        assert ready.wait(30)
        with pytest.raises(ConfigError, match="in use by another process"):
            Spool(path, 1 << 20)
    finally:
        os.kill(proc.pid or 0, 9)
        proc.join(10)
    spool = Spool(path, 1 << 20)
    assert [r.event_id for r in spool.peek(100)] == [f"ev-{i}" for i in range(7)]
    spool.close()


def test_bound_refuses_the_whole_batch(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    one = len(b"k") + len(rec(0).value) + len('[["ce_id", "ZXYtMA=="]]')
    spool = Spool(path, one * 10)
    spool.append([rec(i) for i in range(8)])
    assert spool.size_bytes == one * 8
    with pytest.raises(SpoolFullError) as info:
        spool.append([rec(8), rec(9), rec(10)])  # 2 would fit, 3 do not: none is kept
    err = info.value
    assert isinstance(err, DeliveryError) and err.retriable
    assert (
        str(path) in str(err) and "8 events" in str(err) and "DATABUS_SPOOL__MAX_BYTES" in str(err)
    )
    assert len(spool) == 8 and spool.size_bytes == one * 8
    spool.append([rec(8), rec(9)])  # exactly full
    with pytest.raises(SpoolFullError):
        spool.append([rec(10)])
    spool.ack([r.seq for r in spool.peek(1)])
    spool.append([rec(10)])  # room again once acknowledged
    spool.close()
    assert [r.event_id for r in Spool(path, one * 10).peek(100)] == [
        f"ev-{i}" for i in range(1, 11)
    ]


def test_append_is_atomic(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    spool = Spool(path, 1 << 20)
    spool.append([rec(0)])
    bad = SpoolRecord("t", b"k", b"v", [], None)  # type: ignore[arg-type]  # NOT NULL event_id
    with pytest.raises(DeliveryError) as raised:  # the third row fails, after two inserts
        spool.append([rec(1), rec(2), bad])
    assert raised.value.retriable is False
    assert isinstance(raised.value.__cause__, sqlite3.IntegrityError)
    assert [r.event_id for r in spool.peek(10)] == ["ev-0"]
    assert len(spool) == 1
    spool.append([rec(3)])
    spool.close()
    assert [r.event_id for r in Spool(path, 1 << 20).peek(10)] == ["ev-0", "ev-3"]


def test_rejects_a_non_positive_bound(tmp_path: Path) -> None:
    with pytest.raises(ConfigError):
        Spool(tmp_path / "s.db", 0)


def test_append_rate(tmp_path: Path) -> None:
    """Each append is its own fsynced transaction; print the rate for the record."""
    spool = Spool(tmp_path / "s.db", 1 << 30)
    n = 300
    started = time.perf_counter()
    for i in range(n):
        spool.append([rec(i, size=900)])
    single = n / (time.perf_counter() - started)
    started = time.perf_counter()
    for i in range(n // 100):
        spool.append([rec(i, size=900) for _ in range(100)])
    batched = n / (time.perf_counter() - started)
    print(f"spool append: {single:.0f} events/s one by one, {batched:.0f} events/s in 100s")
    assert len(spool) == 2 * n
    spool.close()


def test_spool_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert load_settings().spool.path is None  # default: no spool, behaviour as before
    monkeypatch.setenv("DATABUS_SPOOL__PATH", str(tmp_path / "x.db"))
    monkeypatch.setenv("DATABUS_SPOOL__MAX_BYTES", "1234")
    s = load_settings()
    assert (s.spool.path, s.spool.max_bytes) == (tmp_path / "x.db", 1234)
    monkeypatch.setenv("DATABUS_SPOOL__MAX_BYTES", "0")
    with pytest.raises(ConfigError, match="DATABUS_SPOOL__MAX_BYTES"):
        load_settings()
