"""Hostile files for the file drop: whatever bytes a unit hands in, the readers answer
with the project's own errors (a ``DatabusError``) or with rejected rows — never a
foreign exception. Arbitrary bytes, mutated valid files of every format and
arbitrary row values are fed to ``read_rows`` and ``validate_rows`` (with each
dataset's own check); the known bad files each get a message naming the problem."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import Workbook
from pydantic import BaseModel

from bus.errors import DatabusError
from databus.file_checks import row_check_for
from producers.declarations import _check as check_declaration
from producers.file_drop import (
    FileFormatError,
    RejectedRow,
    Row,
    read_rows,
    template_rows,
    validate_rows,
)
from schemas.catalog import DATASETS, DOSSIERS, Dataset

SUFFIXES = [".csv", ".jsonl", ".ndjson", ".xlsx"]
CHECKS = {ds.id: row_check_for(ds) for ds in DATASETS.values()}
# FILE_FUZZ_EXAMPLES=20000 for a long run; the default keeps `make test` fast
FUZZ = settings(
    max_examples=int(os.environ.get("FILE_FUZZ_EXAMPLES", "300")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _outcomes(path: Path, dataset: Dataset) -> list[BaseModel | RejectedRow]:
    """Read and validate ``path`` as ``dataset``; a DatabusError is an answer too."""
    try:
        rows = list(read_rows(path, dataset.model))
        return list(validate_rows(iter(rows), dataset.model, CHECKS[dataset.id]))
    except DatabusError as exc:
        assert str(exc).strip() and "\n" not in str(exc)  # one line the CLI can print
        return []


@pytest.fixture(scope="module")
def scratch() -> Iterator[Path]:
    with tempfile.TemporaryDirectory() as tmp:
        yield Path(tmp)


def _csv(header: list[str], rows: list[list[str]]) -> bytes:
    out = io.StringIO(newline="")
    csv.writer(out).writerows([header, *rows])
    return out.getvalue().encode()


def _jsonl(header: list[str], rows: list[list[str]]) -> bytes:
    lines = [json.dumps(dict(zip(header, r, strict=True)), ensure_ascii=False) for r in rows]
    return ("\n".join(lines) + "\n").encode()


def _xlsx(header: list[str], rows: list[list[str]]) -> bytes:
    book = Workbook()
    sheet = book.active
    assert sheet is not None
    for row in [header, *rows]:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


WRITERS = {".csv": _csv, ".jsonl": _jsonl, ".ndjson": _jsonl, ".xlsx": _xlsx}


def _valid_file(dataset: Dataset, suffix: str) -> bytes:
    header, example = template_rows(dataset.model)
    return WRITERS[suffix](header, [example, example])


VALID = {(ds.id, sfx): _valid_file(ds, sfx) for ds in DATASETS.values() for sfx in SUFFIXES}


@st.composite
def _mutated(draw: st.DrawFn, data: bytes) -> bytes:
    """``data`` with a few bytes flipped, cut, inserted or repeated."""
    out = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        at = draw(st.integers(0, max(len(out) - 1, 0)))
        kind = draw(st.sampled_from(["flip", "cut", "insert", "truncate", "repeat"]))
        if kind == "flip" and out:
            out[at] ^= draw(st.integers(1, 255))
        elif kind == "cut":
            del out[at : at + draw(st.integers(1, 64))]
        elif kind == "insert":
            out[at:at] = draw(st.binary(min_size=1, max_size=32))
        elif kind == "truncate":
            del out[at:]
        else:
            out[at:at] = out[at : at + draw(st.integers(1, 256))] * draw(st.integers(1, 50))
    return bytes(out)


@FUZZ
@given(
    data=st.binary(max_size=2048),
    dataset_id=st.sampled_from(sorted(DATASETS)),
    suffix=st.sampled_from(SUFFIXES),
)
def test_arbitrary_bytes_raise_only_databus_errors(
    scratch: Path, data: bytes, dataset_id: str, suffix: str
) -> None:
    path = scratch / f"drop{suffix}"
    path.write_bytes(data)
    _outcomes(path, DATASETS[dataset_id])


@FUZZ
@given(
    case=st.sampled_from(sorted(VALID)).flatmap(
        lambda key: st.tuples(st.just(key), _mutated(VALID[key]))
    )
)
def test_mutated_valid_files_raise_only_databus_errors(
    scratch: Path, case: tuple[tuple[str, str], bytes]
) -> None:
    (dataset_id, suffix), data = case
    path = scratch / f"mutated{suffix}"
    path.write_bytes(data)
    _outcomes(path, DATASETS[dataset_id])


_VALUES = st.one_of(
    st.none(),
    st.text(max_size=64),
    st.integers(),
    st.floats(),
    st.booleans(),
    st.lists(st.text(max_size=8), max_size=3),
    st.dictionaries(st.text(max_size=8), st.integers(), max_size=3),
    st.sampled_from(["01/07/2025", "2025-07-01T08:30:00+07:00", "31/02/2025", "\udcff", ""]),
)


@FUZZ
@given(dataset_id=st.sampled_from(sorted(DATASETS)), data=st.data())
def test_arbitrary_row_values_are_rows_or_rejections(dataset_id: str, data: st.DataObject) -> None:
    """Any value in any field (a JSON line can carry lists, numbers, nulls) becomes a
    model or a rejection, through the model and the dataset's own check."""
    dataset = DATASETS[dataset_id]
    header, example = template_rows(dataset.model)
    values: dict[str, Any] = dict(zip(header, example, strict=True))
    for name in data.draw(st.lists(st.sampled_from(header), max_size=4)):
        values[name] = data.draw(_VALUES)
    [result] = validate_rows(iter([Row(2, values)]), dataset.model, CHECKS[dataset_id])
    assert isinstance(result, BaseModel | RejectedRow)


@FUZZ
@given(
    dataset_id=st.text(max_size=40) | st.sampled_from(sorted(DATASETS)),
    unit=st.text(max_size=40),
    day=st.dates() | st.integers() | st.text(max_size=10),
    count=st.integers() | st.floats() | st.booleans() | st.text(max_size=5),
    source=st.text(max_size=40),
)
def test_declaration_arguments_raise_only_validation_errors(
    dataset_id: str, unit: str, day: Any, count: Any, source: str
) -> None:
    try:
        check_declaration(dataset_id, unit, day, count, source)
    except DatabusError as exc:
        assert str(exc).strip()  # a message the caller can show


# --- the known bad files, each with its message --------------------------------------


def _problem(path: Path, dataset: Dataset = DOSSIERS) -> str:
    with pytest.raises(FileFormatError) as caught:
        list(read_rows(path, dataset.model))
    message = str(caught.value)
    assert "\n" not in message
    return message


def _header() -> list[str]:
    return list(DOSSIERS.model.model_fields)


def _example() -> list[str]:
    return template_rows(DOSSIERS.model)[1]


def test_an_empty_xlsx_is_not_a_workbook(tmp_path: Path) -> None:
    path = tmp_path / "empty.xlsx"
    path.write_bytes(b"")
    assert "empty.xlsx: not a readable Excel workbook" in _problem(path)


def test_a_corrupt_zip_is_not_a_workbook(tmp_path: Path) -> None:
    data = _xlsx(_header(), [_example()])
    path = tmp_path / "corrupt.xlsx"
    path.write_bytes(data[: len(data) // 2])
    assert "corrupt.xlsx: not a readable Excel workbook" in _problem(path)
    path.write_bytes(b"PK\x03\x04" + b"\x00" * 200)
    assert "not a readable Excel workbook" in _problem(path)


def test_a_workbook_without_rows_says_so(tmp_path: Path) -> None:
    path = tmp_path / "blank.xlsx"
    path.write_bytes(_xlsx([], []))
    assert "blank.xlsx: empty file: no header row" in _problem(path)
    path.write_bytes(_xlsx(_header(), []))
    assert "blank.xlsx: no rows to publish" in _problem(path)


def test_a_csv_field_over_the_size_limit_names_its_line(tmp_path: Path) -> None:
    row = _example()
    row[1] = "x" * (csv.field_size_limit() + 1)  # 131,073 characters by default
    path = tmp_path / "long.csv"
    path.write_bytes(_csv(_header(), [_example(), row]))
    message = _problem(path)
    assert message.startswith("long.csv, line 3: a value longer than 131072 characters")


def test_an_empty_csv_has_no_header(tmp_path: Path) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    assert "empty.csv: empty file: no header row" in _problem(path)
    path.write_bytes(b"\xef\xbb\xbf\r\n")
    assert "no header row" in _problem(path)


def test_undecodable_bytes_in_the_header_say_so(tmp_path: Path) -> None:
    path = tmp_path / "latin1.csv"
    path.write_bytes(("tên," + ",".join(_header()) + "\n").encode("latin-1"))
    assert _problem(path) == (
        "latin1.csv, line 1: the header is not UTF-8 text"
        " (saved in another encoding? save it as CSV UTF-8)"
    )


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_utf16_file_is_not_utf8_text(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"unicode{suffix}"
    path.write_bytes(",".join(_header()).encode("utf-16"))
    assert "not UTF-8 text (it looks like UTF-16)" in _problem(path)


def test_a_json_lines_file_without_one_object_is_not_json_lines(tmp_path: Path) -> None:
    path = tmp_path / "array.jsonl"
    path.write_text(json.dumps([dict(zip(_header(), _example(), strict=True))], indent=2))
    message = _problem(path)
    assert message.startswith("array.jsonl: not JSON Lines, no line is a JSON object (line 1:")


def test_a_column_given_twice_is_named(tmp_path: Path) -> None:
    path = tmp_path / "twice.csv"
    path.write_bytes(_csv([*_header(), "Dossier ID"], [[*_example(), "x"]]))
    assert "twice.csv, line 1: column 'Dossier ID' appears twice" in _problem(path)


def test_many_unknown_columns_make_a_short_message(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    extra = [f"col{i}" + "y" * 500 for i in range(1000)]
    path.write_bytes(_csv([*_header(), *extra], [[*_example(), *["v"] * 1000]]))
    message = _problem(path)
    assert "and 995 more" in message
    assert len(message) < 1000


def test_a_directory_and_a_missing_file(tmp_path: Path) -> None:
    folder = tmp_path / "folder.csv"
    folder.mkdir()
    assert _problem(folder) == f"{folder}: is a directory, not a file"
    missing = tmp_path / "missing.jsonl"
    assert _problem(missing) == f"{missing}: no such file"


def test_an_unsupported_suffix(tmp_path: Path) -> None:
    path = tmp_path / "d.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0")
    assert "unsupported file type '.xls'" in _problem(path)


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("{not json", "not valid JSON: Expecting property name"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        ('{"dossier_id": ' + "9" * 5000 + "}", "not valid JSON: Exceeds the limit"),
        ("[1, 2]", "not a JSON object"),
        ('"text"', "not a JSON object"),
    ],
)
def test_bad_json_lines_are_rejected_rows(tmp_path: Path, line: str, reason: str) -> None:
    good = json.dumps(dict(zip(_header(), _example(), strict=True)))
    path = tmp_path / "d.ndjson"
    path.write_text(f"{good}\n{line}\n{good}\n", encoding="utf-8")
    results = list(validate_rows(read_rows(path, DOSSIERS.model), DOSSIERS.model))
    rejects = [r for r in results if isinstance(r, RejectedRow)]
    assert [r.line for r in rejects] == [2]
    assert reason in rejects[0].reason_en
    assert len(results) == 3


def test_a_json_object_whose_key_looks_like_a_marker_is_an_unknown_column(
    tmp_path: Path,
) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text('{"__error__": "x"}\n', encoding="utf-8")
    assert "unknown column(s) '__error__'" in _problem(path)


def test_a_line_separator_inside_a_json_string_is_not_a_line_break(tmp_path: Path) -> None:
    values = dict(zip(_header(), _example(), strict=True))
    values["procedure_name"] = "Cấp phép\u2028xây dựng"
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(values, ensure_ascii=False) + "\n", encoding="utf-8")
    [row] = read_rows(path, DOSSIERS.model)
    assert row.error is None
    assert row.values["procedure_name"] == "Cấp phép\u2028xây dựng"


def test_only_empty_lines_is_no_rows(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    path.write_text("\n\n  \n", encoding="utf-8")
    assert "d.jsonl: no rows to publish" in _problem(path)


def test_a_declaration_that_avro_cannot_carry_is_refused_before_sending() -> None:
    with pytest.raises(DatabusError, match="unit must be text"):
        check_declaration(DOSSIERS.id, "DNA\udcff", date(2025, 7, 1), 3, "manual")
    with pytest.raises(DatabusError, match="count must be a whole number"):
        check_declaration(DOSSIERS.id, "DNA.STP", date(2025, 7, 1), 2**63, "manual")


def test_a_workbook_renamed_csv_is_not_text(tmp_path: Path) -> None:
    path = tmp_path / "renamed.csv"
    path.write_bytes(_xlsx(_header(), [_example()]))
    assert "renamed.csv: not UTF-8 text (it holds NUL bytes" in _problem(path)
