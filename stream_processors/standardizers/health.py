"""Health datasets: facilities, encounters, notifiable disease cases."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from schemas.domain.code_lists import CodeList
from schemas.domain.timeparse import LOCAL_TZ
from stream_processors.standardizers.engine import (
    CitizenId,
    Commune,
    Coordinates,
    DatasetRules,
    Date,
    Enum,
    Float,
    Image,
    Insurance,
    Int,
    Rule,
    Text,
    Timestamp,
    Verify,
)

__all__ = ["DISEASE_CASES", "ENCOUNTERS", "FACILITIES", "normalize_icd10"]

_SEXES = frozenset({"MALE", "FEMALE"})
_FACILITY_CODE = re.compile(r"\d{5}")
# ICD-10: a letter, two digits, optionally a dot and one or two more characters; sources
# drop the dot (J069) or write a trailing one (J06.).
_ICD10 = re.compile(r"(?P<cat>[A-Z]\d{2})\.?(?P<sub>[0-9A-Z]{1,2})?")
# Age and birth year agree to within this many years: ages are often computed as
# days // 365 upstream, which drifts past a birthday.
_AGE_TOLERANCE = 2


def normalize_icd10(value: str) -> str | None:
    """``J069`` / ``j06.9`` / ``J06.9`` -> ``J06.9``; None when not ICD-10 shaped."""
    match = _ICD10.fullmatch(value.strip().upper().replace(" ", ""))
    if match is None:
        return None
    return match["cat"] + (f".{match['sub']}" if match["sub"] else "")


def _known(codes: CodeList, code: str) -> bool:
    return codes.lookup(code) is not None or codes.lookup(code[:3]) is not None


@dataclass(frozen=True)
class FacilityCode(Rule):
    name: str
    required: bool = True

    def apply(self, img: Image) -> None:
        text = img.string(self.name, self.required)
        if text is not None and not _FACILITY_CODE.fullmatch(text):
            raise img.fail("invalid_field", self.name, "expected a 5-digit facility code")
        img.out[self.name] = text

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [{"name": self.name, "type": "string", "doc": str(raw[self.name]["doc"])}]


FACILITIES = DatasetRules(
    dataset_id="health.facilities",
    record="HealthFacility",
    doc="A standardized health facility: NFC text, current commune code.",
    rules=(
        FacilityCode("facility_code"),
        Text("facility_name"),
        Enum("level", frozenset({"INITIAL", "BASIC", "SPECIALIZED"})),
        Enum(
            "facility_type",
            frozenset(
                {
                    "GENERAL_HOSPITAL",
                    "SPECIALIZED_HOSPITAL",
                    "MEDICAL_CENTER",
                    "COMMUNE_HEALTH_STATION",
                    "POLYCLINIC",
                    "CLINIC",
                    "PREVENTIVE_MEDICINE_CENTER",
                    "OTHER",
                }
            ),
        ),
        Enum("ownership", frozenset({"PUBLIC", "PRIVATE"})),
        Commune("commune_code"),
        Text("address", required=False),
        Coordinates("latitude", "longitude"),
        Int("beds", required=False, min=0, max=100_000),
        Text("license_number", required=False),
        Enum("status", frozenset({"ACTIVE", "SUSPENDED", "CLOSED"})),
    ),
)


@dataclass(frozen=True)
class Diagnoses(Rule):
    """ICD-10 codes, primary first; a code outside the sample list is flagged, not lost."""

    name: str
    required: bool = True

    def apply(self, img: Image) -> None:
        value = img.value(self.name, self.required)
        if not isinstance(value, list) or not value:
            raise img.fail("invalid_field", self.name, "expected a non-empty list of codes")
        icd10 = img.ctx.codes["icd10"]
        codes: list[str] = []
        for item in value:
            code = normalize_icd10(item) if isinstance(item, str) else None
            if code is None:
                raise img.fail("invalid_disease_code", self.name, "a code is not ICD-10 shaped")
            if code != item:
                img.flag("code_case_normalized")
            if not _known(icd10, code):
                img.flag("code_not_in_list")
            if code not in codes:
                codes.append(code)
        img.out[self.name] = codes

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        doc = f"{raw[self.name]['doc']} Written J06.9 (upper case, with the dot)."
        return [{"name": self.name, "type": {"type": "array", "items": "string"}, "doc": doc}]


def _amounts(img: Image) -> None:
    total, covered = img.out["total_cost"], img.out["insurance_covered_amount"]
    if total is not None and covered > total:
        raise img.fail("covered_exceeds_cost", "insurance_covered_amount", "covered > total_cost")


def _stay(img: Image) -> None:
    admitted, discharged = img.out["admitted_at"], img.out["discharged_at"]
    if discharged is not None and discharged < admitted:
        raise img.fail("discharged_before_admitted", "discharged_at", "discharged < admitted")


ENCOUNTERS = DatasetRules(
    dataset_id="health.encounters",
    record="Encounter",
    doc="A standardized encounter: UTC times, CCCD and BHYT number checked, ICD-10 codes.",
    rules=(
        Text("encounter_id"),
        FacilityCode("facility_code"),
        Text("patient_name", case="person"),
        Enum("patient_sex", _SEXES),
        Timestamp("admitted_at", compact=True),
        Date("patient_birth_date", birth=True),
        CitizenId("patient_citizen_id", birth_date="patient_birth_date", sex="patient_sex"),
        Insurance("insurance_number"),
        Enum(
            "encounter_type", frozenset({"OUTPATIENT", "INPATIENT", "DAY_TREATMENT", "EMERGENCY"})
        ),
        Text("department_code", case="upper"),
        Diagnoses("diagnosis_codes"),
        Float("total_cost", required=False, min=0),
        Float("insurance_covered_amount", min=0),
        # The amounts are the claim's own: judged before the discharge time can fail.
        Verify(_amounts),
        Timestamp("discharged_at", required=False, compact=True),
        Enum(
            "outcome",
            frozenset(
                {
                    "CURED",
                    "IMPROVED",
                    "UNCHANGED",
                    "WORSENED",
                    "DIED",
                    "SEVERE_DISCHARGED_ON_REQUEST",
                    "UNDETERMINED",
                }
            ),
            required=False,
        ),
    ),
    checks=(_stay,),
    event_time="admitted_at",
)


@dataclass(frozen=True)
class DiseaseCode(Rule):
    """An ICD-10 code; its group (A/B/C) of the notifiable-disease list as ``disease_group``."""

    name: str
    required: bool = True

    def apply(self, img: Image) -> None:
        text = img.string(self.name, self.required)
        code = normalize_icd10(text) if text is not None else None
        if code is None:
            raise img.fail("invalid_disease_code", self.name, "not ICD-10 shaped")
        if code != text:
            img.flag("code_case_normalized")
        notifiable = img.ctx.codes["notifiable_diseases"]
        match = notifiable.lookup(code) or notifiable.lookup(code[:3])
        if match is None:
            img.flag("disease_not_notifiable")
        img.out[self.name] = code
        img.out["disease_group"] = match.entry.category if match is not None else None

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [
            {"name": self.name, "type": "string", "doc": f"{raw[self.name]['doc']} Normalized."},
            {
                "name": "disease_group",
                "type": ["null", "string"],
                "default": None,
                "doc": "Group A/B/C of the notifiable-disease list; null when not listed.",
            },
        ]


def _case(img: Image) -> None:
    reported = img.out["reported_at"]
    onset = img.out["onset_date"]
    if onset is not None and onset > reported.astimezone(LOCAL_TZ).date():
        img.flag("onset_after_report")
    citizen_id = img.out["patient_citizen_id"]
    if citizen_id is not None and len(citizen_id) == 12:
        # The CCCD encodes the birth year; the record only has the age at onset.
        century_sex = int(citizen_id[3])
        id_year = 1900 + 100 * (century_sex // 2) + int(citizen_id[4:6])
        age_year = reported.astimezone(LOCAL_TZ).year - img.out["age_years"]
        if abs(age_year - id_year) > _AGE_TOLERANCE:
            raise img.fail(
                "citizen_id_mismatch",
                "patient_citizen_id",
                "birth year encoded in the citizen id differs from the age",
            )


DISEASE_CASES = DatasetRules(
    dataset_id="health.disease_cases",
    record="DiseaseCase",
    doc="A standardized notifiable-disease case: ICD-10 code and group, current commune code.",
    rules=(
        Text("case_id"),
        DiseaseCode("disease_code"),
        Text("disease_name"),
        Timestamp("reported_at"),
        Date("onset_date", required=False),
        Text("reporting_facility_code"),
        Commune("commune_code"),
        Int("age_years", min=0, max=150),
        Enum("sex", _SEXES),
        CitizenId("patient_citizen_id", required=False, sex="sex"),
        Enum("classification", frozenset({"SUSPECTED", "PROBABLE", "CONFIRMED"})),
        Enum(
            "outcome",
            frozenset({"UNDER_TREATMENT", "RECOVERED", "DIED", "TRANSFERRED", "UNKNOWN"}),
            required=False,
        ),
    ),
    checks=(_case,),
    event_time="reported_at",
)
