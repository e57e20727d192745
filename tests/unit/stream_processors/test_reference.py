"""Reference data: loading, validation errors, and the admin-unit crosswalk by event time."""

from __future__ import annotations

import dataclasses
import shutil
import unicodedata
from datetime import UTC, datetime
from pathlib import Path

import pytest

from bus.errors import ConfigError
from schemas.domain.reference import (
    AdminUnitResolution,
    ReferenceData,
    default_data_dir,
    load_reference,
)

REF = load_reference()
BEFORE_REFORM = datetime(2024, 11, 5, 2, 0, tzinfo=UTC)
AFTER_REFORM = datetime(2025, 8, 1, 2, 0, tzinfo=UTC)


def resolve(code: str, at: datetime, ref: ReferenceData = REF) -> AdminUnitResolution:
    result = ref.resolve_admin_unit(code, at)
    assert result is not None
    return result


def test_shipped_files_load() -> None:
    current = [e for e in REF.crosswalk.values() if e.old_code == e.new_code]
    old = [e for e in REF.crosswalk.values() if e.old_code != e.new_code]
    assert len(current) == 40
    assert len(old) == 60
    assert 20 <= len(REF.receiving_units) <= 25
    assert {u.province_code for u in REF.receiving_units.values()} == {"75"}
    assert REF.receiving_unit("DNA.SYT") is not None
    assert REF.receiving_units["DNA.SYT"].name == "Sở Y tế"
    assert REF.receiving_unit("DNA.NOPE") is None


def test_shipped_data_is_labelled_sample() -> None:
    readme = (default_data_dir() / "README.md").read_text(encoding="utf-8")
    assert "SAMPLE" in readme
    assert "19/2025/QĐ-TTg" in readme


def test_old_and_new_codes_never_overlap() -> None:
    current = {e.new_code for e in REF.crosswalk.values()}
    old = {e.old_code for e in REF.crosswalk.values() if e.old_code != e.new_code}
    assert not current & old


def test_current_code_resolves_to_itself() -> None:
    result = resolve("75001", AFTER_REFORM)
    assert result == AdminUnitResolution("75001", "75001", "Phường Biên Hòa", False, False)
    assert result.flags == ()


def test_current_code_on_a_backfilled_old_dossier_is_accepted() -> None:
    assert resolve("75001", BEFORE_REFORM).flags == ()


def test_old_code_before_cut_over_is_mapped() -> None:
    result = resolve("25993", BEFORE_REFORM)
    assert (result.code, result.source_code, result.remapped, result.outdated) == (
        "75001",
        "25993",
        True,
        False,
    )
    assert result.flags == ("admin_unit_remapped",)


def test_old_code_after_cut_over_is_mapped_and_outdated() -> None:
    result = resolve("25993", AFTER_REFORM)
    assert result.code == "75001"
    assert result.outdated
    assert result.flags == ("admin_unit_remapped", "admin_unit_code_outdated")


def test_cut_over_is_local_midnight() -> None:
    # 2025-06-30 23:30 in Đồng Nai is still before the reform; 00:00 on 1 July is after,
    # though both instants fall on 30 June in UTC.
    assert not resolve("25441", datetime(2025, 6, 30, 16, 30, tzinfo=UTC)).outdated
    assert resolve("25441", datetime(2025, 6, 30, 17, 0, tzinfo=UTC)).outdated


@pytest.mark.parametrize("code", ["99999", "", "2599", "259930", "DNA"])
def test_unknown_code(code: str) -> None:
    assert REF.resolve_admin_unit(code, AFTER_REFORM) is None


def test_reference_data_is_read_only() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        REF.crosswalk = {}  # type: ignore[misc]
    with pytest.raises(TypeError):
        REF.crosswalk["12345"] = REF.crosswalk["75001"]  # type: ignore[index]


# --- data files with mistakes ------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    for name in ("cccd_province_codes.csv", "receiving_units.csv", "admin_units_crosswalk.csv"):
        shutil.copy(default_data_dir() / name, tmp_path / name)
    return tmp_path


def append(path: Path, line: str) -> int:
    """Append a row; return its line number."""
    text = path.read_text(encoding="utf-8")
    path.write_text(text + line + "\n", encoding="utf-8")
    return text.count("\n") + 1


def test_copied_files_load(data_dir: Path) -> None:
    assert load_reference(data_dir) == REF


def test_chained_remaps_resolve_to_the_current_unit(data_dir: Path) -> None:
    # 11111 was merged into 25993 in 2019, which the 2025 reform merged into 75001.
    append(data_dir / "admin_units_crosswalk.csv", "11111,25993,Phường cũ,2019-01-01")
    ref = load_reference(data_dir)
    result = resolve("11111", datetime(2018, 5, 1, tzinfo=UTC), ref)
    assert (result.code, result.outdated) == ("75001", False)
    assert resolve("11111", datetime(2020, 5, 1, tzinfo=UTC), ref).outdated


@pytest.mark.parametrize(
    ("file", "row", "field"),
    [
        ("cccd_province_codes.csv", "7A9,Nowhere", "code"),
        ("cccd_province_codes.csv", "075,Đồng Nai again", "code"),
        ("cccd_province_codes.csv", "098,", "name"),
        ("cccd_province_codes.csv", "098", "name"),
        ("receiving_units.csv", "DNA.SYT,Sở Y tế,health,75", "code"),
        ("receiving_units.csv", "DNA SYT2,Sở Y tế,health,75", "code"),
        ("receiving_units.csv", "DNA.X,Đơn vị X,Health,75", "sector"),
        ("receiving_units.csv", "DNA.X,Đơn vị X,health,075", "province_code"),
        ("admin_units_crosswalk.csv", "2599,75001,Phường Biên Hòa,2025-07-01", "old_code"),
        ("admin_units_crosswalk.csv", "25993,75001,Phường Biên Hòa,2025-07-01", "old_code"),
        ("admin_units_crosswalk.csv", "11111,7500A,Phường Biên Hòa,2025-07-01", "new_code"),
        ("admin_units_crosswalk.csv", "11111,75999,Phường ma,2025-07-01", "new_code"),
        ("admin_units_crosswalk.csv", "11111,75001,Phường Biên Hòa,01/07/2025", "effective_from"),
        ("admin_units_crosswalk.csv", "11111,75001,Phường Biên Hòa,", "effective_from"),
        ("admin_units_crosswalk.csv", "11111,75001,,2025-07-01", "name_new"),
    ],
)
def test_bad_row_names_file_line_and_field(data_dir: Path, file: str, row: str, field: str) -> None:
    line = append(data_dir / file, row)
    with pytest.raises(ConfigError) as info:
        load_reference(data_dir)
    message = str(info.value)
    assert f"{file}:{line}:" in message
    assert repr(field) in message


def test_too_many_fields(data_dir: Path) -> None:
    line = append(data_dir / "cccd_province_codes.csv", "098,X,extra")
    with pytest.raises(ConfigError, match=rf"cccd_province_codes.csv:{line}: too many fields"):
        load_reference(data_dir)


def test_wrong_header(data_dir: Path) -> None:
    path = data_dir / "receiving_units.csv"
    path.write_text("ma,ten\nDNA.SYT,Sở Y tế\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"receiving_units.csv:1: header"):
        load_reference(data_dir)


def test_cycle_is_reported(data_dir: Path) -> None:
    append(data_dir / "admin_units_crosswalk.csv", "11111,22222,A,2020-01-01")
    append(data_dir / "admin_units_crosswalk.csv", "22222,11111,B,2020-01-01")
    with pytest.raises(ConfigError, match="cycle"):
        load_reference(data_dir)


def test_missing_file(data_dir: Path) -> None:
    (data_dir / "receiving_units.csv").unlink()
    with pytest.raises(ConfigError, match=r"receiving_units\.csv"):
        load_reference(data_dir)


def test_not_utf8(data_dir: Path) -> None:
    # "Sở Y tế" as a legacy 8-bit editor saves it.
    (data_dir / "receiving_units.csv").write_bytes(
        b"code,name,sector,province_code\nDNA.SYT,S\xf4 Y t\xea,health,75\n"
    )
    with pytest.raises(ConfigError, match="UTF-8"):
        load_reference(data_dir)


def test_bom_and_nfd_names_are_accepted(data_dir: Path) -> None:
    path = data_dir / "receiving_units.csv"
    path.write_text(
        "\ufeffcode,name,sector,province_code\n"
        + unicodedata.normalize("NFD", "DNA.SYT,Sở Y tế,health,75\n"),
        encoding="utf-8",
    )
    assert load_reference(data_dir).receiving_units["DNA.SYT"].name == "Sở Y tế"
