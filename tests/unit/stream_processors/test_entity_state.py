"""classify(): what an incoming change is, given the entity's newest accepted change."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from producers.simulators import DossierSpec, generate_dossiers
from schemas.catalog import DATASETS, DOSSIERS, load_schema
from schemas.codec import frame
from schemas.domain.reference import load_reference
from stream_processors.entity_state import Entity, Verdict, classify, content_digest

RAW = {
    "event_id": "e1",
    "op": "u",
    "ts_ms": datetime(2026, 1, 5, 1, 0, tzinfo=UTC),
    "source": {
        "system": "s",
        "unit": "U",
        "dataset": "d",
        "ts_ms": datetime(2026, 1, 5, tzinfo=UTC),
        "version": 3,
    },
    "before": None,
    "after": {"id": "A", "status": "OPEN", "at": datetime(2026, 1, 5, tzinfo=UTC)},
}
PREV = Entity(version=3, event_id="e1", digest="d0", offset=40)


def verdict(event_id: str, version: int, digest: str, offset: int) -> Verdict:
    return classify(PREV, event_id=event_id, version=version, digest=digest, offset=offset)


def test_first_change_of_an_entity_is_new() -> None:
    assert classify(None, event_id="x", version=1, digest="d", offset=0) is Verdict.NEW


def test_newer_version_is_new() -> None:
    assert verdict("e2", 4, "other", 41) is Verdict.NEW


@pytest.mark.parametrize(
    ("event_id", "version", "same_content", "expected"),
    [
        ("e1", 3, True, Verdict.DUPLICATE),  # a producer retry: same id, same content
        ("e1", 3, False, Verdict.CONFLICT),  # same id, different content
        ("e9", 3, True, Verdict.DUPLICATE),  # a resubmitted file: new id, same version+content
        ("e9", 3, False, Verdict.CONFLICT),  # two different changes claim version 3
        ("e0", 2, False, Verdict.STALE),  # an older version arriving late
        ("e1", 4, True, Verdict.DUPLICATE),  # the same id again, whatever it claims
    ],
)
def test_repeats_and_contradictions(
    event_id: str, version: int, same_content: bool, expected: Verdict
) -> None:
    digest = PREV.digest if same_content else "different"
    assert verdict(event_id, version, digest, 99) is expected


def test_the_same_record_read_again_after_a_crash_is_a_redelivery() -> None:
    assert verdict("e1", 3, PREV.digest, 40) is Verdict.REDELIVERY


def _framed(raw: dict[str, Any]) -> bytes:
    schema = fastavro.parse_schema(json.loads(load_schema(DOSSIERS.raw_schema)))
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema, raw)
    return frame(7, body.getvalue())


def test_digest_ignores_transport_fields_but_not_content() -> None:
    event = generate_dossiers(DossierSpec(days=3, units=1, seed=2), load_reference())[0]
    raw: dict[str, Any] = {
        "event_id": "0b0e0a1c-2d3e-4f50-8a6b-7c8d9e0f1a2b",
        "op": "c",
        "ts_ms": datetime(2026, 1, 5, 1, 0, tzinfo=UTC),
        "source": {
            "system": "s",
            "unit": "U",
            "dataset": DOSSIERS.id,
            "ts_ms": datetime(2026, 1, 5, tzinfo=UTC),
            "version": 3,
        },
        "before": None,
        "after": event.dossier.model_dump(mode="json"),
    }
    resent = {
        **raw,
        "event_id": "1b0e0a1c-2d3e-4f50-8a6b-7c8d9e0f1a2c",
        "ts_ms": datetime(2026, 2, 1, 3, 4, 5, tzinfo=UTC),
    }
    assert content_digest(_framed(resent)) == content_digest(_framed(raw))
    changed = {**raw, "after": {**raw["after"], "status": "COMPLETED"}}
    assert content_digest(_framed(changed)) != content_digest(_framed(raw))
    newer = {**raw, "source": {**raw["source"], "version": 4}}
    assert content_digest(_framed(newer)) != content_digest(_framed(raw))


def test_every_raw_envelope_starts_with_the_fields_the_digest_skips() -> None:
    for ds in DATASETS.values():
        fields = json.loads(load_schema(ds.raw_schema))["fields"]
        assert [f["name"] for f in fields[:3]] == ["event_id", "op", "ts_ms"], ds.id


def test_entity_round_trips_through_its_changelog_form() -> None:
    entity = Entity(7, "e7", "abc", 12, [("g", "k", {"n": 1})], [("g", "k", {"n": 0})])
    assert Entity.from_json(entity.to_json()) == entity
