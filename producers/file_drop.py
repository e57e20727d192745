"""File drop: units without an integrated system hand in CSV, JSON Lines or Excel files.

Rows are matched to the dataset model's fields by column name (case and spaces
ignored). Each row becomes a model or a ``RejectedRow`` with its line number, the
field at fault and the reason in English and Vietnamese, so the unit can fix the
file and resubmit. Problems with the file as a whole — unknown or missing
columns, an unreadable file — stop before anything is published.
"""

from __future__ import annotations

import codecs
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
from schemas.models.common import Op

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
    error: str | None = None  # the line is not a record at all (JSON Lines)


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


def _read(path: Path) -> bytes:
    """The file's bytes, or a file error saying why there are none."""
    try:
        if path.is_dir():
            raise FileFormatError(f"{path}: is a directory, not a file")
        return path.read_bytes()
    except FileNotFoundError as exc:
        raise FileFormatError(f"{path}: no such file") from exc
    except OSError as exc:
        raise FileFormatError(f"{path}: cannot be read ({exc.strerror or exc})") from exc


def _text(path: Path) -> str:
    """A text file's content; bytes that are not UTF-8 kept as surrogates (their rows
    are then refused one by one). UTF-16, which spreadsheets offer as "Unicode
    text", is a file error: every row would be refused."""
    data = _read(path)
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise FileFormatError(
            f"{path.name}: not UTF-8 text (it looks like UTF-16); save it as UTF-8"
        )
    if b"\x00" in data[:4096]:
        raise FileFormatError(
            f"{path.name}: not UTF-8 text (it holds NUL bytes: UTF-16 or not a text file)"
        )
    return data.decode("utf-8", errors="surrogateescape")


def _names(names: Sequence[str], limit: int = 5) -> str:
    """Column names for a message: quoted, each cut short, at most ``limit`` of them."""
    shown = [repr(n if len(n) <= 40 else n[:40] + "…") for n in names[:limit]]
    more = len(names) - limit
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _check_header(path: Path, header: Sequence[str], model: type[BaseModel]) -> None:
    """A tabular file's header names each of the model's required fields once and
    nothing the model does not know (case, spaces and underscores ignored)."""
    if not any(h.strip() for h in header):
        raise FileFormatError(f"{path.name}: empty file: no header row naming the columns")
    if _bad_bytes({"header": "".join(header)}) is not None:
        raise FileFormatError(
            f"{path.name}, line 1: the header is not UTF-8 text"
            " (saved in another encoding? save it as CSV UTF-8)"
        )
    fields = {_norm(name): name for name in model.model_fields}
    seen: dict[str, str] = {}
    for name in header:
        if _norm(name) in seen:
            raise FileFormatError(
                f"{path.name}, line 1: column {_names([name])} appears twice"
                f" (as {_names([seen[_norm(name)]])} too)"
            )
        seen[_norm(name)] = name
    unknown = [c for c in header if _norm(c) not in fields]
    if unknown:
        raise FileFormatError(
            f"{path.name}: unknown column(s) {_names(unknown)}; "
            f"expected: {', '.join(model.model_fields)} (see `databus template`)"
        )
    required = {n for n, f in model.model_fields.items() if f.is_required()}
    missing = sorted(required - {fields[n] for n in seen})
    if missing:
        raise FileFormatError(f"{path.name}: missing required column(s) {', '.join(missing)}")


def _csv_problem(exc: csv.Error) -> str:
    text = str(exc)
    if "field larger than field limit" in text:
        return f"a value longer than {csv.field_size_limit()} characters"
    return f"not readable as CSV ({text})"


def _csv_rows(path: Path, model: type[BaseModel]) -> Iterator[tuple[int, dict[str, Any]]]:
    # surrogateescape keeps the file readable past bad bytes; each row that holds
    # one is then refused with its line, instead of failing the whole file.
    text = _text(path).removeprefix("\ufeff")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    records: list[tuple[int, dict[str | None, Any]]] = []
    try:
        _check_header(path, reader.fieldnames or [], model)
        records.extend((reader.line_num, record) for record in reader)
    except csv.Error as exc:
        # line_num counts the lines read before the one the reader stopped in
        line = reader.line_num + 1
        raise FileFormatError(f"{path.name}, line {line}: {_csv_problem(exc)}") from exc
    for line, record in records:
        if None in record:
            raise FileFormatError(f"{path.name}, line {line}: more values than columns")
        yield line, {k: v for k, v in record.items() if k is not None}


def _jsonl_rows(path: Path, _model: type[BaseModel]) -> Iterator[tuple[int, dict[str, Any] | str]]:
    raw = _text(path)
    # split on newlines only: JSON text may hold U+2028 and other line breaks unescaped
    for number, line in enumerate(raw.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, f"not valid JSON: {exc.msg} (column {exc.colno})"
            continue
        except RecursionError:
            yield number, "not a JSON object: nested too deeply"
            continue
        except ValueError as exc:  # e.g. an integer of more than 4300 digits
            yield number, f"not valid JSON: {exc}"
            continue
        yield number, value if isinstance(value, dict) else "not a JSON object"


def _xlsx_rows(path: Path, model: type[BaseModel]) -> Iterator[tuple[int, dict[str, Any]]]:
    from openpyxl import load_workbook

    data = _read(path)
    # openpyxl raises whatever its zip, XML and cell parsers raise (BadZipFile,
    # KeyError, lxml errors, ValueError, ...): any of them means the workbook is unreadable.
    try:
        book = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    except Exception as exc:
        raise FileFormatError(f"{path.name}: not a readable Excel workbook ({_why(exc)})") from exc
    try:
        if not book.worksheets:
            raise FileFormatError(f"{path.name}: the workbook has no worksheet")
        number = 1
        try:
            rows = book.worksheets[0].iter_rows(values_only=True)
            header = [_header_text(h) for h in next(rows, ())]
        except Exception as exc:
            raise FileFormatError(
                f"{path.name}, line 1: not a readable Excel sheet ({_why(exc)})"
            ) from exc
        _check_header(path, [h for h in header if h], model)
        while True:
            number += 1
            try:
                cells = next(rows, None)
                if cells is None:
                    return
                if all(c is None for c in cells):
                    continue
                values = {h: _cell_text(c) for h, c in zip(header, cells, strict=False) if h}
            except Exception as exc:
                raise FileFormatError(
                    f"{path.name}, line {number}: not a readable Excel row ({_why(exc)})"
                ) from exc
            yield number, values
    finally:
        book.close()


def _why(exc: Exception) -> str:
    text = " ".join(str(exc).split())[:200]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _header_text(cell: Any) -> str:
    return "" if cell is None else str(cell).strip()


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
    """The file's rows with columns renamed to the model's fields.

    Raises ``FileFormatError`` (and nothing else) when the file as a whole cannot be
    read as the dataset: missing, a directory, not the format its name says, no or
    wrong header, no rows at all.
    """
    fmt = _file_format(path)
    readers = {"csv": _csv_rows, "jsonl": _jsonl_rows, "xlsx": _xlsx_rows}
    source: Iterator[tuple[int, dict[str, Any] | str]] = readers[fmt](path, model)
    fields = {_norm(name): name for name in model.model_fields}
    any_row = any_record = False
    first_error: tuple[int, str] | None = None
    for line, record in source:
        if isinstance(record, str):
            yield Row(line, {}, error=record)
            any_row = True
            first_error = first_error or (line, record)
            continue
        # CSV and Excel headers were checked whole; JSON Lines by its first object
        unknown = [c for c in record if _norm(c) not in fields]
        if unknown and fmt == "jsonl" and not any_row:
            raise FileFormatError(
                f"{path.name}, line {line}: unknown column(s) {_names(unknown)}; "
                f"expected: {', '.join(model.model_fields)} (see `databus template`)"
            )
        any_row = any_record = True
        yield Row(line, {fields[_norm(k)]: v for k, v in record.items() if _norm(k) in fields})
    if not any_row:
        raise FileFormatError(f"{path.name}: no rows to publish (the file holds no records)")
    if first_error is not None and not any_record:
        line, problem = first_error
        raise FileFormatError(
            f"{path.name}: not JSON Lines, no line is a JSON object (line {line}: {problem})"
        )


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
        if row.error is not None:
            yield RejectedRow(row.line, "", row.error, "dòng không phải đối tượng JSON", {})
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
