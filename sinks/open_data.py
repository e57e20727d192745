"""Open-data export: datasets classified public, from the shared repository to files.

For every catalog dataset with ``classification = "public"`` whose current table exists
(``sinks.shared_repo``), :func:`export_open_data` writes into ``out_dir``::

    <dataset id>.csv, .parquet                the current rows (tombstones left out),
                                              personal fields and bookkeeping columns
                                              dropped, sorted by key
    <dataset id>.by_commune.csv, .parquet     (datasets with a commune_code) entities per
                                              commune; a count below ``min_count`` is
                                              published blank with suppressed = true
    catalog.jsonld                            DCAT-AP catalog (``sinks.dcat``): a
                                              dcat:Dataset per file pair, with sizes and
                                              SHA-256 checksums

Reproducible: the files depend only on the repository's content (never on the clock or
on the database: values are normalised — timestamps in UTC, JSON with sorted keys,
rows sorted in Python), so exporting the same repository twice, or the same events
from PostgreSQL and from SQLite, gives byte-identical files. ``dct:modified`` is the
newest change in the data (``_source_ts``). Each file is written beside its target and
renamed, so the portal never serves half a file.

Personal fields (the catalog's ``personal_fields``, and columns flattened from them,
``<field>_...``) are dropped even though public datasets should have none: the
classification and the personal-field list are kept by different people.

:func:`run_schedule` repeats a job on an interval until told to stop; the CLI wires it
and shows progress.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import os
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import pyarrow as pa
import pyarrow.parquet as pq
import sqlalchemy as sa

from bus.settings import Settings
from schemas.catalog import DATASETS, Dataset
from schemas.domain.reference import load_reference
from sinks.dcat import DcatDataset, DcatFile, catalog_document
from sinks.shared_repo import repo_engine_from_settings
from sinks.sql_tables import table_name

__all__ = [
    "AGGREGATE_COLUMN",
    "CATALOG_FILE",
    "DatasetExport",
    "ExportReport",
    "ExportedFile",
    "export_from_settings",
    "export_open_data",
    "public_columns",
    "run_schedule",
]

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.jsonld"
AGGREGATE_COLUMN = "commune_code"
DEFAULT_BASE_URI = "https://opendata.example.invalid/databus/"
DEFAULT_LICENSE = "https://creativecommons.org/licenses/by/4.0/"

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class ExportedFile:
    name: str
    byte_size: int
    sha256: str


@dataclass(frozen=True, slots=True)
class DatasetExport:
    dataset_id: str
    rows: int
    columns: tuple[str, ...]
    dropped: tuple[str, ...]  # personal-field columns left out
    files: tuple[ExportedFile, ...]
    aggregate_cells: int = 0
    suppressed_cells: int = 0


@dataclass(frozen=True, slots=True)
class ExportReport:
    out_dir: Path
    exported_at: datetime
    datasets: tuple[DatasetExport, ...]
    skipped: tuple[str, ...]  # public datasets whose table does not exist yet
    catalog: ExportedFile

    @property
    def files(self) -> tuple[ExportedFile, ...]:
        return (*(f for d in self.datasets for f in d.files), self.catalog)


def public_columns(dataset: Dataset, names: Iterable[str]) -> tuple[list[str], list[str]]:
    """(kept, dropped): bookkeeping columns (``_...``) go silently, personal ones are
    reported; a column flattened from a personal record field goes with it."""
    kept: list[str] = []
    dropped: list[str] = []
    for name in names:
        if name.startswith("_"):
            continue
        if any(name == p or name.startswith(p + "_") for p in dataset.personal_fields):
            dropped.append(name)
        else:
            kept.append(name)
    return kept, dropped


# ---- values: one canonical form whichever database they come from ----------------


def _canonical(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, memoryview):
        return bytes(value)
    return value


def _csv_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    if isinstance(value, date | time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


def _arrow_type(kind: sa.types.TypeEngine[Any]) -> pa.DataType:
    if isinstance(kind, sa.Boolean):
        return pa.bool_()
    if isinstance(kind, sa.DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(kind, sa.Date):
        return pa.date32()
    if isinstance(kind, sa.Time):
        return pa.time64("us")
    if isinstance(kind, sa.BigInteger):
        return pa.int64()
    if isinstance(kind, sa.Integer):
        return pa.int32()
    if isinstance(kind, sa.Float):
        return pa.float64()
    if isinstance(kind, sa.Numeric):
        if kind.precision is not None:
            return pa.decimal128(kind.precision, kind.scale or 0)
        return pa.string()
    if isinstance(kind, sa.LargeBinary):
        return pa.binary()
    return pa.string()


def _arrow_value(value: Any, kind: pa.DataType) -> Any:
    if value is None:
        return None
    if pa.types.is_string(kind) and not isinstance(value, str):
        return _csv_text(value)
    if pa.types.is_decimal(kind) and not isinstance(value, Decimal):
        return Decimal(str(value))
    return value


def _sort_key(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple((v is None, v if v is not None else 0) for v in row)


# ---- files ------------------------------------------------------------------------


def _csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> bytes:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer, lineterminator="\r\n")  # RFC 4180
    writer.writerow(header)
    for row in rows:
        writer.writerow([_csv_text(v) for v in row])
    return buffer.getvalue().encode("utf-8")


def _parquet_bytes(
    header: Sequence[str], types: Sequence[pa.DataType], rows: Sequence[Sequence[Any]]
) -> bytes:
    schema = pa.schema([pa.field(n, t) for n, t in zip(header, types, strict=True)])
    columns = [pa.array([_arrow_value(r[i], t) for r in rows], type=t) for i, t in enumerate(types)]
    table = pa.Table.from_arrays(columns, schema=schema)
    sink = pa.BufferOutputStream()
    # no pandas metadata, no timestamps: the bytes depend on the rows only
    pq.write_table(table, sink, compression="zstd", write_statistics=True)
    return bytes(sink.getvalue().to_pybytes())


def _write_file(out_dir: Path, name: str, data: bytes) -> ExportedFile:
    target = out_dir / name
    tmp = out_dir / f".{name}.tmp"
    tmp.write_bytes(data)
    os.chmod(tmp, 0o644)  # public by design, though `databus` runs with umask 077
    os.replace(tmp, target)
    return ExportedFile(name, len(data), hashlib.sha256(data).hexdigest())


# ---- the export ---------------------------------------------------------------------


def _aggregate(
    kept: Sequence[str], rows: Sequence[Sequence[Any]], min_count: int
) -> tuple[list[tuple[str, int | None, bool]], int]:
    index = kept.index(AGGREGATE_COLUMN)
    counts: dict[str, int] = {}
    for row in rows:
        code = row[index] if row[index] is not None else ""
        counts[code] = counts.get(code, 0) + 1
    cells = [
        (code, n if n >= min_count else None, n < min_count) for code, n in sorted(counts.items())
    ]
    return cells, sum(1 for _, _, s in cells if s)


def _export_dataset(
    conn: sa.Connection,
    dataset: Dataset,
    out_dir: Path,
    db_schema: str | None,
    min_count: int,
) -> tuple[DatasetExport, list[DcatDataset], datetime | None] | None:
    name = table_name(dataset)
    if not sa.inspect(conn).has_table(name, schema=db_schema):
        return None
    table = sa.Table(name, sa.MetaData(), autoload_with=conn, schema=db_schema)
    kept, dropped = public_columns(dataset, [c.name for c in table.columns])
    selected = [table.c[n] for n in kept]
    result = conn.execute(sa.select(*selected).where(table.c._deleted.is_(False)))
    rows = [tuple(_canonical(v) for v in row) for row in result]
    key_index = [kept.index(k) for k in dataset.key_fields if k in kept]
    rows.sort(key=lambda r: (_sort_key([r[i] for i in key_index]), _sort_key(r)))
    newest = conn.execute(sa.select(sa.func.max(table.c._source_ts))).scalar()
    modified = _canonical(newest) if newest is not None else None
    types = [_arrow_type(c.type) for c in selected]
    stem = dataset.id
    files = [
        _write_file(out_dir, f"{stem}.csv", _csv_bytes(kept, rows)),
        _write_file(out_dir, f"{stem}.parquet", _parquet_bytes(kept, types, rows)),
    ]
    unit = load_reference().receiving_unit(dataset.owner_unit)
    publisher = unit.name if unit is not None else dataset.owner_unit
    publisher_id = f"urn:databus:unit:{dataset.owner_unit}"
    dcat = [
        DcatDataset(
            identifier=dataset.id,
            title_vi=dataset.description_vi,
            title_en=dataset.description_en,
            description_vi=(
                f"{dataset.description_vi}: {len(rows)} bản ghi hiện hành từ kho dữ liệu "
                "dùng chung; đã loại bỏ các trường dữ liệu cá nhân."
            ),
            description_en=(
                f"{dataset.description_en}: {len(rows)} current records from the shared "
                "repository; personal fields removed."
            ),
            publisher_id=publisher_id,
            publisher_name=publisher,
            modified=modified,
            files=[DcatFile(f.name, f.byte_size, f.sha256) for f in files],
            keywords=(dataset.sector, dataset.id.split(".")[0]),
        )
    ]
    cells = suppressed = 0
    if AGGREGATE_COLUMN in kept:
        aggregate, suppressed = _aggregate(kept, rows, min_count)
        cells = len(aggregate)
        header = [AGGREGATE_COLUMN, "count", "suppressed"]
        agg_types = [pa.string(), pa.int64(), pa.bool_()]
        agg_files = [
            _write_file(out_dir, f"{stem}.by_commune.csv", _csv_bytes(header, aggregate)),
            _write_file(
                out_dir,
                f"{stem}.by_commune.parquet",
                _parquet_bytes(header, agg_types, aggregate),
            ),
        ]
        files.extend(agg_files)
        dcat.append(
            DcatDataset(
                identifier=f"{dataset.id}.by_commune",
                title_vi=f"{dataset.description_vi} — số lượng theo xã, phường",
                title_en=f"{dataset.description_en} — counts per commune",
                description_vi=(
                    "Số bản ghi hiện hành theo mã xã, phường; ô có số lượng nhỏ hơn "
                    f"{min_count} được để trống (suppressed = true)."
                ),
                description_en=(
                    f"Current records per commune code; counts below {min_count} are "
                    "left blank (suppressed = true)."
                ),
                publisher_id=publisher_id,
                publisher_name=publisher,
                modified=modified,
                files=[DcatFile(f.name, f.byte_size, f.sha256) for f in agg_files],
                keywords=(dataset.sector, "aggregate"),
                derived_from=dataset.id,
            )
        )
    report = DatasetExport(
        dataset_id=dataset.id,
        rows=len(rows),
        columns=tuple(kept),
        dropped=tuple(dropped),
        files=tuple(files),
        aggregate_cells=cells,
        suppressed_cells=suppressed,
    )
    return report, dcat, modified


def export_open_data(
    engine: sa.Engine,
    out_dir: Path,
    *,
    now: datetime,
    min_count: int = 5,
    db_schema: str | None = None,
    base_uri: str = DEFAULT_BASE_URI,
    publisher_name: str = "UBND tỉnh Đồng Nai",
    license_uri: str = DEFAULT_LICENSE,
    catalog: Mapping[str, Dataset] = DATASETS,
) -> ExportReport:
    """Export every public dataset of ``catalog`` found in the repository to ``out_dir``.

    ``now`` only stamps the report: the files depend on the repository alone.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    exports: list[DatasetExport] = []
    entries: list[DcatDataset] = []
    skipped: list[str] = []
    public = [d for d in catalog.values() if d.classification == "public"]
    # one snapshot for every table (REPEATABLE READ on PostgreSQL; SQLite reads
    # from one transaction anyway)
    options: dict[str, Any] = {}
    if engine.dialect.name == "postgresql":
        options["isolation_level"] = "REPEATABLE READ"
    with engine.connect().execution_options(**options) as conn, conn.begin():
        for dataset in sorted(public, key=lambda d: d.id):
            found = _export_dataset(conn, dataset, out_dir, db_schema, min_count)
            if found is None:
                skipped.append(dataset.id)
                continue
            report, dcat, _ = found
            exports.append(report)
            entries.extend(dcat)
    document = catalog_document(
        entries, base_uri=base_uri, publisher_name=publisher_name, license_uri=license_uri
    )
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    catalog_file = _write_file(out_dir, CATALOG_FILE, text.encode("utf-8"))
    log.info("open data: %d datasets exported to %s", len(exports), out_dir)
    return ExportReport(out_dir, now, tuple(exports), tuple(skipped), catalog_file)


def export_from_settings(settings: Settings, *, now: datetime) -> ExportReport:
    """One export with the process settings (repository URL, output dir, min count)."""
    engine = repo_engine_from_settings(settings)
    od = settings.open_data
    try:
        return export_open_data(
            engine,
            od.resolved_out_dir(settings.data_dir),
            now=now,
            min_count=od.min_count,
            db_schema=settings.shared_repo.db_schema,
            base_uri=od.base_uri,
            publisher_name=od.publisher_name,
            license_uri=od.license_uri,
        )
    finally:
        engine.dispose()


def run_schedule(
    job: Callable[[], T],
    *,
    interval_s: float,
    stop: threading.Event,
    on_result: Callable[[T], None] | None = None,
    on_error: Callable[[Exception], None] | None = None,
) -> int:
    """Run ``job`` now and then every ``interval_s`` until ``stop`` is set; returns how
    many runs succeeded. A failed run (repository unavailable) is reported to
    ``on_error`` and retried at the next tick rather than ending the schedule."""
    done = 0
    while not stop.is_set():
        try:
            result = job()
        except Exception as exc:
            log.warning("open data: scheduled run failed: %s", type(exc).__name__)
            if on_error is not None:
                on_error(exc)
        else:
            done += 1
            if on_result is not None:
                on_result(result)
        stop.wait(interval_s)
    return done
