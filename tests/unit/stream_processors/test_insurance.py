"""Health-insurance (BHYT) card numbers."""

from __future__ import annotations

import pytest

from schemas.domain.insurance import (
    InsuranceNumber,
    InsuranceRejection,
    check_insurance_number,
)

GROUPS = {"DN", "HS", "TE"}
PROVINCES = {"75", "70", "01"}


def test_a_card_number_is_split_into_its_parts() -> None:
    result = check_insurance_number("DN4750123456789", GROUPS, PROVINCES)
    assert isinstance(result, InsuranceNumber)
    assert (result.group_code, result.benefit_level, result.province_code) == ("DN", 4, "75")
    assert result.flags == ()
    assert "0123456789" not in repr(result)


def test_spaces_and_case_are_normalized() -> None:
    result = check_insurance_number(" hs-3-70-0000000001 ", GROUPS, PROVINCES)
    assert isinstance(result, InsuranceNumber)
    assert result.value == "HS3700000000001"
    assert result.flags == ("insurance_number_normalized",)


def test_the_ten_digit_social_insurance_number() -> None:
    result = check_insurance_number("7512345678", GROUPS, PROVINCES)
    assert isinstance(result, InsuranceNumber)
    assert result.group_code is None and result.value == "7512345678"


@pytest.mark.parametrize(
    "sent",
    [
        "XX4750123456789",  # unknown group
        "DN6750123456789",  # benefit level 6
        "DN4990123456789",  # unknown province
        "DN475012345678",  # too short
        "DN47501234567890",
        "",
        None,
        12345,
    ],
)
def test_rejected_without_repeating_the_number(sent: object) -> None:
    result = check_insurance_number(sent, GROUPS, PROVINCES)
    assert isinstance(result, InsuranceRejection)
    assert result.reason == "invalid_insurance_number"
    assert "0123456789" not in result.detail
