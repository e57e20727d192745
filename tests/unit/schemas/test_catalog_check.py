"""`validate_catalog`: one broken catalog per kind of problem, each reported once."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from schemas.catalog import DOSSIERS, Dataset, UpdateObligation, read_catalog
from schemas.catalog_check import Problem, envelope_record, validate_catalog

RAW = DOSSIERS.raw_schema


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A copy of the packaged schemas, free to break."""
    packaged = resources.files("schemas").joinpath("avro")
    with resources.as_file(packaged) as folder:
        shutil.copytree(folder, tmp_path / "avro")
    return tmp_path / "avro"


def edit_schema(root: Path, path: str, change: Any) -> None:
    file = root / path
    document = json.loads(file.read_text(encoding="utf-8"))
    change(document)
    file.write_text(json.dumps(document), encoding="utf-8")


def inner_fields(document: dict[str, Any]) -> list[dict[str, Any]]:
    fields: list[dict[str, Any]] = envelope_record(document)["fields"]
    return fields


def fields_of(problems: list[Problem]) -> list[str]:
    return [p.field for p in problems]


def test_the_packaged_catalog_has_no_problem() -> None:
    assert validate_catalog(read_catalog()) == []


def test_a_copy_of_the_schemas_has_no_problem(root: Path) -> None:
    assert validate_catalog([DOSSIERS], root=root) == []


BROKEN: dict[str, tuple[dict[str, Any], str]] = {
    "id not <domain>.<dataset>": ({"id": "dossiers"}, "id"),
    "id with capitals": ({"id": "PublicService.dossiers"}, "id"),
    "id with a dash": ({"id": "public-service.dossiers"}, "id"),
    "empty sector": ({"sector": " "}, "sector"),
    "empty owner unit": ({"owner_unit": ""}, "owner_unit"),
    "no Vietnamese description": ({"description_vi": ""}, "description_vi"),
    "no English description": ({"description_en": "  "}, "description_en"),
    "unknown classification": ({"classification": "secret"}, "classification"),
    "realtime without minutes": ({"update": UpdateObligation("realtime")}, "update"),
    "realtime with zero minutes": ({"update": UpdateObligation("realtime", 0)}, "update"),
    "daily at 25:00": ({"update": UpdateObligation("daily", by_local_time="25:00")}, "update"),
    "daily with minutes": (
        {"update": UpdateObligation("daily", 5, by_local_time="17:00")},
        "update",
    ),
    "weekly": ({"update": UpdateObligation("weekly", by_local_time="17:00")}, "update"),  # type: ignore[arg-type]
    "missing schema file": ({"raw_schema": "publicservice/nope.avsc"}, "schema"),
    "missing std schema file": ({"std_schema": "publicservice/nope.avsc"}, "std_schema"),
    "key not in the record": ({"key_fields": ("dossier_no",)}, "key"),
    "key listed twice": ({"key_fields": ("dossier_id", "dossier_id")}, "key"),
    "personal field not in the record": (
        {"personal_fields": ("applicant_phone",)},
        "personal_fields",
    ),
    "model not importable": ({"model_ref": "schemas.models.public_service:Nope"}, "model"),
    "model module missing": ({"model_ref": "schemas.nope:Dossier"}, "model"),
    "model not pydantic": ({"model_ref": "schemas.catalog:Dataset"}, "model"),
    "model without colon": ({"model_ref": "schemas.models.public_service.Dossier"}, "model"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_one_problem_per_kind(case: str) -> None:
    # An invalid id is one problem: the topic names it would give are not reported too.
    changes, field = BROKEN[case]
    problems = validate_catalog([replace(DOSSIERS, **changes)])
    assert fields_of(problems) == [field], problems
    assert problems[0].dataset_id == changes.get("id", DOSSIERS.id)


def test_major_zero_breaks_major_and_every_topic() -> None:
    problems = validate_catalog([replace(DOSSIERS, major=0)])
    assert fields_of(problems) == ["topic"] * 4 + ["major"]
    assert "publicservice.dossiers.raw.v0" in str(problems[0])


def test_duplicate_ids() -> None:
    problems = validate_catalog([DOSSIERS, DOSSIERS])
    assert fields_of(problems) == ["id"]
    assert "appears 2 times" in problems[0].message


def test_mapping_key_must_be_the_id() -> None:
    problems = validate_catalog({"publicservice.other": DOSSIERS})
    assert fields_of(problems) == ["id"]


def _drop_after(document: dict[str, Any]) -> None:
    document["fields"] = [f for f in document["fields"] if f["name"] != "after"]


def _source_without_version(document: dict[str, Any]) -> None:
    source = next(f for f in document["fields"] if f["name"] == "source")
    source["type"]["fields"] = [f for f in source["type"]["fields"] if f["name"] != "version"]


def _after_other_record(document: dict[str, Any]) -> None:
    after = next(f for f in document["fields"] if f["name"] == "after")
    after["type"] = ["null", {"type": "record", "name": "Other", "fields": []}]


def _bad_type(document: dict[str, Any]) -> None:
    inner_fields(document)[0]["type"] = "strin"


def _bad_default(document: dict[str, Any]) -> None:
    inner_fields(document)[-1]["default"] = 3


def _not_a_record(document: dict[str, Any]) -> None:
    document.clear()
    document.update({"type": "string"})


SCHEMA_BREAKS = {
    "no after": (_drop_after, "no field(s) after"),
    "source without version": (_source_without_version, "'source' has no version"),
    "after is another record": (_after_other_record, "'after' must be"),
    "unknown type": (_bad_type, "does not parse"),
    "default of the wrong type": (_bad_default, "does not parse"),
    "not a record": (_not_a_record, "not a record"),
}


@pytest.mark.parametrize("case", SCHEMA_BREAKS, ids=list(SCHEMA_BREAKS))
def test_a_broken_raw_schema(root: Path, case: str) -> None:
    change, message = SCHEMA_BREAKS[case]
    edit_schema(root, RAW, change)
    problems = validate_catalog([DOSSIERS], root=root)
    assert fields_of(problems) == ["schema"], problems
    assert message in problems[0].message
    assert RAW in problems[0].message


def test_a_broken_std_schema(root: Path) -> None:
    assert DOSSIERS.std_schema is not None
    edit_schema(root, DOSSIERS.std_schema, _drop_after)
    assert fields_of(validate_catalog([DOSSIERS], root=root)) == ["std_schema"]


def test_an_incompatible_history_is_a_schema_problem(root: Path) -> None:
    def birth_date_required(document: dict[str, Any]) -> None:
        field = next(f for f in inner_fields(document) if f["name"] == "applicant_birth_date")
        field["type"] = "string"
        del field["default"]

    edit_schema(root, RAW, birth_date_required)
    problems = validate_catalog([DOSSIERS], root=root)
    assert fields_of(problems) == ["schema"]
    # The registry's checker words it at the union holding the record.
    assert "cannot read data written with version 1 (BACKWARD_TRANSITIVE)" in problems[0].message


def test_every_problem_of_a_broken_catalog_file_at_once(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(
        """
[[dataset]]
id = "publicservice.Dossiers"
sector = "public_service"
owner_unit = "DNA.VPUB"
source_system = "dvc-portal"
description_vi = ""
description_en = "Dossiers"
schema = "publicservice/dossiers.raw.v1.avsc"
model = "schemas.models.public_service:Dossier"
key = ["dossier_no"]
personal_fields = ["applicant_name", "applicant_phone"]
classification = "confidential"
update = { kind = "daily", by_local_time = "5pm" }
""",
        encoding="utf-8",
    )
    datasets: list[Dataset] = read_catalog(path)
    problems = validate_catalog(datasets)
    assert sorted(fields_of(problems)) == sorted(
        [
            "id",
            "description_vi",
            "classification",
            "update",
            "key",
            "personal_fields",
        ]
    )
    assert all(p.dataset_id == "publicservice.Dossiers" for p in problems)
