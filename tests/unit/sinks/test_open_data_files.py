"""Pure parts of the open-data export: columns kept, values written, suppression,
the schedule."""

from __future__ import annotations

import dataclasses
import threading
from datetime import UTC, date, datetime

from schemas.catalog import get_dataset
from sinks.open_data import _aggregate, _csv_bytes, _csv_text, public_columns, run_schedule


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
    assert _csv_text(None) == ""
    assert _csv_text(True) == "true"
    assert _csv_text(0.1) == "0.1"
    assert _csv_text(datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2025-01-02T03:04:05.000Z"
    assert _csv_text(date(2025, 1, 2)) == "2025-01-02"
    assert _csv_bytes(["a", "b"], [("x,y", None)]) == b'a,b\r\n"x,y",\r\n'


def test_counts_below_the_minimum_are_blank_and_flagged() -> None:
    rows = [("75001",)] * 5 + [("75002",)] * 4 + [(None,)]
    cells, suppressed = _aggregate(["commune_code"], rows, 5)
    assert cells == [("", None, True), ("75001", 5, False), ("75002", None, True)]
    assert suppressed == 2


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
