"""Merging small stored record batches into one: the same records at the same offsets,
nothing merged that cannot be, and runs only of small, consecutive, older batches."""

from __future__ import annotations

from aiokafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from databus.standins.object_store import BatchFile, merge_batches, plan_merges


def _batch(base: int, n: int, *, producer: int = 7, compression: int = 0) -> tuple[int, bytes]:
    """A batch as the broker stores it: its offset in the key, 0 in the header."""
    builder = DefaultRecordBatchBuilder(
        magic=2,
        compression_type=compression,
        is_transactional=0,
        producer_id=producer,
        producer_epoch=0,
        base_sequence=base,
        batch_size=2**20,
    )
    for i in range(n):
        value = b"v%d" % (base + i) * (40 if compression else 1)
        key = None if i % 3 == 0 else b"k%d" % i
        builder.append(i, 1_760_000_000_000 + (base + i) * 10, key, value, [("h", b"%d" % i)])
    return base, bytes(builder.build())


def _records(
    offset: int, blob: bytes
) -> list[tuple[int, int, bytes | None, bytes | None, list[object]]]:
    """The records with their offsets as a reader gets them (from the key's offset)."""
    batch = DefaultRecordBatch(blob)
    assert batch.validate_crc()
    return [(offset + r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in batch]


def test_merged_batches_hold_the_same_records_at_the_same_offsets() -> None:
    blobs = [_batch(100, 5), _batch(105, 1, producer=9), _batch(106, 30)]
    merged = merge_batches(blobs)
    assert merged is not None
    expected = [r for b in blobs for r in _records(*b)]
    assert _records(100, merged) == expected
    batch = DefaultRecordBatch(merged)
    assert batch.base_offset == 0 and batch.next_offset == 36  # as stored: 0 in the header
    assert batch.max_timestamp == max(r[1] for r in expected)


def test_what_cannot_be_merged_is_left_as_it_is() -> None:
    assert merge_batches([_batch(0, 5), _batch(6, 5)]) is None  # a gap in the offsets
    assert merge_batches([_batch(0, 5), _batch(5, 5, compression=1)]) is None  # gzip
    assert merge_batches([(0, _batch(0, 5)[1] + _batch(5, 5)[1])]) is None  # two in a file
    corrupt = bytearray(_batch(0, 5)[1])
    corrupt[-1] ^= 0xFF
    assert merge_batches([(0, bytes(corrupt))]) is None
    assert merge_batches([(0, b"short")]) is None


def _files(sizes: list[int], start: int = 0, per: int = 10, name: str = "k") -> list[BatchFile]:
    return [
        BatchFile("t", 0, start + i * per, start + i * per + per - 1, 0, size, f"{name}{i}")
        for i, size in enumerate(sizes)
    ]


def test_runs_are_small_consecutive_older_batches_up_to_the_target() -> None:
    small, big = 100_000, 900_000
    files = _files([small] * 12 + [big] + [small] * 3 + [small] * 8)  # 8 newest kept
    limits = {"small": 512 * 1024, "target": 1024 * 1024}
    runs = plan_merges({("t", 0): files}, doomed=set(), **limits)
    assert [[b.key for b in run] for run in runs] == [
        [f"k{i}" for i in range(0, 10)],  # ~1 MB
        ["k10", "k11"],
        ["k13", "k14", "k15"],
    ]
    # a doomed batch, a gap, and a partition with only its newest batches
    gap = _files([small] * 4) + _files([small] * 12, start=1000, name="g")
    runs = plan_merges({("t", 0): gap, ("t", 1): _files([small] * 8)}, doomed={"k1"}, **limits)
    assert [[b.key for b in run] for run in runs] == [["k2", "k3"], ["g0", "g1", "g2", "g3"]]
