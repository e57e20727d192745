"""Property: whatever a source sends, a standardizer returns Standardized or Rejected.

Each example starts from a valid simulated record of the dataset and replaces, deletes or
adds fields with arbitrary values (wrong types included), or mangles the envelope. A
Standardized result must also encode with the dataset's std schema.
"""

from __future__ import annotations

import io
import json
from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from producers.simulators import (
    DossierSpec,
    SimRecord,
    SimSpec,
    generate_dataset,
    generate_dossiers,
)
from schemas.catalog import DOSSIERS, get_dataset, load_schema
from schemas.domain.reference import load_reference
from stream_processors.standardizers import RULES, STANDARDIZERS, Rejected, Standardized

REF = load_reference()
SPEC = SimSpec(
    days=2, per_day=10, seed=5, invalid_share=0.0, end=datetime(2025, 10, 15, tzinfo=UTC)
)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", "  ", "75001", "99999", "DNA.SYT", "0168 123 4567", "20251014093000"]),
    st.dates(),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=7))])),
    st.datetimes(),
    st.binary(max_size=8),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)


@cache
def valid_record(dataset_id: str) -> tuple[SimRecord, dict[str, Any]]:
    if dataset_id == DOSSIERS.id:  # valid dossiers only: no defective or messy ones
        config = DossierSpec(days=2, bad_share=0.0, messy_share=0.0, seed=5, end=SPEC.end)
        event = generate_dossiers(config, REF)[0]
        rec = SimRecord(
            dataset_id, event.dossier, event.version, event.op, event.at, event.event_id
        )
    else:
        rec = generate_dataset(dataset_id, SPEC, REF)[0]
    return rec, rec.record.model_dump(mode="python")


def envelope(dataset_id: str, after: Any, at: datetime) -> dict[str, Any]:
    return {
        "event_id": "5b0f4a52-8d2c-4c55-9a4e-3f1f3a1d2c01",
        "op": "c",
        "ts_ms": at,
        "source": {"system": "s", "unit": "u", "dataset": dataset_id, "ts_ms": at, "version": 1},
        "before": None,
        "after": after,
    }


@cache
def std_schema(dataset_id: str) -> Any:
    path = get_dataset(dataset_id).std_schema
    assert path is not None
    return fastavro.parse_schema(json.loads(load_schema(path)))


def check(dataset_id: str, raw: Any) -> None:
    result = STANDARDIZERS[dataset_id](raw, REF, None)
    assert isinstance(result, Standardized | Rejected)
    if isinstance(result, Standardized):
        fastavro.schemaless_writer(io.BytesIO(), std_schema(dataset_id), result.event)


DATASETS = sorted(RULES)
PROPERTY_SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


@pytest.mark.parametrize("dataset_id", DATASETS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_garbage_in_fields_never_raises(dataset_id: str, data: st.DataObject) -> None:
    rec, record = valid_record(dataset_id)
    mangled = dict(record)
    names = sorted(record)
    for name in data.draw(st.lists(st.sampled_from(names), max_size=len(names), unique=True)):
        if data.draw(st.booleans()):
            mangled[name] = data.draw(values)
        else:
            del mangled[name]
    extra = data.draw(st.dictionaries(st.text(max_size=8), values, max_size=2))
    mangled.update({k: v for k, v in extra.items() if k not in record})
    check(dataset_id, envelope(dataset_id, mangled, rec.at))


@pytest.mark.parametrize("dataset_id", DATASETS)
@PROPERTY_SETTINGS
@given(
    raw=st.one_of(
        values,
        st.dictionaries(
            st.sampled_from(["event_id", "op", "ts_ms", "source", "before", "after"]), values
        ),
    )
)
def test_garbage_envelopes_never_raise(dataset_id: str, raw: Any) -> None:
    check(dataset_id, raw)


@pytest.mark.parametrize("dataset_id", DATASETS)
@settings(max_examples=20, deadline=None)
@given(
    op=st.sampled_from(["c", "u", "d", "r", "x"]),
    at=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    when=st.one_of(st.none(), st.datetimes(timezones=st.just(UTC))),
)
def test_any_envelope_time_and_op_never_raises(
    dataset_id: str, op: str, at: datetime, when: datetime | None
) -> None:
    _, record = valid_record(dataset_id)
    raw = envelope(dataset_id, record, at)
    raw["op"] = op
    if op == "d":
        raw["before"], raw["after"] = record, None
    result = STANDARDIZERS[dataset_id](raw, REF, when)
    assert isinstance(result, Standardized | Rejected)
    if isinstance(result, Standardized):
        fastavro.schemaless_writer(io.BytesIO(), std_schema(dataset_id), result.event)


def test_dates_of_any_kind_in_a_date_field() -> None:
    rec, record = valid_record("land.parcels")
    for value in (date.min, date.max, "31/02/2024", "2024-02-30", 45000):
        result = STANDARDIZERS["land.parcels"](
            envelope("land.parcels", {**record, "valid_from": value}, rec.at), REF, None
        )
        assert isinstance(result, Rejected | Standardized)
