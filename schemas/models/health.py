"""Pydantic models of the health datasets, as the health data portal and hospital systems send them.

Each model is the record inside the Debezium-style envelope of
``schemas/avro/health/<dataset>.raw.v1.avsc``; field names match the Avro record
exactly. Personal fields are kept out of ``repr`` so they never reach a log line.

Encounter times are text (``yyyyMMddHHmm`` or ISO 8601, naive = Asia/Ho_Chi_Minh)
because that is how the insurance data exchange sends them; the standardizer parses
them. Disease-case report times are machine times of the surveillance software.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import AwareDatetime, BaseModel, Field

from schemas.models.common import RECORD_CONFIG, Sex

__all__ = [
    "CaseClassification",
    "CaseOutcome",
    "DiseaseCase",
    "Encounter",
    "EncounterOutcome",
    "EncounterType",
    "FacilityLevel",
    "FacilityStatus",
    "FacilityType",
    "HealthFacility",
    "Ownership",
]

_Code = Field(min_length=1, max_length=64)
_FacilityCode = Field(min_length=1, max_length=16, description="5-digit insurance facility code")
_Commune = Field(min_length=1, max_length=16, description="5-digit commune/ward code")
_Time = Field(min_length=1, max_length=40, description="yyyyMMddHHmm or ISO 8601")
# Shape only: whether a code is in the ICD-10 list is the standardizer's check.
_Icd10 = Annotated[str, Field(min_length=3, max_length=16)]


class FacilityLevel(StrEnum):
    INITIAL = "INITIAL"
    BASIC = "BASIC"
    SPECIALIZED = "SPECIALIZED"


class FacilityType(StrEnum):
    GENERAL_HOSPITAL = "GENERAL_HOSPITAL"
    SPECIALIZED_HOSPITAL = "SPECIALIZED_HOSPITAL"
    MEDICAL_CENTER = "MEDICAL_CENTER"
    COMMUNE_HEALTH_STATION = "COMMUNE_HEALTH_STATION"
    POLYCLINIC = "POLYCLINIC"
    CLINIC = "CLINIC"
    PREVENTIVE_MEDICINE_CENTER = "PREVENTIVE_MEDICINE_CENTER"
    OTHER = "OTHER"


class Ownership(StrEnum):
    PUBLIC = "PUBLIC"
    PRIVATE = "PRIVATE"


class FacilityStatus(StrEnum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    CLOSED = "CLOSED"


class HealthFacility(BaseModel):
    """A health facility (cơ sở khám chữa bệnh)."""

    model_config = RECORD_CONFIG

    facility_code: str = _FacilityCode
    facility_name: str = Field(min_length=1, max_length=300)
    level: FacilityLevel
    facility_type: FacilityType
    ownership: Ownership
    commune_code: str = _Commune
    address: str | None = Field(default=None, max_length=500)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    beds: int | None = Field(default=None, ge=0)
    license_number: str | None = Field(default=None, min_length=1, max_length=64)
    status: FacilityStatus


class EncounterType(StrEnum):
    OUTPATIENT = "OUTPATIENT"
    INPATIENT = "INPATIENT"
    DAY_TREATMENT = "DAY_TREATMENT"
    EMERGENCY = "EMERGENCY"


class EncounterOutcome(StrEnum):
    CURED = "CURED"
    IMPROVED = "IMPROVED"
    UNCHANGED = "UNCHANGED"
    WORSENED = "WORSENED"
    DIED = "DIED"
    SEVERE_DISCHARGED_ON_REQUEST = "SEVERE_DISCHARGED_ON_REQUEST"
    UNDETERMINED = "UNDETERMINED"


class Encounter(BaseModel):
    """One encounter (lượt khám chữa bệnh): EMR summary with its insurance visit."""

    model_config = RECORD_CONFIG

    encounter_id: str = _Code
    facility_code: str = _FacilityCode
    patient_citizen_id: str = Field(min_length=1, max_length=20, repr=False)
    patient_name: str = Field(min_length=1, max_length=200, repr=False)
    patient_birth_date: date = Field(repr=False)
    patient_sex: Sex = Field(repr=False)
    insurance_number: str | None = Field(default=None, min_length=10, max_length=15, repr=False)
    encounter_type: EncounterType
    department_code: str = _Code
    admitted_at: str = _Time
    discharged_at: str | None = Field(default=None, min_length=1, max_length=40)
    diagnosis_codes: list[_Icd10] = Field(min_length=1, description="primary first")
    total_cost: float | None = Field(default=None, ge=0, description="VND")
    insurance_covered_amount: float = Field(ge=0, description="VND")
    outcome: EncounterOutcome | None = None


class CaseClassification(StrEnum):
    SUSPECTED = "SUSPECTED"
    PROBABLE = "PROBABLE"
    CONFIRMED = "CONFIRMED"


class CaseOutcome(StrEnum):
    UNDER_TREATMENT = "UNDER_TREATMENT"
    RECOVERED = "RECOVERED"
    DIED = "DIED"
    TRANSFERRED = "TRANSFERRED"
    UNKNOWN = "UNKNOWN"


class DiseaseCase(BaseModel):
    """A notifiable infectious-disease case report.

    Age, sex and commune are kept for epidemiology and are not marked personal, but they
    are quasi-identifiers: the dataset is classified restricted.
    """

    model_config = RECORD_CONFIG

    case_id: str = _Code
    disease_code: _Icd10
    disease_name: str = Field(min_length=1, max_length=300)
    onset_date: date | None = None
    reported_at: AwareDatetime
    reporting_facility_code: str = _FacilityCode
    commune_code: str = _Commune
    age_years: int = Field(ge=0, le=150)
    sex: Sex
    patient_citizen_id: str | None = Field(default=None, min_length=1, max_length=20, repr=False)
    classification: CaseClassification
    outcome: CaseOutcome | None = None
