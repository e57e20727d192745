"""File drop: units without an integrated system hand in CSV, JSON Lines or Excel files.

Rows are matched to the dataset model's fields by column name (case and spaces
ignored). Each row becomes a model or a ``RejectedRow`` with its line number, the
field at fault and the reason in English and Vietnamese, so the unit can fix the
file and resubmit. Problems with the file as a whole — unknown or missing
columns, an unreadable file — stop before anything is published.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from enum import Enum
from pathlib import Path
from typing import Any, get_args, get_origin

from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from bus.errors import ValidationError
from producers.publisher import Publisher
from schemas.catalog import Dataset
from schemas.models import Op

__all__ = [
    "DropResult",
    "FileFormatError",
    "RejectedRow",
    "Row",
    "RowCheck",
    "finish_drop",
    "publish_file",
    "read_rows",
    "template_rows",
    "validate_rows",
    "write_rejects",
]

FORMATS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".xlsx": "xlsx"}

# pydantic error types → (English, Vietnamese); the rest fall back to pydantic's text.
_REASONS_VI = {
    "missing": "thiếu trường bắt buộc",
    "string_too_short": "giá trị rỗng hoặc quá ngắn",
    "string_too_long": "giá trị quá dài",
    "enum": "giá trị không thuộc danh mục cho phép",
    "int_parsing": "không phải số nguyên",
    "float_parsing": "không phải số",
    "date_from_datetime_parsing": "ngày không hợp lệ",
    "date_parsing": "ngày không hợp lệ",
    "datetime_parsing": "thời gian không hợp lệ",
    "datetime_from_date_parsing": "thời gian không hợp lệ",
    "bool_parsing": "không phải giá trị đúng/sai",
    "string_type": "không phải chuỗi ký tự",
    "not_utf8": "chứa byte không phải UTF-8",
}


class FileFormatError(ValidationError):
    """The file as a whole cannot be read as the dataset (nothing was published)."""


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line of the file (header = line 1 for CSV/Excel)
    values: dict[str, Any]


@dataclass(frozen=True)
class RejectedRow:
    line: int
    field: str
    reason_en: str
    reason_vi: str
    values: dict[str, Any]


def _norm(name: str) -> str:
    # "Dossier ID", "dossier_id" and "DOSSIER_ID " all name the same field
    return "".join(name.replace("_", " ").split()).lower()


def _file_format(path: Path) -> str:
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise FileFormatError(
            f"{path.name}: unsupported file type {path.suffix!r}; use .csv, .jsonl or .xlsx"
        )
    return fmt


def _csv_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    # surrogateescape keeps the file readable past bad bytes; each row that holds
    # one is then refused with its line, instead of failing the whole file.
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    for record in reader:
        yield reader.line_num, {k: v for k, v in record.items() if k is not None}
        if None in record:
            raise FileFormatError(f"{path.name}, line {reader.line_num}: more values than columns")


def _jsonl_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    raw = path.read_bytes().decode("utf-8", errors="surrogateescape")
    for number, line in enumerate(raw.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, {"__error__": f"not a JSON object: {exc.msg}"}
            continue
        yield number, value if isinstance(value, dict) else {"__error__": "not a JSON object"}


def _xlsx_rows(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    from openpyxl import load_workbook

    sheet = load_workbook(path, read_only=True, data_only=True).worksheets[0]
    rows = sheet.iter_rows(values_only=True)
    header = [str(h) if h is not None else "" for h in next(rows, ())]
    for number, cells in enumerate(rows, start=2):
        if all(c is None for c in cells):
            continue
        yield number, {h: _cell_text(c) for h, c in zip(header, cells, strict=False) if h}


def _cell_text(cell: Any) -> Any:
    """Excel stores typed codes (75001) as numbers and dates as datetimes: read them
    back as the text the unit sees, day first, as the model's text fields expect."""
    if cell is None or isinstance(cell, str | bool):
        return cell
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    if isinstance(cell, datetime):
        return cell.strftime(
            "%d/%m/%Y" if cell.time() == datetime.min.time() else "%d/%m/%Y %H:%M:%S"
        )
    if isinstance(cell, date):
        return cell.strftime("%d/%m/%Y")
    return str(cell)


def read_rows(path: Path, model: type[BaseModel]) -> Iterator[Row]:
    """The file's rows with columns renamed to the model's fields."""
    fmt = _file_format(path)
    source = {"csv": _csv_rows, "jsonl": _jsonl_rows, "xlsx": _xlsx_rows}[fmt](path)
    fields = {_norm(name): name for name in model.model_fields}
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    checked_header = False
    for line, record in source:
        if "__error__" in record:
            yield Row(line, record)
            continue
        unknown = [c for c in record if _norm(c) not in fields]
        if unknown and (fmt != "jsonl" or not checked_header):
            raise FileFormatError(
                f"{path.name}: unknown column(s) {', '.join(map(repr, unknown))}; "
                f"expected: {', '.join(model.model_fields)} (see `databus template`)"
            )
        if not checked_header and fmt != "jsonl":
            missing = sorted(required - {fields[_norm(c)] for c in record})
            if missing:
                raise FileFormatError(
                    f"{path.name}: missing required column(s) {', '.join(missing)}"
                )
        checked_header = True
        yield Row(line, {fields[_norm(k)]: v for k, v in record.items() if _norm(k) in fields})


def _present(values: dict[str, Any]) -> dict[str, Any]:
    """Empty cells are absent values: a required one is then reported as missing."""
    return {
        k: v for k, v in values.items() if not (v is None or (isinstance(v, str) and not v.strip()))
    }


def _bad_bytes(values: dict[str, Any]) -> str | None:
    for name, value in values.items():
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return name
    return None


# A dataset's own checks beyond the model (e.g. the standardizer's): None when the
# record passes, else (field, reason_en, reason_vi).
RowCheck = Callable[[BaseModel], tuple[str, str, str] | None]


def validate_rows(
    rows: Iterator[Row], model: type[BaseModel], check: RowCheck | None = None
) -> Iterator[BaseModel | RejectedRow]:
    """Each row as a model, or as a rejection naming its line and first bad field."""
    for row in rows:
        if "__error__" in row.values:
            msg = str(row.values["__error__"])
            yield RejectedRow(row.line, "", msg, "dòng không phải đối tượng JSON", {})
            continue
        bad = _bad_bytes(row.values)
        if bad is not None:
            yield RejectedRow(
                row.line,
                bad,
                "contains bytes that are not UTF-8",
                _REASONS_VI["not_utf8"],
                _printable(row.values),
            )
            continue
        try:
            record = model.model_validate(_present(row.values))
        except PydanticValidationError as exc:
            err = exc.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            vi = _REASONS_VI.get(str(err["type"]).split("[")[0], "giá trị không hợp lệ")
            yield RejectedRow(row.line, field, err["msg"], vi, row.values)
            continue
        problem = check(record) if check is not None else None
        if problem is None:
            yield record
        else:
            field, reason_en, reason_vi = problem
            yield RejectedRow(row.line, field, reason_en, reason_vi, row.values)


def _printable(values: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        if isinstance(v, str)
        else v
        for k, v in values.items()
    }


def write_rejects(path: Path, rejects: Sequence[RejectedRow], columns: Sequence[str]) -> None:
    """A CSV the unit can fix and resubmit: line, field, reasons, then the row as sent."""
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(["line", "field", "reason_en", "reason_vi", *columns])
        for r in rejects:
            values = _printable(r.values)
            writer.writerow(
                [r.line, r.field, r.reason_en, r.reason_vi, *(values.get(c, "") for c in columns)]
            )


def _example(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is not None:
        args = [a for a in get_args(annotation) if a is not type(None)]
        return _example(args[0]) if args else ""
    if isinstance(annotation, type):
        if issubclass(annotation, Enum):
            return str(next(iter(annotation)).value)
        if issubclass(annotation, bool):
            return "true"
        if issubclass(annotation, int):
            return "1"
        if issubclass(annotation, float):
            return "1.5"
        if issubclass(annotation, datetime):
            return "2025-07-01T08:30:00+07:00"
        if issubclass(annotation, date):
            return "2025-07-01"
    return "..."


def template_rows(model: type[BaseModel]) -> tuple[list[str], list[str]]:
    """The expected header and one example row (required fields first in schema order)."""
    header = list(model.model_fields)
    example = []
    for name, info in model.model_fields.items():
        examples = info.examples or []
        value = str(examples[0]) if examples else _example(info.annotation)
        example.append(_NAME_HINTS.get(_suffix(name), value) if value == "..." else value)
    return header, example


# Text fields carry no type to go by; their names do (times as sources send them).
_NAME_HINTS = {
    "_at": "01/07/2025 08:30",
    "_date": "01/07/2025",
    "citizen_id": "075190000042",
    "_code": "CODE",
    "_id": "ID-0001",
    "_name": "Tên tiếng Việt (Unicode NFC)",
    "phone": "+84912345678",
}


def _suffix(name: str) -> str:
    return next((h for h in _NAME_HINTS if name.endswith(h)), name)


@dataclass(frozen=True)
class DropResult:
    rows: int
    published: int
    rejects: list[RejectedRow]
    reject_path: Path | None


def finish_drop(
    publisher: Publisher,
    dataset: Dataset,
    path: Path,
    rows: int,
    published: int,
    rejects: list[RejectedRow],
    reject_path: Path | None,
) -> DropResult:
    """Wait for the broker to take every published row, then write the reject file
    (beside ``path`` unless ``reject_path`` says where) when rows were refused."""
    publisher.flush()
    if rejects:
        reject_path = reject_path or path.with_name(f"{path.stem}.rejects.csv")
        write_rejects(reject_path, rejects, list(dataset.model.model_fields))
    return DropResult(rows, published, rejects, reject_path if rejects else None)


def publish_file(
    publisher: Publisher,
    dataset: Dataset,
    path: Path,
    *,
    check: RowCheck | None = None,
    reject_path: Path | None = None,
    on_row: Callable[[], None] | None = None,
) -> DropResult:
    """Publish the valid rows of a file as snapshot (``op = r``) events.

    The version of every row is the submission time in ms, so a corrected file
    submitted later supersedes the earlier one in every sink.
    """
    rows = list(read_rows(path, dataset.model))
    version = time.time_ns() // 1_000_000
    rejects: list[RejectedRow] = []
    published = 0
    for result in validate_rows(iter(rows), dataset.model, check):
        if isinstance(result, RejectedRow):
            rejects.append(result)
        else:
            publisher.publish(dataset, result, version=version, op=Op.READ)
            published += 1
        if on_row is not None:
            on_row()
    return finish_drop(publisher, dataset, path, len(rows), published, rejects, reject_path)
