"""A refused record's dead letter without its bytes, and the restore's stall watch."""

from __future__ import annotations

import hashlib

from schemas.dead_letters import (
    ORIGINAL_SHA256_HEADER,
    ORIGINAL_SIZE_HEADER,
    DeadLetter,
    omitted_dlq_headers,
)
from stream_processors.batch_loop import RestoreWatch

LETTER = DeadLetter(
    stage="produce",
    reason="record_too_large",
    exception_class="MSG_SIZE_TOO_LARGE",
    message="too large",
)


def test_a_digest_only_letter_keeps_coordinates_size_digest_and_short_headers() -> None:
    value = b"x" * 2_000_000
    original = [
        ("ce_id", b"e-1"),
        ("ce_source", b"/databus/portal/DNA.STP"),
        ("huge", b"y" * 10_000),  # a hostile header is not carried over
        ("databus.errors.reason", b"stale"),  # an earlier letter's context is replaced
    ]
    headers = omitted_dlq_headers(
        original,
        topic="t.raw.v1",
        partition=3,
        offset=41,
        letter=LETTER,
        size=len(value),
        sha256=hashlib.sha256(value).hexdigest(),
    )
    got = dict(headers)
    assert got["ce_id"] == b"e-1" and got["ce_source"] == b"/databus/portal/DNA.STP"
    assert "huge" not in got
    assert got["__connect.errors.topic"] == b"t.raw.v1"
    assert got["__connect.errors.partition"] == b"3"
    assert got["__connect.errors.offset"] == b"41"
    assert got["databus.errors.reason"] == b"record_too_large"
    assert [v for k, v in headers if k == "databus.errors.reason"] == [b"record_too_large"]
    assert got[ORIGINAL_SIZE_HEADER] == b"2000000"
    assert got[ORIGINAL_SHA256_HEADER] == hashlib.sha256(value).hexdigest().encode()
    assert sum(len(k) + len(v) for k, v in headers) < 2_000


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_restore_fails_only_after_a_stall_however_long_it_runs() -> None:
    clock = Clock()
    watch = RestoreWatch(stall_s=30.0, log_every_s=10.0, clock=clock)
    for _ in range(100):  # 100 minutes of restoring, a record every 20 s: never stalled
        clock.now += 20.0
        assert not watch.stalled()
        watch.progress(1000)
    assert watch.read == 100_000
    assert watch.elapsed() == 2000.0
    clock.now += 30.0
    assert not watch.stalled()
    clock.now += 0.5
    assert watch.stalled()


def test_a_restore_logs_its_progress_every_period() -> None:
    clock = Clock()
    watch = RestoreWatch(stall_s=60.0, log_every_s=10.0, clock=clock)
    due = []
    for _ in range(60):  # 30 s in half-second steps
        clock.now += 0.5
        due.append(watch.log_due())
    assert due.count(True) == 3
    assert due.index(True) == 19  # first at 10 s
