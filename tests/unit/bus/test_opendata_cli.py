"""`databus opendata export`: a table of what was exported, every export on the audit log."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from std_samples import sink_records, std_events
from typer.testing import CliRunner

from bus.audit import verify
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
