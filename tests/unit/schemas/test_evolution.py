"""Schema history: every revision, in order, is BACKWARD_TRANSITIVE compatible."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from schemas.catalog import DATASETS, DOSSIERS, load_schema, schema_revisions
from schemas.catalog_check import envelope_record
from schemas.evolution import check_evolution, check_revisions


def inner_names(text: str) -> list[str]:
    return [f["name"] for f in envelope_record(json.loads(text))["fields"]]


def test_every_catalog_dataset_evolves_backward_transitive() -> None:
    for dataset in DATASETS.values():
        assert check_evolution(dataset) == [], dataset.id


def test_dossiers_has_a_real_earlier_revision() -> None:
    first, current = schema_revisions(DOSSIERS.raw_schema)
    assert first == "publicservice/history/dossiers.raw.v1.1.avsc"
    added = set(inner_names(load_schema(current))) - set(inner_names(load_schema(first)))
    assert added == {"applicant_birth_date", "applicant_sex"}
    assert check_revisions([first, current]) == []


def dossier_schema() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(load_schema(DOSSIERS.raw_schema))
    return document


def field(document: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(
        f for f in envelope_record(document)["fields"] if f["name"] == name
    )
    return found


def drop(document: dict[str, Any], name: str) -> dict[str, Any]:
    record = envelope_record(document)
    record["fields"] = [f for f in record["fields"] if f["name"] != name]
    return document


def write_history(
    root: Path, revisions: list[dict[str, Any]], revs: list[int] | None = None
) -> None:
    (root / "d" / "history").mkdir(parents=True)
    *history, current = revisions
    for rev, document in zip(revs or range(1, len(history) + 1), history, strict=True):
        (root / "d" / "history" / f"x.raw.v1.{rev}.avsc").write_text(json.dumps(document))
    (root / "d" / "x.raw.v1.avsc").write_text(json.dumps(current))


def dataset_at(root: Path) -> Any:
    return replace(DOSSIERS, raw_schema="d/x.raw.v1.avsc", std_schema=None)


def test_adding_a_field_without_default_fails(tmp_path: Path) -> None:
    old = drop(dossier_schema(), "applicant_sex")
    new = dossier_schema()
    del field(new, "applicant_sex")["default"]
    field(new, "applicant_sex")["type"] = {"type": "enum", "name": "Sex", "symbols": ["M", "F"]}
    write_history(tmp_path, [old, new])
    problems = check_evolution(dataset_at(tmp_path), root=tmp_path)
    assert len(problems) == 1
    assert problems[0].startswith("d/x.raw.v1.avsc: Schema being registered is incompatible")


def test_compatibility_is_transitive(tmp_path: Path) -> None:
    # rev 1 has procedure_name as a string; rev 2 drops it; rev 3 brings it back as a long
    # with a default. rev 3 reads rev 2's data, but not rev 1's: only a transitive check
    # catches it.
    rev1 = dossier_schema()
    rev2 = drop(dossier_schema(), "procedure_name")
    rev3 = dossier_schema()
    field(rev3, "procedure_name").update({"type": "long", "default": 0})
    assert check_revisions_docs(tmp_path / "pair", [rev2, rev3]) == []
    write_history(tmp_path, [rev1, rev2, rev3])
    problems = check_evolution(dataset_at(tmp_path), root=tmp_path)
    assert len(problems) == 1
    assert "version 1" in problems[0] and "BACKWARD_TRANSITIVE" in problems[0]


def check_revisions_docs(root: Path, documents: list[dict[str, Any]]) -> list[str]:
    root.mkdir()
    paths = []
    for i, document in enumerate(documents):
        (root / f"{i}.avsc").write_text(json.dumps(document))
        paths.append(f"{i}.avsc")
    return check_revisions(paths, root=root)


def test_a_gap_in_the_history_is_reported(tmp_path: Path) -> None:
    old = drop(dossier_schema(), "applicant_sex")
    write_history(tmp_path, [old, old, dossier_schema()], revs=[1, 3])
    problems = check_evolution(dataset_at(tmp_path), root=tmp_path)
    assert problems == [
        "d/x.raw.v1.avsc: history revision 2 is missing (found d/history/x.raw.v1.3.avsc)"
    ]


def test_revisions_sort_numerically_and_ignore_other_files(tmp_path: Path) -> None:
    history = tmp_path / "d" / "history"
    history.mkdir(parents=True)
    for name in (
        "x.raw.v1.10.avsc",
        "x.raw.v1.2.avsc",
        "x.raw.v1.1.avsc",
        "x.raw.v1.avsc",
        "y.raw.v1.1.avsc",
        "x.raw.v1.a.avsc",
        "notes.md",
    ):
        (history / name).write_text("{}")
    assert schema_revisions("d/x.raw.v1.avsc", tmp_path) == [
        "d/history/x.raw.v1.1.avsc",
        "d/history/x.raw.v1.2.avsc",
        "d/history/x.raw.v1.10.avsc",
        "d/x.raw.v1.avsc",
    ]
