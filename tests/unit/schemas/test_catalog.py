"""The catalog file: loading, the Dataset API other code relies on, and shape errors."""

from __future__ import annotations

import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from bus.errors import ConfigError
from schemas.catalog import (
    CATALOG_FILE,
    DATASETS,
    DOSSIERS,
    UpdateObligation,
    get_dataset,
    load_catalog,
    load_schema,
    read_catalog,
    schema_revisions,
)
from schemas.catalog_check import validate_catalog
from schemas.models.public_service import Dossier, DossierStep

ROOT = Path(__file__).resolve().parents[3]

ENTRY = """
[[dataset]]
id = "publicservice.dossiers"
sector = "public_service"
owner_unit = "DNA.VPUB"
source_system = "dvc-portal"
description_vi = "Hồ sơ"
description_en = "Dossiers"
schema = "publicservice/dossiers.raw.v1.avsc"
model = "schemas.models.public_service:Dossier"
key = ["dossier_id"]
personal_fields = ["applicant_name"]
classification = "restricted"
update = { kind = "daily", by_local_time = "17:00" }
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "catalog.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_packaged_catalog_loads_and_is_valid() -> None:
    assert load_catalog() == DATASETS
    assert {"publicservice.dossiers", "publicservice.dossier_steps"} <= set(DATASETS)
    assert validate_catalog(read_catalog()) == []


def test_dossiers_keeps_the_api_other_code_uses() -> None:
    assert DOSSIERS is get_dataset("publicservice.dossiers")
    assert DOSSIERS.model is Dossier
    assert DOSSIERS.key_field == "dossier_id"
    assert DOSSIERS.key_fields == ("dossier_id",)
    assert DOSSIERS.raw_topic == "publicservice.dossiers.raw.v1"
    assert DOSSIERS.std_topic == "publicservice.dossiers.std.v1"
    assert DOSSIERS.shared_topic == "publicservice.dossiers.shared.v1"
    assert DOSSIERS.dlq_topic == "publicservice.dossiers.dlq.v1"
    assert DOSSIERS.std_value_schema == DOSSIERS.std_schema == "publicservice/dossiers.std.v1.avsc"
    assert "applicant_citizen_id" in DOSSIERS.personal_fields
    assert DOSSIERS.classification == "restricted"
    assert DOSSIERS.update == UpdateObligation("realtime", within_minutes=15)
    assert DOSSIERS.description_vi and DOSSIERS.description_en
    assert load_schema(DOSSIERS.raw_schema).lstrip().startswith("{")


def test_dossier_steps_has_its_own_std_schema() -> None:
    steps = get_dataset("publicservice.dossier_steps")
    assert steps.model is DossierStep
    assert steps.std_value_schema == steps.std_schema == "publicservice/dossier_steps.std.v1.avsc"
    # Without a std schema the std topic carries the raw schema.
    assert replace(steps, std_schema=None).std_value_schema == steps.raw_schema
    # Officer staff codes are not citizen personal data; the dataset is internal.
    assert steps.personal_fields == ()
    assert steps.classification == "internal"


def test_unknown_dataset_names_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"publicservice\.dossiers"):
        get_dataset("nope.nope")


def test_composite_key(tmp_path: Path) -> None:
    text = ENTRY.replace('key = ["dossier_id"]', 'key = ["dossier_id", "dossier_code"]')
    dataset = load_catalog(write(tmp_path, text))["publicservice.dossiers"]
    assert dataset.key_fields == ("dossier_id", "dossier_code")
    assert dataset.key_field == "dossier_id"
    assert dataset.key_of({"dossier_id": "D1", "dossier_code": 7}) == "D1|7"
    assert dataset.update.describe() == "daily by 17:00 (Asia/Ho_Chi_Minh)"
    assert dataset.major == 1 and dataset.std_schema is None


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (('sector = "public_service"\n', ""), "sector"),
        (('key = ["dossier_id"]', 'key = "dossier_id"'), "key"),
        (('key = ["dossier_id"]', "key = []"), "key"),
        (('personal_fields = ["applicant_name"]', "personal_fields = [1]"), "personal_fields"),
        (('classification = "restricted"', "classification = 3"), "classification"),
        (('classification = "restricted"', 'classification = "x"\ncolour = "red"'), "colour"),
        (('update = { kind = "daily", by_local_time = "17:00" }', ""), "update"),
        (('kind = "daily"', 'kind = "daily", hours = 3'), "update"),
        (('by_local_time = "17:00"', "by_local_time = 1700"), "update.by_local_time"),
        (("update = {", 'major = "1"\nupdate = {'), "major"),
    ],
)
def test_shape_errors_name_file_dataset_and_field(
    tmp_path: Path, change: tuple[str, str], field: str
) -> None:
    old, new = change
    assert old in ENTRY
    path = write(tmp_path, ENTRY.replace(old, new))
    with pytest.raises(ConfigError) as caught:
        load_catalog(path)
    message = str(caught.value)
    assert str(path) in message
    assert "publicservice.dossiers" in message
    assert repr(field) in message


def test_a_dataset_without_id_is_named_by_position(tmp_path: Path) -> None:
    path = write(tmp_path, ENTRY + ENTRY.replace('id = "publicservice.dossiers"\n', ""))
    with pytest.raises(ConfigError, match=r"dataset #2: field 'id'"):
        load_catalog(path)


def test_duplicate_ids_are_refused_by_the_loader_and_kept_by_read(tmp_path: Path) -> None:
    path = write(tmp_path, ENTRY + ENTRY)
    with pytest.raises(ConfigError, match="appears twice"):
        load_catalog(path)
    assert len(read_catalog(path)) == 2


def test_bad_toml_and_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_catalog(write(tmp_path, "[[dataset]\n"))
    with pytest.raises(ConfigError, match="cannot read"):
        load_catalog(tmp_path / "absent.toml")
    with pytest.raises(ConfigError, match="unknown top-level"):
        load_catalog(write(tmp_path, 'title = "x"\n'))


def test_the_catalog_file_is_packaged() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "catalog.toml" in pyproject["tool"]["setuptools"]["package-data"]["schemas"]
    assert CATALOG_FILE.is_file()


def test_schema_revisions_lists_history_oldest_first() -> None:
    assert schema_revisions(DOSSIERS.raw_schema) == [
        "publicservice/history/dossiers.raw.v1.1.avsc",
        "publicservice/dossiers.raw.v1.avsc",
    ]
    assert schema_revisions("publicservice/dossier_steps.raw.v1.avsc") == [
        "publicservice/dossier_steps.raw.v1.avsc"
    ]


def test_the_shipped_catalog_is_valid_and_covers_every_sector() -> None:
    datasets = read_catalog(CATALOG_FILE)
    assert [str(p) for p in validate_catalog(datasets)] == []
    sectors = {d.id.split(".")[0] for d in datasets}
    assert sectors >= {
        "publicservice",
        "education",
        "health",
        "documents",
        "feedback",
        "environment",
        "transport",
        "land",
    }


def test_every_owner_unit_is_a_known_unit() -> None:
    from schemas.domain.reference import load_reference

    units = load_reference().receiving_units
    assert {d.owner_unit for d in read_catalog(CATALOG_FILE)} <= set(units)
