"""The std schemas: generated from the rules, catalogued, and valid envelopes."""

from __future__ import annotations

import json

import avro.schema
import fastavro
import fastavro.schema
import pytest

from schemas.catalog import avro_root, get_dataset, load_schema
from schemas.catalog_check import envelope_record
from stream_processors.standardizers import RULES
from stream_processors.standardizers.schema import (
    std_schema_document,
    std_schema_path,
    std_schema_text,
)


@pytest.mark.parametrize("dataset_id", sorted(RULES))
def test_checked_in_std_schema_is_the_generated_one(dataset_id: str) -> None:
    rules = RULES[dataset_id]
    path = std_schema_path(rules)
    assert get_dataset(dataset_id).std_schema == path
    on_disk = avro_root().joinpath(path).read_text(encoding="utf-8")
    if not rules.schema_generated:
        # Written by hand and registered (the dossiers'): its docs are its own, its
        # structure must be what the rules produce.
        assert canonical(json.loads(on_disk)) == canonical(std_schema_document(rules))
        return
    assert on_disk == std_schema_text(rules), (
        "regenerate with: python -m stream_processors.standardizers.schema"
    )


def canonical(document: dict[str, object]) -> str:
    return str(fastavro.schema.to_parsing_canonical_form(fastavro.parse_schema(document)))


@pytest.mark.parametrize("dataset_id", sorted(RULES))
def test_std_schema_is_an_envelope_with_flags(dataset_id: str) -> None:
    text = load_schema(std_schema_path(RULES[dataset_id]))
    document = json.loads(text)
    fastavro.parse_schema(document)
    avro.schema.parse(text)
    record = envelope_record(document)
    fields = {f["name"]: f for f in record["fields"]}
    assert fields["quality_flags"]["type"] == {"type": "array", "items": "string"}
    for name, field in fields.items():
        if "commune_code" in name and not name.endswith("_source"):
            assert f"{name}_source" in fields  # both codes are kept
        if isinstance(field["type"], list):
            assert field["type"][0] == "null" and field["default"] is None
        if isinstance(field["type"], dict) and field["type"].get("logicalType", "").startswith(
            "timestamp"
        ):
            assert field["type"]["logicalType"] == "timestamp-millis"
    # Every personal raw field keeps its PERSONAL mark in the std schema.
    dataset = get_dataset(dataset_id)
    for name in dataset.personal_fields:
        assert str(fields[name].get("doc", "")).startswith("PERSONAL."), name
