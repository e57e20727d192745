"""Vietnamese health-insurance (BHYT) card numbers.

The card number (mã thẻ BHYT) has 15 characters: a 2-letter beneficiary group code
(mã đối tượng, e.g. DN employees of enterprises, HS pupils, TE children under 6), one
benefit-level digit 1-5 (mức hưởng), the 2-digit code of the province that issued the card,
and the holder's 10-digit social-insurance number (mã số BHXH). Since the card went
digital (VssID, 2024-2025), systems also send the bare 10-digit social-insurance number,
which identifies the card holder as well.

What is checked: the shape, the group code against ``schemas/data/codes_bhyt_groups.csv``
(a SAMPLE list to check against Decision 1351/QĐ-BHXH before production) and the province
against the official province codes (the CCCD province codes without their leading 0).
There is no check digit. Numbers are personal data: no detail repeats one.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass, field

__all__ = ["InsuranceNumber", "InsuranceRejection", "check_insurance_number"]

_CARD = re.compile(r"(?P<group>[A-Z]{2})(?P<level>[1-5])(?P<province>\d{2})(?P<social>\d{10})")
_SOCIAL = re.compile(r"\d{10}")
_SEPARATORS = str.maketrans("", "", " -.\u00a0")


@dataclass(frozen=True, slots=True)
class InsuranceNumber:
    value: str = field(repr=False)  # the 15-character card number or the 10-digit number
    group_code: str | None = None  # None for the bare social-insurance number
    benefit_level: int | None = None
    province_code: str | None = None
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class InsuranceRejection:
    reason: str  # always invalid_insurance_number
    detail: str


def check_insurance_number(
    value: object, group_codes: Collection[str], province_codes: Collection[str]
) -> InsuranceNumber | InsuranceRejection:
    """Check a BHYT card number or a 10-digit social-insurance number.

    ``province_codes`` are 2-digit province codes (``"75"``).
    """
    if not isinstance(value, str):
        return InsuranceRejection("invalid_insurance_number", "insurance number is not a string")
    compact = value.strip().translate(_SEPARATORS).upper()
    flags = ("insurance_number_normalized",) if compact != value else ()
    if _SOCIAL.fullmatch(compact):
        return InsuranceNumber(compact, flags=flags)
    match = _CARD.fullmatch(compact)
    if match is None:
        return InsuranceRejection(
            "invalid_insurance_number",
            "expected 2 letters, a benefit level 1-5, a 2-digit province and 10 digits "
            "(or a 10-digit social-insurance number)",
        )
    if match["group"] not in group_codes:
        return InsuranceRejection(
            "invalid_insurance_number", "beneficiary group code is not in codes_bhyt_groups.csv"
        )
    if match["province"] not in province_codes:
        return InsuranceRejection(
            "invalid_insurance_number", "province code of the card is not an official one"
        )
    return InsuranceNumber(
        compact,
        group_code=match["group"],
        benefit_level=int(match["level"]),
        province_code=match["province"],
        flags=flags,
    )
