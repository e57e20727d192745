"""Acceptance: every simulated record of every dataset, through the raw Avro round trip.

A defective record is rejected with exactly its ``expect_reason``; a valid one is
standardized into an event that encodes with the dataset's std schema.
"""

from __future__ import annotations

import io
import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any, cast

import fastavro
import pytest
from std_samples import raw_envelope

from producers.simulators import SIMULATORS, SimRecord, SimSpec, generate_dataset
from schemas.catalog import DATASETS, get_dataset, load_schema
from schemas.domain.reference import load_reference
from stream_processors.standardizers import (
    QUALITY_FLAGS,
    REASONS,
    STANDARDIZERS,
    Rejected,
    Standardized,
)

REF = load_reference()
SPEC = SimSpec(
    days=6, per_day=40, seed=11, invalid_share=0.15, end=datetime(2025, 10, 15, 10, tzinfo=UTC)
)
PERSONAL_MARKERS = ("citizen_id", "name", "phone", "birth", "insurance")


@cache
def parsed(path: str) -> Any:
    return fastavro.parse_schema(json.loads(load_schema(path)))


def personal_values(rec: SimRecord) -> list[str]:
    values = rec.record.model_dump(mode="json")
    return [
        str(v)
        for k, v in values.items()
        if v and any(marker in k for marker in PERSONAL_MARKERS) and len(str(v)) >= 6
    ]


def test_every_catalog_dataset_has_a_standardizer() -> None:
    assert set(STANDARDIZERS) == set(DATASETS)
    assert len(STANDARDIZERS) == 17


@pytest.mark.parametrize("dataset_id", sorted(SIMULATORS))
def test_simulated_records_get_exactly_their_reason(dataset_id: str) -> None:
    dataset = get_dataset(dataset_id)
    assert dataset.std_schema is not None
    std_schema = parsed(dataset.std_schema)
    standardize = STANDARDIZERS[dataset_id]
    records = generate_dataset(dataset_id, SPEC, REF)
    outcomes: Counter[str | None] = Counter()
    for rec in records:
        result = standardize(raw_envelope(rec), REF, None)
        if rec.expect_reason is None:
            assert isinstance(result, Standardized), (rec.event_id, result)
            assert set(result.flags) <= QUALITY_FLAGS
            buffer = io.BytesIO()
            fastavro.schemaless_writer(buffer, std_schema, result.event)
            buffer.seek(0)
            back = cast(dict[str, Any], fastavro.schemaless_reader(buffer, std_schema, std_schema))
            assert back["after"] == result.event["after"]
            outcomes[None] += 1
        else:
            assert isinstance(result, Rejected), (rec.event_id, rec.expect_reason)
            assert result.reason == rec.expect_reason, (rec.event_id, result)
            assert result.reason in REASONS
            messages = result.message_en + result.message_vi
            for value in personal_values(rec):
                assert value not in messages
            outcomes[result.reason] += 1
    # The spec makes both kinds appear, so the test cannot pass vacuously.
    assert outcomes[None] > 0
    assert sum(n for reason, n in outcomes.items() if reason is not None) > 0


def test_a_processor_clock_catches_what_the_emit_time_cannot() -> None:
    # A station whose clock runs a week ahead: its own emit time agrees with it.
    rec = next(
        r
        for r in generate_dataset("environment.station_readings", SPEC, REF)
        if r.expect_reason is None
    )
    raw = raw_envelope(rec)
    ahead = rec.at + timedelta(days=7)
    raw["ts_ms"] = ahead
    raw["after"]["reading_time"] = (ahead + timedelta(hours=7)).strftime("%Y%m%d%H%M%S")
    assert isinstance(STANDARDIZERS[rec.dataset_id](raw, REF, None), Standardized)
    late = STANDARDIZERS[rec.dataset_id](raw, REF, rec.at)
    assert isinstance(late, Rejected) and late.reason == "far_future_timestamp"
