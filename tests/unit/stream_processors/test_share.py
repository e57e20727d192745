"""Shared-topic masking: no personal value ever survives, over generated std events."""

from __future__ import annotations

import io
import json
from functools import cache
from typing import Any

import fastavro
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from std_samples import std_events

from bus.errors import ConfigError
from schemas.access_policy import load_policy
from schemas.catalog import DATASETS
from stream_processors.share import (
    HASH_SUFFIX,
    SharePlan,
    keyed_hash,
    mask_event,
    share_plan,
    shared_key,
)

KEY = b"test-pseudonym-key-0123456789"
POLICY = load_policy()
SHARED = sorted(POLICY.shared)
WITH_PERSONAL = [ds for ds in SHARED if DATASETS[ds].personal_fields]


@cache
def plan_of(dataset_id: str) -> SharePlan:
    return share_plan(DATASETS[dataset_id], POLICY.shared[dataset_id].join_keys)


@cache
def samples(dataset_id: str) -> list[dict[str, Any]]:
    return std_events(dataset_id)[:20]


def encode(plan: SharePlan, event: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(json.loads(plan.schema_str)), event)
    return buf.getvalue()


def values(node: Any) -> list[Any]:
    """Every leaf value of a decoded event."""
    if isinstance(node, dict):
        return [v for value in node.values() for v in values(value)]
    if isinstance(node, list):
        return [v for value in node for v in values(value)]
    return [node]


def test_the_packaged_policy_shares_personal_data_only_masked() -> None:
    assert WITH_PERSONAL  # feedback.reports, land.parcels, land.construction_permits
    for ds in SHARED:
        assert DATASETS[ds].classification != "restricted"
        plan = plan_of(ds)
        inner = set(plan.fields)
        assert not inner & set(DATASETS[ds].personal_fields), ds


@pytest.mark.parametrize(
    "dataset_id", sorted(d for d in DATASETS if DATASETS[d].classification == "restricted")
)
def test_a_restricted_dataset_has_no_plan(dataset_id: str) -> None:
    with pytest.raises(ConfigError, match="restricted"):
        share_plan(DATASETS[dataset_id])


def test_join_keys_must_be_personal_string_fields() -> None:
    with pytest.raises(ConfigError, match="not personal"):
        share_plan(DATASETS["feedback.reports"], ("report_id",))


@pytest.mark.parametrize("dataset_id", SHARED)
def test_the_shared_schema_is_a_renamed_std_schema_without_personal_fields(dataset_id: str) -> None:
    plan = plan_of(dataset_id)
    schema = json.loads(plan.schema_str)
    fastavro.parse_schema(schema)
    assert schema["name"].endswith("SharedEvent")
    assert schema["namespace"].endswith(".shared")
    text = plan.schema_str
    for field in DATASETS[dataset_id].personal_fields:
        assert f'"name": "{field}"' not in text
    for field in plan.hashed:
        assert f'"name": "{field}{HASH_SUFFIX}"' in text


@pytest.mark.parametrize("dataset_id", SHARED)
def test_every_simulated_std_event_masks_and_encodes(dataset_id: str) -> None:
    plan = plan_of(dataset_id)
    events = samples(dataset_id)
    assert events
    for event in events:
        shared = mask_event(plan, event, KEY)
        encode(plan, shared)  # fits the shared schema
        assert shared["event_id"] == event["event_id"]
        assert set(shared["after"]) == set(plan.fields)


personal_text = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=6, max_size=40
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    dataset_id=st.sampled_from(WITH_PERSONAL),
    index=st.integers(min_value=0, max_value=19),
    data=st.data(),
)
def test_no_personal_value_survives_masking(
    dataset_id: str, index: int, data: st.DataObject
) -> None:
    plan = plan_of(dataset_id)
    ds = DATASETS[dataset_id]
    events = samples(dataset_id)
    event = dict(events[index % len(events)])
    secret_values = {}
    for image in ("before", "after"):
        record = event.get(image)
        if record is None:
            continue
        record = dict(record)
        for field in ds.personal_fields:
            if field in record:
                value = data.draw(personal_text, label=f"{image}.{field}")
                record[field] = value
                secret_values[f"{image}.{field}"] = value
        event[image] = record
    shared = mask_event(plan, event, KEY)
    leaves = values(shared)
    body = encode(plan, shared)
    for where, value in secret_values.items():
        assert value not in leaves, where
        assert value.encode("utf-8") not in body, where
        image, field = where.split(".")
        assert field not in shared[image]
        if field in plan.hashed:
            assert shared[image][field + HASH_SUFFIX] == keyed_hash(KEY, value)


def test_join_keys_are_stable_and_keyed() -> None:
    assert keyed_hash(KEY, "+84901234567") == keyed_hash(KEY, "+84901234567")
    assert keyed_hash(KEY, "+84901234567") != keyed_hash(b"another-key-0123456789", "+84901234567")
    assert len(keyed_hash(KEY, "x")) == 64


def test_a_null_join_key_stays_null() -> None:
    plan = plan_of("feedback.reports")
    event = dict(samples("feedback.reports")[0])
    event["after"] = {**event["after"], "reporter_phone": None}
    assert mask_event(plan, event, KEY)["after"]["reporter_phone_hash"] is None


def test_the_kafka_key_is_kept_unless_personal() -> None:
    plan = plan_of("feedback.reports")
    assert shared_key(plan, b"R-1", KEY) == b"R-1"
