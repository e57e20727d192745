"""`databus opendata export`: a table of what was exported, every export on the audit log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError
from std_samples import sink_records, std_events
from typer.testing import CliRunner

from bus.audit import verify
from bus.settings import OpenDataSettings
from databus.cli import app
from sinks.shared_repo import SharedRepoSink, create_repo_engine

SCHOOLS = "education.schools"


def test_export_prints_its_table_and_is_audited(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = create_repo_engine(f"sqlite:///{tmp_path / 'shared_repo.sqlite'}")
    sink = SharedRepoSink(engine)
    sink.setup()
    assert sink.write(sink_records(SCHOOLS, std_events(SCHOOLS))) == []
    engine.dispose()
    monkeypatch.setenv("DATABUS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")

    first = CliRunner().invoke(app, ["opendata", "export"])
    assert first.exit_code == 0, first.output
    assert SCHOOLS in first.output and "catalog.jsonld" in first.output
    assert (tmp_path / "open_data" / f"{SCHOOLS}.parquet").is_file()
    second = CliRunner().invoke(app, ["opendata", "export"])
    assert second.exit_code == 0, second.output

    log = tmp_path / "audit.jsonl"
    entries = [json.loads(line) for line in log.read_text().splitlines()]
    assert [e["action"] for e in entries] == ["opendata.export"] * 2
    files = entries[0]["detail"]["files"]
    assert f"{SCHOOLS}.csv" in files and "catalog.jsonld" in files
    assert entries[0]["detail"]["datasets"][SCHOOLS] > 0
    assert verify(log).ok


def test_the_catalogue_metadata_comes_from_the_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The shipped base URI is a placeholder the export warns about; a deployment's base
    URI, homepage and contact point are what the catalogue says."""
    engine = create_repo_engine(f"sqlite:///{tmp_path / 'shared_repo.sqlite'}")
    sink = SharedRepoSink(engine)
    sink.setup()
    assert sink.write(sink_records(SCHOOLS, std_events(SCHOOLS))) == []
    engine.dispose()
    monkeypatch.setenv("DATABUS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("COLUMNS", "200")

    placeholder = CliRunner().invoke(app, ["opendata", "export"])
    assert placeholder.exit_code == 0, placeholder.output
    assert "DATABUS_OPEN_DATA__BASE_URI is the placeholder" in placeholder.output

    monkeypatch.setenv("DATABUS_OPEN_DATA__BASE_URI", "https://opendata.dongnai.gov.vn/files")
    monkeypatch.setenv("DATABUS_OPEN_DATA__HOMEPAGE", "https://opendata.dongnai.gov.vn/")
    monkeypatch.setenv("DATABUS_OPEN_DATA__CONTACT_EMAIL", "opendata@example.gov.vn")
    monkeypatch.setenv("DATABUS_OPEN_DATA__CSV_BOM", "false")
    configured = CliRunner().invoke(app, ["opendata", "export"])
    assert configured.exit_code == 0, configured.output
    assert "placeholder" not in configured.output
    out = tmp_path / "open_data"
    doc = json.loads((out / "catalog.jsonld").read_text(encoding="utf-8"))
    assert doc["@id"] == "https://opendata.dongnai.gov.vn/files/catalog"
    assert doc["foaf:homepage"]["@id"] == "https://opendata.dongnai.gov.vn/"
    schools = doc["dcat:dataset"][0]
    assert schools["dcat:contactPoint"]["vcard:hasEmail"] == {
        "@id": "mailto:opendata@example.gov.vn"
    }
    url = schools["dcat:distribution"][0]["dcat:downloadURL"]["@id"]
    assert url == f"https://opendata.dongnai.gov.vn/files/{SCHOOLS}.csv"
    assert (out / f"{SCHOOLS}.csv").read_bytes().startswith(b"school_id,")


def test_open_data_settings_refuse_what_is_not_a_uri_or_an_address() -> None:
    assert OpenDataSettings().base_uri_is_placeholder
    assert not OpenDataSettings(base_uri="https://data.gov.vn/x").base_uri_is_placeholder
    for bad in (
        {"homepage": "opendata.gov.vn"},
        {"contact_email": "not an address"},
        {"province_code": "7"},
    ):
        with pytest.raises(ValidationError):
            OpenDataSettings.model_validate(bad)
