"""File drop: CSV / JSON Lines / Excel rows → Dossier models or rejections with line,
field and bilingual reason; whole-file problems → FileFormatError; reject-file loop."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, cast

import pytest
from openpyxl import Workbook

from databus.file_checks import row_check_for
from producers.file_drop import (
    FileFormatError,
    RejectedRow,
    read_rows,
    template_rows,
    validate_rows,
    write_rejects,
)
from schemas.catalog import DOSSIERS
from schemas.domain.citizen_id import make_citizen_id
from schemas.models.public_service import Dossier

FIELDS = list(Dossier.model_fields)
UNIT = "DNA.STP"  # schemas/data/receiving_units.csv
COMMUNE = "75001"  # schemas/data/admin_units_crosswalk.csv


def good(serial: int) -> dict[str, str]:
    return {
        "dossier_id": f"HS-{serial:04d}",
        "dossier_code": f"000.00.{serial:02d}.H75",
        "procedure_code": "1.001234",
        "procedure_name": "Cấp giấy phép xây dựng",
        "receiving_unit_code": UNIT,
        "admin_unit_code": COMMUNE,
        "applicant_citizen_id": make_citizen_id("075", 1990, "FEMALE", serial),
        "applicant_name": "Nguyễn Thị Hoa",
        "applicant_birth_date": "15/03/1990",
        "applicant_sex": "FEMALE",
        "status": "RECEIVED",
        "channel": "ONLINE",
        "received_at": "01/07/2025 08:30",
        "due_at": "10/07/2025",
        "completed_at": "",
    }


# index in ROWS → the field each bad row must be rejected on
ROWS: list[dict[str, str]] = [
    good(1),
    {**good(2), "received_at": "31/02/2025"},  # impossible date
    good(3),
    {**good(4), "applicant_name": ""},  # required field left empty
    {**good(5), "applicant_citizen_id": "07519000"},  # not a citizen id
    {**good(6), "status": "DONE"},  # outside the code list
    good(7),
]
BAD = {1: "received_at", 3: "applicant_name", 4: "applicant_citizen_id", 5: "status"}
GOOD_IDS = [r["dossier_id"] for i, r in enumerate(ROWS) if i not in BAD]


def write_csv(path: Path, rows: list[dict[str, Any]], header: list[str] = FIELDS) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows([[r.get(f, "") for f in FIELDS] for r in rows])
    return path


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8"
    )
    return path


def write_xlsx(path: Path, rows: list[dict[str, Any]], header: list[str] = FIELDS) -> Path:
    wb = Workbook()
    ws = wb.active
    ws.append(header)
    for r in rows:
        ws.append([r.get(f) or None for f in FIELDS])
    wb.save(path)
    return path


def run(path: Path) -> tuple[list[Dossier], list[RejectedRow]]:
    results = list(validate_rows(read_rows(path, Dossier), Dossier, row_check_for(DOSSIERS)))
    accepted = [r for r in results if not isinstance(r, RejectedRow)]
    assert all(isinstance(r, Dossier) for r in accepted)
    return cast(list[Dossier], accepted), [r for r in results if isinstance(r, RejectedRow)]


def assert_rejections(rejects: list[RejectedRow], first_line: int) -> None:
    assert [(r.line, r.field) for r in rejects] == [(first_line + i, f) for i, f in BAD.items()]
    for r in rejects:
        assert r.reason_en.strip() and r.reason_vi.strip()


# (writer, line of the first data row)
FORMATS = {"csv": (write_csv, 2), "jsonl": (write_jsonl, 1), "xlsx": (write_xlsx, 2)}


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_format_splits_good_and_bad_rows_the_same_way(tmp_path: Path, fmt: str) -> None:
    writer, first_line = FORMATS[fmt]
    accepted, rejects = run(writer(tmp_path / f"dossiers.{fmt}", ROWS))
    assert [d.dossier_id for d in accepted] == GOOD_IDS
    assert_rejections(rejects, first_line)
    assert accepted[0] == Dossier.model_validate({k: v for k, v in ROWS[0].items() if v != ""})


def test_rejection_reasons_speak_both_languages(tmp_path: Path) -> None:
    _, rejects = run(write_csv(tmp_path / "d.csv", ROWS))
    by_field = {r.field: r for r in rejects}
    assert "31/02/2025" in by_field["received_at"].reason_en
    assert by_field["applicant_name"].reason_vi == "thiếu trường bắt buộc"
    assert "citizen id" in by_field["applicant_citizen_id"].reason_en
    assert by_field["status"].reason_vi == "giá trị không thuộc danh mục cho phép"
    assert by_field["status"].values["status"] == "DONE"  # the row as sent, to fix


def test_non_utf8_bytes_reject_only_their_row(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "d.csv", [good(1), good(2), good(3)])
    raw = path.read_bytes()
    marker = "Nguyễn Thị Hoa".encode()
    start = raw.index(marker, raw.index(b"HS-0002"))
    path.write_bytes(raw[:start] + b"\xff\xfe" + raw[start + len(marker) :])
    accepted, rejects = run(path)
    assert [d.dossier_id for d in accepted] == ["HS-0001", "HS-0003"]
    [reject] = rejects
    assert (reject.line, reject.field) == (3, "applicant_name")
    assert "UTF-8" in reject.reason_en and "UTF-8" in reject.reason_vi


def test_excel_numbers_and_dates_are_read_as_the_text_the_unit_sees(tmp_path: Path) -> None:
    from datetime import datetime

    wb = Workbook()
    ws = wb.active
    ws.append(FIELDS)
    row = {**good(1), "admin_unit_code": 75001, "received_at": datetime(2025, 7, 1, 8, 30)}
    ws.append([row.get(f) or None for f in FIELDS])
    # a citizen id typed as a number loses its leading zero: refused on that field
    ws.append([{**good(2), "applicant_citizen_id": 75190000002}.get(f) or None for f in FIELDS])
    wb.save(tmp_path / "d.xlsx")
    accepted, rejects = run(tmp_path / "d.xlsx")
    [dossier] = accepted
    assert (dossier.admin_unit_code, dossier.received_at) == ("75001", "01/07/2025 08:30:00")
    assert [(r.line, r.field) for r in rejects] == [(3, "applicant_citizen_id")]


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_an_extra_column_stops_the_file_naming_it(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow([*FIELDS, "ghi_chu"])
            w.writerow([*(good(1)[f] for f in FIELDS), "x"])
    else:
        wb = Workbook()
        ws = wb.active
        ws.append([*FIELDS, "ghi_chu"])
        ws.append([*(good(1)[f] or None for f in FIELDS), "x"])
        wb.save(path)
    with pytest.raises(FileFormatError, match="ghi_chu"):
        list(read_rows(path, Dossier))


def test_an_extra_key_in_json_lines_stops_the_file_naming_it(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "d.jsonl", [{**good(1), "ghi_chu": "x"}])
    with pytest.raises(FileFormatError, match="ghi_chu"):
        list(read_rows(path, Dossier))


@pytest.mark.parametrize("fmt", ["csv", "xlsx"])
def test_a_missing_required_column_stops_the_file_naming_it(tmp_path: Path, fmt: str) -> None:
    header = [f for f in FIELDS if f != "status"]
    rows = [{k: v for k, v in good(1).items() if k != "status"}]
    path = tmp_path / f"d.{fmt}"
    if fmt == "csv":
        with path.open("w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(header)
            w.writerows([[r[f] for f in header] for r in rows])
    else:
        wb = Workbook()
        ws = wb.active
        ws.append(header)
        ws.append([rows[0][f] or None for f in header])
        wb.save(path)
    with pytest.raises(FileFormatError, match="status"):
        list(read_rows(path, Dossier))


def test_a_missing_optional_column_is_fine(tmp_path: Path) -> None:
    header = [f for f in FIELDS if f != "completed_at"]
    path = tmp_path / "d.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerow([good(1)[f] for f in header])
    accepted, rejects = run(path)
    assert len(accepted) == 1 and not rejects


def test_an_unsupported_file_type_is_a_file_error(tmp_path: Path) -> None:
    path = tmp_path / "d.xls"
    path.write_bytes(b"\xd0\xcf\x11\xe0")
    with pytest.raises(FileFormatError, match=r"\.xls"):
        list(read_rows(path, Dossier))


def test_column_names_ignore_case_spaces_and_underscores(tmp_path: Path) -> None:
    header = [" ".join(w.capitalize() for w in f.split("_")) for f in FIELDS]
    header[0] = "  DOSSIER_ID "
    assert header[1] == "Dossier Code"
    path = tmp_path / "d.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerow([good(1)[f] for f in FIELDS])
    [row] = list(read_rows(path, Dossier))
    assert list(row.values) == FIELDS
    accepted, rejects = run(path)
    assert [d.dossier_id for d in accepted] == ["HS-0001"] and not rejects


def test_reject_file_can_be_fixed_and_resubmitted(tmp_path: Path) -> None:
    _, rejects = run(write_csv(tmp_path / "d.csv", ROWS))
    reject_path = tmp_path / "d.rejects.csv"
    write_rejects(reject_path, rejects, FIELDS)

    with reject_path.open(newline="", encoding="utf-8") as fh:
        table = list(csv.reader(fh))
    assert table[0] == ["line", "field", "reason_en", "reason_vi", *FIELDS]
    assert [(int(r[0]), r[1]) for r in table[1:]] == [(i + 2, f) for i, f in BAD.items()]
    assert all(r[2] and r[3] for r in table[1:])

    # the unit fixes the named cells, drops the four explanation columns and resubmits
    fixes = {
        "received_at": "01/07/2025 09:00",
        "applicant_name": "Trần Văn Bình",
        "applicant_citizen_id": make_citizen_id("075", 1990, "FEMALE", 5),
        "status": "IN_PROGRESS",
    }
    fixed = []
    for r in table[1:]:
        values = dict(zip(FIELDS, r[4:], strict=True))
        values[r[1]] = fixes[r[1]]
        fixed.append(values)
    resubmitted = tmp_path / "d.fixed.csv"
    with resubmitted.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(table[0][4:])
        w.writerows([[v[f] for f in FIELDS] for v in fixed])
    accepted, again = run(resubmitted)
    assert not again
    assert [d.dossier_id for d in accepted] == [ROWS[i]["dossier_id"] for i in BAD]


def test_template_header_and_example_row_validate(tmp_path: Path) -> None:
    header, example = template_rows(Dossier)
    assert header == FIELDS
    assert len(example) == len(header)
    path = tmp_path / "template.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, example])
    [result] = list(validate_rows(read_rows(path, Dossier), Dossier))
    assert isinstance(result, Dossier)


def test_dossier_template_row_passes_the_dossier_check(tmp_path: Path) -> None:
    header, example = template_rows(Dossier)
    path = tmp_path / "template.csv"
    with path.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows([header, example])
    results = list(validate_rows(read_rows(path, Dossier), Dossier, row_check_for(DOSSIERS)))
    assert [type(r) for r in results] == [Dossier], results
