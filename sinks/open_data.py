"""Open-data export: datasets classified public, from the shared repository to files.

For every catalog dataset with ``classification = "public"`` whose current table exists
(``sinks.shared_repo``), :func:`export_open_data` writes into ``out_dir``::

    <dataset id>.csv, .parquet                the current rows (tombstones left out),
                                              personal fields, bookkeeping columns and
                                              internal quality fields dropped, sorted by key
    <dataset id>.by_commune.csv, .parquet     (datasets with a commune_code) entities per
                                              commune; a count below ``min_count`` is
                                              published blank with suppressed = true.
      or .by_province.csv, .parquet           when every commune count would be blank:
                                              the next coarser level, the province
    catalog.jsonld                            DCAT-AP 3.0.1 catalogue (``sinks.dcat``): a
                                              dcat:Dataset per file pair, with sizes and
                                              SHA-256 checksums

Reproducible: the files depend only on the repository's content (never on the clock or
on the database: values are normalised — timestamps in UTC, JSON with sorted keys,
rows sorted in Python), so exporting the same repository twice, or the same events
from PostgreSQL and from SQLite, gives byte-identical files. ``dct:modified`` is the
newest change in the data (``_source_ts``). Each file is written beside its target and
renamed, so the portal never serves half a file.

CSV files are for people opening them in a spreadsheet: UTF-8 with a byte-order mark
(``csv_bom``, so Excel on Windows reads Vietnamese right), CRLF rows (RFC 4180), and a
text cell starting with ``=``, ``+``, ``-``, ``@``, tab or CR is neutralised as OWASP
recommends (prefixed with ``'`` and quoted) so no spreadsheet runs it as a formula.
Parquet files keep the values as they are. Internal fields (``quality_flags``, the
``<field>_source`` code as sent beside a standardised ``<field>``) are never published.

Personal fields (the catalog's ``personal_fields``, and columns flattened from them,
``<field>_...``) are dropped even though public datasets should have none: the
classification and the personal-field list are kept by different people.

:func:`run_schedule` repeats a job on an interval until told to stop; the CLI wires it
and shows progress.
"""

from __future__ import annotations

import csv
import dataclasses
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

from bus.errors import ConfigError
from bus.settings import OpenDataSettings, Settings
from schemas.catalog import DATASETS, Dataset
from schemas.domain.reference import default_data_dir, load_reference
from sinks.dcat import (
    THEMES,
    DcatArea,
    DcatCatalog,
    DcatDataset,
    DcatFile,
    catalog_document,
    theme_of,
)
from sinks.shared_repo import repo_engine_from_settings
from sinks.sql_tables import table_name

__all__ = [
    "AGGREGATE_COLUMN",
    "CATALOG_FILE",
    "FORMULA_PREFIXES",
    "INTERNAL_FIELDS",
    "Aggregate",
    "DatasetExport",
    "ExportReport",
    "ExportedFile",
    "aggregate",
    "csv_bytes",
    "csv_text",
    "export_from_settings",
    "export_open_data",
    "load_province_area",
    "metadata_from_settings",
    "public_columns",
    "run_schedule",
]

log = logging.getLogger(__name__)

CATALOG_FILE = "catalog.jsonld"
AGGREGATE_COLUMN = "commune_code"
DEFAULT_BASE_URI = "https://opendata.example.invalid/databus/"
DEFAULT_LICENSE = "https://creativecommons.org/licenses/by/4.0/"
# Fields of the std records that describe the bus's own processing, not the entity.
INTERNAL_FIELDS = frozenset({"quality_flags"})
# What a spreadsheet takes for the start of a formula (OWASP, "CSV Injection").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
_AREA_FILE = "province_area.csv"
_AGGREGATE_LEVELS = frozenset({"commune", "province"})

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
    aggregate_level: str | None = None  # "commune", or "province" when coarsened


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
    """(kept, dropped): bookkeeping columns (``_...``) and internal quality fields
    (``quality_flags``; ``<field>_source``, the value as sent, beside a standardised
    ``<field>``) go silently, personal ones are reported; a column flattened from a
    personal record field goes with it."""
    names = list(names)
    present = set(names)
    kept: list[str] = []
    dropped: list[str] = []
    for name in names:
        if name.startswith("_") or name in INTERNAL_FIELDS:
            continue
        if name.endswith("_source") and name.removesuffix("_source") in present:
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


def csv_text(value: Any) -> str:
    """A value as the CSV files write it (times to the millisecond, UTC as ``Z``; ISO days)."""
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
        return csv_text(value)
    if pa.types.is_decimal(kind) and not isinstance(value, Decimal):
        return Decimal(str(value))
    return value


def _sort_key(row: Sequence[Any]) -> tuple[Any, ...]:
    return tuple((v is None, v if v is not None else 0) for v in row)


# ---- files ------------------------------------------------------------------------


def _csv_cell(value: Any) -> str:
    """One CSV field: RFC 4180 quoting, and a text value a spreadsheet would take for a
    formula neutralised the OWASP way: prefixed with ``'`` and quoted. Only text is
    neutralised: a number (``-5``) or a timestamp comes from a typed column and stays."""
    text = csv_text(value)
    formula = isinstance(value, str) and text.startswith(FORMULA_PREFIXES)
    if formula:
        text = "'" + text
    if formula or any(ch in text for ch in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def csv_bytes(header: Sequence[str], rows: Iterable[Sequence[Any]], *, bom: bool = True) -> bytes:
    """A CSV file (UTF-8, BOM for spreadsheets by default) with formula-like texts defused."""
    buffer = io.StringIO(newline="")
    buffer.write("\ufeff" if bom else "")
    for row in (header, *rows):
        line = ",".join(_csv_cell(v) for v in row)
        # one empty field: quoted, or the row would read back as no field (as csv does)
        buffer.write((line or '""') + "\r\n")  # RFC 4180
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

_CSV_NOTE_VI = (
    "CSV: UTF-8{bom}, phân cách bằng dấu phẩy; ô văn bản bắt đầu bằng = + - @ "
    "được thêm dấu ' ở đầu để bảng tính không coi là công thức."
)
_CSV_NOTE_EN = (
    "CSV: UTF-8{bom}, comma-separated (RFC 4180); a text cell starting with "
    "= + - @ tab or CR is prefixed with ' so that spreadsheets do not run it as a formula."
)
_PARQUET_NOTE_VI = "Parquet: giá trị giữ nguyên kiểu dữ liệu, không thay đổi."
_PARQUET_NOTE_EN = "Parquet: the values unchanged, with their types."


@dataclass(frozen=True, slots=True)
class Aggregate:
    """Entities counted per area at one level; ``coarsened``: the finer level (commune)
    would have published every count blank, so this is the next coarser one."""

    level: str  # "commune" | "province"
    cells: tuple[tuple[str, str, int | None, bool], ...]  # code, name, count, suppressed
    coarsened: bool = False

    @property
    def suppressed(self) -> int:
        return sum(1 for *_, s in self.cells if s)

    @property
    def header(self) -> list[str]:
        return [f"{self.level}_code", f"{self.level}_name", "count", "suppressed"]


def _cells(
    counts: Mapping[str, int], names: Mapping[str, str], min_count: int
) -> tuple[tuple[str, str, int | None, bool], ...]:
    return tuple(
        (code, names.get(code, ""), n if n >= min_count else None, n < min_count)
        for code, n in sorted(counts.items())
    )


def aggregate(
    kept: Sequence[str],
    rows: Sequence[Sequence[Any]],
    min_count: int,
    *,
    commune_names: Mapping[str, str],
    province: DcatArea,
) -> Aggregate:
    """Counts per commune; when every commune count is below ``min_count`` (all would be
    published blank), the count of the province instead."""
    index = kept.index(AGGREGATE_COLUMN)
    counts: dict[str, int] = {}
    for row in rows:
        code = row[index] if row[index] is not None else ""
        counts[code] = counts.get(code, 0) + 1
    cells = _cells(counts, commune_names, min_count)
    if not cells or not all(s for *_, s in cells):
        return Aggregate("commune", cells)
    whole = _cells({province.code: len(rows)}, {province.code: province.name}, min_count)
    return Aggregate("province", whole, coarsened=True)


def _aggregate_texts(agg: Aggregate, min_count: int) -> tuple[str, str, str, str]:
    """(title_vi, title_en, description_vi, description_en) of an aggregate dataset."""
    rule_vi = f"ô có số lượng nhỏ hơn {min_count} được để trống (suppressed = true)"
    rule_en = f"counts below {min_count} are left blank (suppressed = true)"
    if agg.level == "commune":
        return (
            "số lượng theo xã, phường",
            "counts per commune",
            f"Số bản ghi hiện hành theo mã xã, phường; {rule_vi}.",
            f"Current records per commune code; {rule_en}.",
        )
    return (
        "số lượng toàn tỉnh",
        "count for the province",
        (
            f"Số bản ghi hiện hành của toàn tỉnh. Mọi số lượng theo xã, phường đều nhỏ hơn "
            f"{min_count} nên sẽ bị để trống hết; vì vậy số liệu được công bố ở cấp tỉnh "
            f"(cấp lớn hơn kế tiếp); {rule_vi}."
        ),
        (
            f"Current records for the province as a whole. Every per-commune count was "
            f"below {min_count}, so the commune file would have been entirely blank; the "
            f"count is published at the next coarser level, the province, instead; "
            f"{rule_en}."
        ),
    )


def _commune_names() -> dict[str, str]:
    return {e.new_code: e.name_new for e in load_reference().crosswalk.values()}


def _export_dataset(
    conn: sa.Connection,
    dataset: Dataset,
    out_dir: Path,
    db_schema: str | None,
    min_count: int,
    csv_bom: bool,
    province: DcatArea,
    base_uri: str,
) -> tuple[DatasetExport, list[DcatDataset]] | None:
    name = table_name(dataset)
    if not sa.inspect(conn).has_table(name, schema=db_schema):
        return None
    table = sa.Table(name, sa.MetaData(), autoload_with=conn, schema=db_schema)
    kept, dropped = public_columns(dataset, [c.name for c in table.columns])
    selected = [table.c[n] for n in kept]
    live = table.c._deleted.is_(False)
    result = conn.execute(sa.select(*selected).where(live))
    rows = [tuple(_canonical(v) for v in row) for row in result]
    key_index = [kept.index(k) for k in dataset.key_fields if k in kept]
    rows.sort(key=lambda r: (_sort_key([r[i] for i in key_index]), _sort_key(r)))
    first_ts, newest = conn.execute(
        sa.select(sa.func.min(table.c._source_ts), sa.func.max(table.c._source_ts)).where(live)
    ).one()
    modified = _canonical(newest) if newest is not None else None
    issued = _canonical(first_ts) if first_ts is not None else None
    temporal = (issued, modified) if issued is not None and modified is not None else None
    types = [_arrow_type(c.type) for c in selected]
    stem = dataset.id
    files = [
        _write_file(out_dir, f"{stem}.csv", csv_bytes(kept, rows, bom=csv_bom)),
        _write_file(out_dir, f"{stem}.parquet", _parquet_bytes(kept, types, rows)),
    ]
    unit = load_reference().receiving_unit(dataset.owner_unit)
    publisher = unit.name if unit is not None else dataset.owner_unit
    publisher_id = f"{base_uri}publishers/{dataset.owner_unit}"
    domain = dataset.id.split(".", 1)[0]
    theme = THEMES.get(domain)
    keywords = [
        *([("vi", theme[2])] if theme is not None else []),
        ("en", dataset.sector.replace("_", " ")),
        ("en", domain),
    ]
    common: dict[str, Any] = {
        "publisher_id": publisher_id,
        "publisher_name": publisher,
        "modified": modified,
        "issued": issued,
        "temporal": temporal,
        "theme": theme_of(dataset.id),
    }
    dcat = [
        DcatDataset(
            identifier=dataset.id,
            title_vi=dataset.description_vi,
            title_en=dataset.description_en,
            description_vi=(
                f"{dataset.description_vi}: {len(rows)} bản ghi hiện hành từ kho dữ liệu "
                "dùng chung; đã loại bỏ các trường dữ liệu cá nhân và trường kiểm soát "
                "chất lượng nội bộ."
            ),
            description_en=(
                f"{dataset.description_en}: {len(rows)} current records from the shared "
                "repository; personal fields and internal quality fields removed."
            ),
            files=_dcat_files(files, csv_bom),
            keywords=keywords,
            **common,
        )
    ]
    agg: Aggregate | None = None
    if AGGREGATE_COLUMN in kept:
        agg = aggregate(kept, rows, min_count, commune_names=_commune_names(), province=province)
        agg_types = [pa.string(), pa.string(), pa.int64(), pa.bool_()]
        agg_stem = f"{stem}.by_{agg.level}"
        agg_files = [
            _write_file(out_dir, f"{agg_stem}.csv", csv_bytes(agg.header, agg.cells, bom=csv_bom)),
            _write_file(
                out_dir, f"{agg_stem}.parquet", _parquet_bytes(agg.header, agg_types, agg.cells)
            ),
        ]
        files.extend(agg_files)
        for level in _AGGREGATE_LEVELS - {agg.level}:  # the other level's, of a past export
            for suffix in (".csv", ".parquet"):
                (out_dir / f"{stem}.by_{level}{suffix}").unlink(missing_ok=True)
        title_vi, title_en, description_vi, description_en = _aggregate_texts(agg, min_count)
        dcat.append(
            DcatDataset(
                identifier=agg_stem,
                title_vi=f"{dataset.description_vi} — {title_vi}",
                title_en=f"{dataset.description_en} — {title_en}",
                description_vi=description_vi,
                description_en=description_en,
                files=_dcat_files(agg_files, csv_bom),
                keywords=[*keywords, ("vi", "thống kê"), ("en", "aggregate")],
                derived_from=dataset.id,
                **common,
            )
        )
    report = DatasetExport(
        dataset_id=dataset.id,
        rows=len(rows),
        columns=tuple(kept),
        dropped=tuple(dropped),
        files=tuple(files),
        aggregate_cells=len(agg.cells) if agg is not None else 0,
        suppressed_cells=agg.suppressed if agg is not None else 0,
        aggregate_level=agg.level if agg is not None else None,
    )
    return report, dcat


def _dcat_files(files: Sequence[ExportedFile], csv_bom: bool) -> list[DcatFile]:
    csv_vi = _CSV_NOTE_VI.format(bom=" (có BOM)" if csv_bom else "")
    csv_en = _CSV_NOTE_EN.format(bom=" (with BOM)" if csv_bom else "")
    out = []
    for f in files:
        csv_file = f.name.endswith(".csv")
        out.append(
            DcatFile(
                f.name,
                f.byte_size,
                f.sha256,
                description_vi=csv_vi if csv_file else _PARQUET_NOTE_VI,
                description_en=csv_en if csv_file else _PARQUET_NOTE_EN,
            )
        )
    return out


def load_province_area(code: str, data_dir: Path | None = None) -> DcatArea:
    """The province (``schemas/data/province_area.csv``: name and bounding box) as the
    catalogue's spatial coverage, under its administrative ``code``."""
    path = (data_dir if data_dir is not None else default_data_dir()) / _AREA_FILE
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            rows = list(csv.DictReader(handle))
        row = rows[0]
        return DcatArea(
            code=code,
            name=row["name"],
            min_lat=float(row["min_lat"]),
            max_lat=float(row["max_lat"]),
            min_lon=float(row["min_lon"]),
            max_lon=float(row["max_lon"]),
        )
    except (OSError, IndexError, KeyError, ValueError) as exc:
        raise ConfigError(f"cannot read the province area from {path}: {exc}") from exc


def metadata_from_settings(od: OpenDataSettings) -> DcatCatalog:
    """The catalogue's own metadata from ``DATABUS_OPEN_DATA__*``."""
    return DcatCatalog(
        base_uri=od.base_uri,
        publisher_name=od.publisher_name,
        license_uri=od.license_uri,
        area=load_province_area(od.province_code),
        homepage=od.homepage,
        contact_name=od.contact_name,
        contact_email=od.contact_email,
        contact_url=od.contact_url,
    )


def export_open_data(
    engine: sa.Engine,
    out_dir: Path,
    *,
    now: datetime,
    min_count: int = 5,
    db_schema: str | None = None,
    csv_bom: bool = True,
    metadata: DcatCatalog | None = None,
    base_uri: str | None = None,
    catalog: Mapping[str, Dataset] = DATASETS,
) -> ExportReport:
    """Export every public dataset of ``catalog`` found in the repository to ``out_dir``.

    ``metadata``: the catalogue's own (default: the default settings'); ``base_uri``
    replaces its base URI. ``now`` only stamps the report: the files depend on the
    repository alone.
    """
    if metadata is None:
        metadata = metadata_from_settings(OpenDataSettings())
    if base_uri is not None:
        metadata = dataclasses.replace(metadata, base_uri=base_uri)
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
            found = _export_dataset(
                conn,
                dataset,
                out_dir,
                db_schema,
                min_count,
                csv_bom,
                metadata.area,
                metadata.base_uri,
            )
            if found is None:
                skipped.append(dataset.id)
                continue
            report, dcat = found
            exports.append(report)
            entries.extend(dcat)
    document = catalog_document(entries, metadata)
    text = json.dumps(document, ensure_ascii=False, indent=2) + "\n"
    catalog_file = _write_file(out_dir, CATALOG_FILE, text.encode("utf-8"))
    log.info("open data: %d datasets exported to %s", len(exports), out_dir)
    return ExportReport(out_dir, now, tuple(exports), tuple(skipped), catalog_file)


def export_from_settings(settings: Settings, *, now: datetime) -> ExportReport:
    """One export with the process settings (repository URL, output dir, min count,
    the catalogue's metadata)."""
    engine = repo_engine_from_settings(settings)
    od = settings.open_data
    try:
        return export_open_data(
            engine,
            od.resolved_out_dir(settings.data_dir),
            now=now,
            min_count=od.min_count,
            db_schema=settings.shared_repo.db_schema,
            csv_bom=od.csv_bom,
            metadata=metadata_from_settings(od),
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
