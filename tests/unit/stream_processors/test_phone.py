"""Phone numbers to E.164, pre-2018 mobile prefixes converted."""

from __future__ import annotations

import pytest

from schemas.domain.phone import OLD_MOBILE_PREFIXES, Phone, PhoneRejection, normalize_phone


@pytest.mark.parametrize(
    ("sent", "e164"),
    [
        ("+84912345678", "+84912345678"),
        ("0912 345 678", "+84912345678"),
        ("84912345678", "+84912345678"),
        ("0084 912 345 678", "+84912345678"),
        ("912345678", "+84912345678"),
        ("(0251) 3823 730", "+842513823730"),
        ("0168.123.4567", "+84381234567"),
        ("0120 123 4567", "+84701234567"),
        ("0127 123 4567", "+84811234567"),
        ("0186 123 4567", "+84561234567"),
        ("0199 123 4567", "+84591234567"),
    ],
)
def test_normalized(sent: str, e164: str) -> None:
    result = normalize_phone(sent)
    assert isinstance(result, Phone)
    assert result.value == e164
    assert ("phone_normalized" in result.flags) == (sent != e164)


def test_old_prefix_is_flagged() -> None:
    result = normalize_phone("01681234567")
    assert isinstance(result, Phone)
    assert "phone_prefix_remapped" in result.flags


def test_the_2018_table_covers_the_five_networks() -> None:
    assert len(OLD_MOBILE_PREFIXES) == 21
    assert all(len(k) == 4 and len(v) == 3 for k, v in OLD_MOBILE_PREFIXES.items())


@pytest.mark.parametrize("sent", ["", "abc", "0123", "+1 202 555 0100", "0912 345 678 999 9", 912])
def test_rejected_without_repeating_the_number(sent: object) -> None:
    result = normalize_phone(sent)
    assert isinstance(result, PhoneRejection)
    assert result.reason == "invalid_phone"
    assert str(sent) not in result.detail or not str(sent)
    assert "0912" not in result.detail
