"""Vietnamese phone numbers to E.164 (``+84…``).

Source systems send numbers as typed: ``0912 345 678``, ``(0251) 3823 730``, ``84912345678``,
``+84-912-345-678``, and — in records older than 2018 or typed from old contact lists —
11-digit mobile numbers (``0168…``). In 2018 the Ministry of Information and
Communications moved every 11-digit mobile number to a 10-digit one by replacing its
4-digit prefix (Decision 798/QĐ-BTTTT); the table below is that conversion, which is
closed and final. ``phonenumbers`` knows the current numbering plan only, so the old
prefixes are converted here before it validates the number.

Phone numbers are personal data: no rejection detail contains the number or any part of it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from types import MappingProxyType

import phonenumbers

__all__ = ["OLD_MOBILE_PREFIXES", "Phone", "PhoneRejection", "normalize_phone"]

# Old 11-digit prefix (national form) -> the 10-digit prefix since 2018-09-15.
OLD_MOBILE_PREFIXES: Mapping[str, str] = MappingProxyType(
    {
        # Viettel
        "0162": "032",
        "0163": "033",
        "0164": "034",
        "0165": "035",
        "0166": "036",
        "0167": "037",
        "0168": "038",
        "0169": "039",
        # MobiFone
        "0120": "070",
        "0121": "079",
        "0122": "077",
        "0126": "076",
        "0128": "078",
        # VinaPhone
        "0123": "083",
        "0124": "084",
        "0125": "085",
        "0127": "081",
        "0129": "082",
        # Vietnamobile
        "0186": "056",
        "0188": "058",
        # Gmobile
        "0199": "059",
    }
)

_SEPARATORS = str.maketrans("", "", " .-()/\u00a0\t")
_MAX_LENGTH = 20


@dataclass(frozen=True, slots=True)
class Phone:
    value: str = field(repr=False)  # E.164
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class PhoneRejection:
    reason: str  # always invalid_phone
    detail: str


def _national(compact: str) -> str | None:
    """The national form (leading 0) of a compact number, or None if not Vietnamese."""
    if compact.startswith("+84"):
        return "0" + compact[3:]
    if compact.startswith("0084"):
        return "0" + compact[4:]
    if compact.startswith("+"):
        return None
    # "84912345678": the country code typed without "+"; a national number never
    # starts with 84 (no 084 area or mobile prefix is 11-12 digits long without it).
    if compact.startswith("84") and len(compact) in (11, 12):
        return "0" + compact[2:]
    if compact.startswith("0"):
        return compact
    # Nine or ten digits without the trunk 0, as spreadsheets store them.
    return "0" + compact if len(compact) in (9, 10) else compact


def normalize_phone(value: object) -> Phone | PhoneRejection:
    """A Vietnamese phone number in E.164, old mobile prefixes converted."""
    if not isinstance(value, str):
        return PhoneRejection("invalid_phone", "phone number is not a string")
    return _normalize(value)


# phonenumbers takes tens of µs a number and the same numbers come back on every update
# of a record: the pure function is cached. Numbers stay in this process's memory only.
@lru_cache(maxsize=1 << 14)
def _normalize(value: str) -> Phone | PhoneRejection:
    compact = value.strip().translate(_SEPARATORS)
    if not compact or len(compact) > _MAX_LENGTH:
        return PhoneRejection("invalid_phone", "phone number is empty or too long")
    digits = compact[1:] if compact.startswith("+") else compact
    if not (digits.isascii() and digits.isdigit()):
        return PhoneRejection("invalid_phone", "phone number has characters other than digits")
    flags: list[str] = []
    national = _national(compact)
    if national is None:
        return PhoneRejection("invalid_phone", "phone number is not a Vietnamese (+84) number")
    if len(national) == 11 and national[:4] in OLD_MOBILE_PREFIXES:
        national = OLD_MOBILE_PREFIXES[national[:4]] + national[4:]
        flags.append("phone_prefix_remapped")
    try:
        parsed = phonenumbers.parse(national, "VN")
    except phonenumbers.NumberParseException:
        return PhoneRejection("invalid_phone", "phone number cannot be parsed")
    if not phonenumbers.is_valid_number(parsed):
        return PhoneRejection("invalid_phone", "phone number is not valid in the Vietnamese plan")
    e164 = phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164)
    if e164 != value:
        flags.insert(0, "phone_normalized")
    return Phone(e164, tuple(flags))
