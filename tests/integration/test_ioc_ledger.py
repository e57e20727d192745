"""The delivery ledger in the IOC store: quality reports in, per-unit rows out, equal
to what ``databus catalog status`` computes from the same reports."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import redis
from redis_db import flushed_redis

from schemas.catalog import DATASETS, QUALITY_TOPIC
from schemas.domain.delivery import build_ledger
from sinks.base import SinkRecord
from sinks.ioc.ledger import QUALITY_KEY, read_ledger
from sinks.ioc.store import IocStoreSink

pytestmark = pytest.mark.integration

TEST_DB = 9


@pytest.fixture
def r(redis_url: str) -> Iterator[redis.Redis]:
    with flushed_redis(redis_url, TEST_DB) as client:
        yield client


def report(dataset: str, unit: str, at: datetime, last_event: datetime) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "unit_code": unit,
        "overall": 0.8,
        "live": True,
        "received": 12,
        "last_event_ts": last_event,
        "last_seen_ts": at,
        "ts_ms": at,
    }


def records(reports: list[dict[str, Any]]) -> list[SinkRecord]:
    return [SinkRecord(QUALITY_TOPIC, 0, i, None, rep) for i, rep in enumerate(reports)]


def test_ledger_rows_equal_the_cli_figures_and_older_reports_never_win(r: redis.Redis) -> None:
    now = datetime.now(UTC)
    fresh = report("health.encounters", "BV1", now, now - timedelta(minutes=5))
    older = report("health.encounters", "BV1", now - timedelta(hours=1), now - timedelta(days=6))
    late = report("health.disease_cases", "BV2", now, now - timedelta(days=3))
    school = report("education.schools", "THPT1", now, now - timedelta(hours=2))
    sink = IocStoreSink(r)
    sink.setup()
    batch = records([fresh, older, late, school])
    assert sink.write(batch) == []
    stored = read_ledger(r)
    expected = build_ledger(DATASETS.values(), [fresh, late, school], now)
    assert len(stored) == len(expected)
    for row, want in zip(stored, expected, strict=True):
        assert (row["unit"], row["delivering"], row["live"], row["late"]) == (
            want.unit,
            want.delivering,
            want.live,
            want.late,
        )
    health = next(row for row in stored if row["unit"] == "DNA.SYT")
    assert (health["assigned"], health["delivering"], health["live"], health["name"]) == (
        3,
        2,
        1,
        "Sở Y tế",
    )
    # The older report of BV1 arrived after the fresh one and was ignored; a replay of
    # the whole batch in any order changes nothing.
    before = r.hgetall(QUALITY_KEY)
    shuffled = list(batch)
    random.Random(3).shuffle(shuffled)
    assert sink.write(shuffled) == []
    assert r.hgetall(QUALITY_KEY) == before
    assert [row["live"] for row in read_ledger(r)] == [row["live"] for row in stored]
