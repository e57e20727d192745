"""Citizen identity numbers: structure of the CCCD and its agreement with the record.

A CCCD has 12 digits: the 3-digit code of the province where the birth was registered,
one digit for century and sex (0/1 = 1900s male/female, 2/3 = 2000s, 4/5 = 2100s, ...),
the last two digits of the birth year, and 6 digits without structure. There is no check
digit, so structure and agreement with the record's birth year and sex are all we can
verify. The old identity card (CMND) has 9 digits and no structure we can check: it is
accepted and flagged ``legacy_cmnd_id`` so quality reports can count the stragglers.

Ids are personal data: no message, repr or exception produced here contains an id or any
part of one, so callers may log results freely.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

__all__ = [
    "CitizenId",
    "CitizenIdRejection",
    "check_citizen_id",
    "make_citizen_id",
]

Sex = Literal["MALE", "FEMALE"]

_FIRST_CENTURY = 1900
_CENTURIES = 10  # digits 0-9 cover 1900-2399


@dataclass(frozen=True, slots=True)
class CitizenId:
    # repr=False: a result that ends up in a log line or a test failure must not print it.
    value: str = field(repr=False)
    kind: Literal["cccd", "cmnd"]
    birth_year: int | None = None
    sex: Sex | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class CitizenIdRejection:
    reason: str  # invalid_citizen_id | citizen_id_mismatch
    detail: str


def _ascii_digits(text: str) -> bool:
    # str.isdigit() alone accepts Arabic-Indic, full-width and superscript digits.
    return text.isascii() and text.isdigit()


def check_citizen_id(
    value: str,
    province_codes: Collection[str],
    *,
    birth_date: date | None = None,
    sex: str | None = None,
    today: date | None = None,
) -> CitizenId | CitizenIdRejection:
    """Check a CCCD/CMND; ``birth_date``/``sex`` from the record are compared when given,
    and ``today`` (the event's date) bounds the birth year encoded in the id."""
    if not isinstance(value, str):
        return CitizenIdRejection("invalid_citizen_id", "citizen id is not a string")
    stripped = value.strip()
    flags: tuple[str, ...] = ()
    if _ascii_digits(stripped):  # the usual case: nothing to remove
        compact = stripped
    else:
        # Clerks type ids in groups ("079 085 012345"); spaces carry no meaning.
        compact = "".join(stripped.split())
        if compact != stripped:
            flags = ("citizen_id_spaces_removed",)
        if not _ascii_digits(compact):
            return CitizenIdRejection(
                "invalid_citizen_id", "citizen id must contain only digits 0-9"
            )
    if len(compact) == 9:
        return CitizenId(compact, "cmnd", flags=(*flags, "legacy_cmnd_id"))
    if len(compact) != 12:
        return CitizenIdRejection(
            "invalid_citizen_id", f"citizen id has {len(compact)} digits, expected 12 (or 9)"
        )
    if compact[:3] not in province_codes:
        return CitizenIdRejection(
            "invalid_citizen_id", "citizen id does not start with an official CCCD province code"
        )
    century_sex = int(compact[3])
    id_year = _FIRST_CENTURY + 100 * (century_sex // 2) + int(compact[4:6])
    id_sex: Sex = "MALE" if century_sex % 2 == 0 else "FEMALE"
    if today is not None and id_year > today.year:
        return CitizenIdRejection("invalid_citizen_id", "citizen id encodes a future birth year")
    if birth_date is not None and birth_date.year != id_year:
        return CitizenIdRejection(
            "citizen_id_mismatch", "birth year encoded in the citizen id differs from the record"
        )
    if sex is not None and sex != id_sex:
        return CitizenIdRejection(
            "citizen_id_mismatch", "sex encoded in the citizen id differs from the record"
        )
    return CitizenId(compact, "cccd", birth_year=id_year, sex=id_sex, flags=flags)


def make_citizen_id(province_code: str, birth_year: int, sex: str, serial: int) -> str:
    """Build a structurally valid CCCD (for simulators and tests).

    >>> make_citizen_id("075", 1990, "FEMALE", 42)
    '075190000042'
    """
    if len(province_code) != 3 or not _ascii_digits(province_code):
        raise ValueError("province_code must be 3 digits")
    century, year_in_century = divmod(birth_year - _FIRST_CENTURY, 100)
    if not 0 <= century < _CENTURIES // 2:
        raise ValueError(f"birth_year must be in 1900-2399, got {birth_year}")
    sex_upper = sex.upper()
    if sex_upper not in ("MALE", "FEMALE"):
        raise ValueError(f"sex must be MALE or FEMALE, got {sex!r}")
    if not 0 <= serial <= 999_999:
        raise ValueError(f"serial must be in 0-999999, got {serial}")
    century_sex = 2 * century + (sex_upper == "FEMALE")
    return f"{province_code}{century_sex}{year_in_century:02d}{serial:06d}"
