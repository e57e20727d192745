"""The compiled standardizers give exactly what the interpreted engine gives.

``STANDARDIZERS`` run each declaration compiled (``standardizers.compiled``); the
interpreted engine (``build_standardizer(..., interpreted=True)``) is the reference.
Compared: the std event (values and field order of each image), the quality flags in
order, and each rejection's reason, field and messages — over simulated records of
every dataset (invalid ones included), the dossier simulator's history, and hostile
images and envelopes.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone
from functools import cache
from typing import Any

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
from schemas.catalog import DATASETS as CATALOG
from schemas.catalog import DOSSIERS
from schemas.domain.reference import load_reference
from stream_processors.standardizers import (
    RULES,
    STANDARDIZERS,
    Rejected,
    Standardized,
    Standardizer,
    build_standardizer,
)
from stream_processors.standardizers.compiled import compile_rules

REF = load_reference()
DATASETS = sorted(RULES)
SPEC = SimSpec(
    days=2, per_day=15, seed=23, invalid_share=0.3, end=datetime(2025, 10, 15, tzinfo=UTC)
)


@cache
def interpreted(dataset_id: str) -> Standardizer:
    built = build_standardizer(CATALOG[dataset_id], interpreted=True)
    assert built is not None
    return built


def outcome(standardizer: Standardizer, raw: Any, now: datetime | None) -> Any:
    try:
        result = standardizer(raw, REF, now)
    except Exception as exc:  # compared, not hidden: both sides must agree
        return ("raised", type(exc).__name__, str(exc))
    if isinstance(result, Rejected):
        return result
    assert isinstance(result, Standardized)
    event = result.event
    images = tuple(
        None if event[side] is None else list(event[side].items()) for side in ("before", "after")
    )
    return (list(event.items()), images, result.flags)


def assert_same(dataset_id: str, raw: Any, now: datetime | None = None) -> None:
    expected = outcome(interpreted(dataset_id), raw, now)
    assert outcome(STANDARDIZERS[dataset_id], raw, now) == expected


def envelope(dataset_id: str, rec: SimRecord, after: Any, before: Any = None) -> dict[str, Any]:
    return {
        "event_id": rec.event_id,
        "op": "u" if before is not None else "c",
        "ts_ms": rec.at + timedelta(seconds=1),
        "source": {
            "system": "s",
            "unit": "u",
            "dataset": dataset_id,
            "ts_ms": rec.at,
            "version": rec.version,
        },
        "before": before,
        "after": after,
    }


@cache
def records(dataset_id: str) -> tuple[tuple[SimRecord, dict[str, Any]], ...]:
    if dataset_id == DOSSIERS.id:
        config = DossierSpec(days=3, seed=5, end=SPEC.end)
        recs = [
            SimRecord(dataset_id, e.dossier, e.version, e.op, e.at, e.event_id)
            for e in generate_dossiers(config, REF)
        ]
    else:
        recs = generate_dataset(dataset_id, SPEC, REF)
    return tuple((rec, rec.record.model_dump(mode="python")) for rec in recs)


def test_every_declaration_compiles() -> None:
    for rules in RULES.values():
        assert "def image(" in compile_rules(rules).image.__std_source__  # type: ignore[attr-defined]


@pytest.mark.parametrize("dataset_id", DATASETS)
def test_simulated_records_agree(dataset_id: str) -> None:
    recs = records(dataset_id)
    assert recs
    for rec, record in recs:
        assert_same(dataset_id, envelope(dataset_id, rec, record))
        assert_same(dataset_id, envelope(dataset_id, rec, record, before=record))
        assert_same(dataset_id, envelope(dataset_id, rec, record), now=rec.at)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(
        [
            "",
            "  ",
            "75001",
            "26734",
            "99999",
            "DNA.SYT",
            "0168 123 4567",
            "20251014093000",
            "14/10/2025",
            "2025-10-14",
            "2025-10-14T09:30:00",
            "2099-01-01T00:00:00+07:00",
            "1899-12-31",
            "NGUYỄN VĂN A",
            "nguyễn văn a",
            "MALE",
            "COMPLETED",
            "ONLINE",
        ]
    ),
    st.dates(),
    st.dates(min_value=date(2024, 1, 1), max_value=date(2026, 1, 1)),
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=7))])),
    st.datetimes(),
    st.binary(max_size=8),
)
values = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)
PROPERTY_SETTINGS = settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)


def mangle(data: st.DataObject, record: dict[str, Any]) -> dict[str, Any]:
    mangled = dict(record)
    names = sorted(record)
    for name in data.draw(st.lists(st.sampled_from(names), max_size=len(names), unique=True)):
        if data.draw(st.booleans()):
            mangled[name] = data.draw(values)
        else:
            del mangled[name]
    return mangled


@pytest.mark.parametrize("dataset_id", DATASETS)
@PROPERTY_SETTINGS
@given(data=st.data())
def test_hostile_images_agree(dataset_id: str, data: st.DataObject) -> None:
    recs = records(dataset_id)
    rec, record = recs[data.draw(st.integers(0, len(recs) - 1))]
    after = mangle(data, record)
    before = mangle(data, record) if data.draw(st.booleans()) else None
    now = data.draw(st.one_of(st.none(), st.just(rec.at), st.datetimes(timezones=st.just(UTC))))
    assert_same(dataset_id, envelope(dataset_id, rec, after, before), now)


@pytest.mark.parametrize("dataset_id", DATASETS)
@settings(max_examples=30, deadline=None)
@given(
    raw=st.one_of(
        values,
        st.dictionaries(
            st.sampled_from(["event_id", "op", "ts_ms", "source", "before", "after"]), values
        ),
    )
)
def test_hostile_envelopes_agree(dataset_id: str, raw: Any) -> None:
    assert_same(dataset_id, raw)
