"""CCCD structure, agreement with the record, CMND, and the id builder for simulators."""

from __future__ import annotations

from datetime import date

import pytest

from schemas.domain.citizen_id import (
    CitizenId,
    CitizenIdRejection,
    check_citizen_id,
    make_citizen_id,
)
from schemas.domain.reference import load_reference

PROVINCES = frozenset(load_reference().cccd_province_codes)


def ok(value: str, **kwargs: object) -> CitizenId:
    result = check_citizen_id(value, PROVINCES, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, CitizenId), result
    return result


def rejected(value: str, **kwargs: object) -> CitizenIdRejection:
    result = check_citizen_id(value, PROVINCES, **kwargs)  # type: ignore[arg-type]
    assert isinstance(result, CitizenIdRejection), result
    if value:  # never the id, nor its province part
        assert value not in result.detail and value[:3] not in result.detail
    return result


@pytest.mark.parametrize(
    ("province", "year", "sex", "serial", "expected"),
    [
        ("075", 1990, "FEMALE", 42, "075190000042"),
        ("079", 1985, "MALE", 123456, "079085123456"),
        ("001", 2003, "MALE", 7, "001203000007"),
        ("074", 2010, "FEMALE", 999_999, "074310999999"),
        ("070", 2100, "male", 1, "070400000001"),
    ],
)
def test_make_citizen_id(province: str, year: int, sex: str, serial: int, expected: str) -> None:
    assert make_citizen_id(province, year, sex, serial) == expected


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (("75", 1990, "MALE", 1), "province_code"),
        (("07A", 1990, "MALE", 1), "province_code"),
        (("075", 1899, "MALE", 1), "birth_year"),
        (("075", 2400, "MALE", 1), "birth_year"),
        (("075", 1990, "X", 1), "sex"),
        (("075", 1990, "MALE", 1_000_000), "serial"),
        (("075", 1990, "MALE", -1), "serial"),
    ],
)
def test_make_citizen_id_refuses_bad_arguments(args: tuple[str, int, str, int], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        make_citizen_id(*args)


def test_valid_cccd_with_matching_record() -> None:
    value = make_citizen_id("075", 1990, "FEMALE", 42)
    result = ok(value, birth_date=date(1990, 6, 15), sex="FEMALE", today=date(2025, 2, 13))
    assert (result.value, result.kind, result.birth_year, result.sex) == (
        value,
        "cccd",
        1990,
        "FEMALE",
    )
    assert result.flags == ()


@pytest.mark.parametrize(
    ("value", "year", "sex"),
    [
        ("079085123456", 1985, "MALE"),
        ("001103000001", 1903, "FEMALE"),
        ("046204000001", 2004, "MALE"),
        ("077399000001", 2099, "FEMALE"),
    ],
)
def test_century_and_sex_digit(value: str, year: int, sex: str) -> None:
    result = ok(value)
    assert (result.birth_year, result.sex) == (year, sex)


def test_record_without_birth_date_or_sex_is_not_compared() -> None:
    assert ok(make_citizen_id("075", 1990, "MALE", 1)).kind == "cccd"


@pytest.mark.parametrize("code", ["000", "003", "099", "063", "100"])
def test_unknown_province_code_is_rejected(code: str) -> None:
    assert rejected(f"{code}190000042").reason == "invalid_citizen_id"


@pytest.mark.parametrize(
    "value",
    ["07519000004", "0751900000421", "", "0751", "12345678", "1234567890"],
)
def test_wrong_length_is_rejected(value: str) -> None:
    assert rejected(value).reason == "invalid_citizen_id"


@pytest.mark.parametrize(
    "value",
    [
        "07519000004A",
        "075-190-000042",
        "０７５１９００００４２",  # full-width digits
        "٠٧٥١٩٠٠٠٠٠٤٢",  # Arabic-Indic digits pass str.isdigit()
        "+75190000042",
    ],
)
def test_non_digits_are_rejected(value: str) -> None:
    assert rejected(value).reason == "invalid_citizen_id"


def test_grouping_spaces_are_removed_and_flagged() -> None:
    result = ok("075 190 000042")
    assert result.value == "075190000042"
    assert result.flags == ("citizen_id_spaces_removed",)


def test_sex_mismatch() -> None:
    value = make_citizen_id("075", 1990, "FEMALE", 42)
    assert rejected(value, sex="MALE").reason == "citizen_id_mismatch"


def test_birth_year_mismatch() -> None:
    value = make_citizen_id("075", 1990, "MALE", 42)
    assert rejected(value, birth_date=date(1991, 1, 1)).reason == "citizen_id_mismatch"


def test_century_mismatch() -> None:
    # Digit 2 = 2000s: "05" is 2005, not 1905.
    assert rejected("075205000001", birth_date=date(1905, 3, 1)).reason == "citizen_id_mismatch"


def test_future_birth_year_is_rejected() -> None:
    value = make_citizen_id("075", 2030, "MALE", 1)
    assert rejected(value, today=date(2025, 2, 13)).reason == "invalid_citizen_id"


def test_cmnd_is_accepted_and_flagged() -> None:
    result = ok("271234567", birth_date=date(1970, 1, 1), sex="MALE")
    assert (result.kind, result.birth_year, result.sex) == ("cmnd", None, None)
    assert result.flags == ("legacy_cmnd_id",)


def test_leading_zeros_are_kept() -> None:
    assert ok("001190000001").value == "001190000001"


def test_repr_never_shows_the_id() -> None:
    value = make_citizen_id("079", 1985, "MALE", 123456)
    assert value not in repr(ok(value))
    assert value not in str(ok(value))


def test_official_province_codes_file() -> None:
    names = load_reference().cccd_province_codes
    assert len(names) == 63
    assert names["001"] == "Hà Nội"
    assert names["079"] == "Hồ Chí Minh"
    assert names["075"] == "Đồng Nai"
    assert names["074"] == "Bình Dương"
    assert names["077"] == "Bà Rịa - Vũng Tàu"
    assert names["070"] == "Bình Phước"
    assert names["046"] == "Thừa Thiên Huế"
    assert names["096"] == "Cà Mau"
    assert "003" not in names
