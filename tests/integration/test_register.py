"""`register_catalog` against the session's real schema registry."""

from __future__ import annotations

import json
import shutil
import uuid
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka.schema_registry import SchemaRegistryClient
from registry_clients import registry_client

from bus.errors import IncompatibleSchemaError
from schemas.catalog import ALERTS_TOPIC, DATASETS, DOSSIERS, Dataset, get_dataset
from schemas.catalog_check import envelope_record
from schemas.register import catalog_subjects, register_catalog

pytestmark = pytest.mark.integration


def fresh(dataset: Dataset, tag: str) -> Dataset:
    """The dataset under an id no other test uses, so its subjects start empty."""
    domain, name = dataset.id.split(".")
    return replace(dataset, id=f"{domain}_{tag}.{name}")


@pytest.fixture
def client(registry_url: str) -> SchemaRegistryClient:
    return registry_client({"url": registry_url})


def test_registers_history_then_current_and_is_idempotent(client: SchemaRegistryClient) -> None:
    tag = uuid.uuid4().hex[:8]
    dossiers = fresh(DOSSIERS, tag)
    # Without a std schema (as before a standardizer exists) the std subject holds raw.
    steps = replace(fresh(get_dataset("publicservice.dossier_steps"), tag), std_schema=None)
    seen: list[tuple[str, str, int, int]] = []
    first = register_catalog(client, [dossiers, steps], on_progress=lambda *a: seen.append(a))

    raw, std = f"{dossiers.raw_topic}-value", f"{dossiers.std_topic}-value"
    by_subject: dict[str, list[tuple[int, int]]] = {}
    for subject, version, schema_id in first:
        by_subject.setdefault(subject, []).append((version, schema_id))
    assert [v for v, _ in by_subject[raw]] == [1, 2]  # history revision, then current
    assert client.get_versions(raw) == [1, 2]
    assert [v for v, _ in by_subject[std]] == [1]
    assert f"{ALERTS_TOPIC}-value" in by_subject
    latest = client.get_latest_version(raw)
    assert "applicant_sex" in (latest.schema.schema_str or "")
    assert [s[1] for s in seen if s[0] == raw] == [
        "publicservice/history/dossiers.raw.v1.1.avsc",
        "publicservice/dossiers.raw.v1.avsc",
    ]
    # No std schema yet: the std subject holds the raw schema.
    steps_std = client.get_latest_version(f"{steps.std_topic}-value")
    steps_raw = client.get_latest_version(f"{steps.raw_topic}-value")
    assert steps_std.schema_id == steps_raw.schema_id

    second = register_catalog(client, [dossiers, steps])
    assert second == first
    assert client.get_versions(raw) == [1, 2]


def test_the_packaged_catalog_registers(client: SchemaRegistryClient) -> None:
    results = register_catalog(client, DATASETS)
    subjects = {subject for subject, _, _ in results}
    assert subjects == {subject for subject, _ in catalog_subjects(DATASETS)}
    assert register_catalog(client, DATASETS) == results


def test_an_incompatible_schema_names_the_subject(
    client: SchemaRegistryClient, tmp_path: Path
) -> None:
    dossiers = fresh(DOSSIERS, uuid.uuid4().hex[:8])
    register_catalog(client, [dossiers])

    packaged = resources.files("schemas").joinpath("avro")
    with resources.as_file(packaged) as folder:
        shutil.copytree(folder, tmp_path / "avro")
    path = tmp_path / "avro" / DOSSIERS.raw_schema
    document: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    # A new required field with no default: the registry cannot read older data with it.
    envelope_record(document)["fields"].append({"name": "priority", "type": "int"})
    path.write_text(json.dumps(document), encoding="utf-8")

    subject = f"{dossiers.raw_topic}-value"
    with pytest.raises(IncompatibleSchemaError, match=subject):
        register_catalog(client, [dossiers], root=tmp_path / "avro")
    assert client.get_versions(subject) == [1, 2]
