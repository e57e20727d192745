"""Pydantic models of the land datasets, as the cadastral and construction-permit systems send them.

Each model is the record inside the Debezium-style envelope of
``schemas/avro/land/<dataset>.raw.v1.avsc``; field names match the Avro record exactly.
Personal fields are kept out of ``repr`` so they never reach a log line.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import BaseModel, Field

from schemas.models.common import RECORD_CONFIG

__all__ = ["ConstructionPermit", "Parcel", "PermitStatus", "PermitType"]

_Code = Field(min_length=1, max_length=64)
_Commune = Field(min_length=1, max_length=16, description="5-digit commune/ward code")


class Parcel(BaseModel):
    """A land parcel (thửa đất).

    ``map_sheet`` and ``parcel_number`` are text: old sheets carry letters and split
    parcels carry suffixes (``125a``).
    """

    model_config = RECORD_CONFIG

    parcel_id: str = _Code
    commune_code: str = _Commune
    map_sheet: str = Field(min_length=1, max_length=32, description="số tờ bản đồ")
    parcel_number: str = Field(min_length=1, max_length=32, description="số thửa")
    area_m2: float = Field(gt=0)
    land_use_purpose_code: str = Field(min_length=1, max_length=16)
    address: str | None = Field(default=None, max_length=500)
    owner_name: str | None = Field(default=None, min_length=1, max_length=300, repr=False)
    certificate_number: str | None = Field(default=None, min_length=1, max_length=32)
    valid_from: date | None = None
    use_term_until: date | None = None


class PermitType(StrEnum):
    NEW_CONSTRUCTION = "NEW_CONSTRUCTION"
    REPAIR_RENOVATION = "REPAIR_RENOVATION"
    RELOCATION = "RELOCATION"
    FIXED_TERM = "FIXED_TERM"


class PermitStatus(StrEnum):
    SUBMITTED = "SUBMITTED"
    ISSUED = "ISSUED"
    REJECTED = "REJECTED"
    REVOKED = "REVOKED"
    EXPIRED = "EXPIRED"


class ConstructionPermit(BaseModel):
    """A construction permit (giấy phép xây dựng) and its application."""

    model_config = RECORD_CONFIG

    permit_id: str = _Code
    permit_number: str | None = Field(default=None, min_length=1, max_length=64)
    issuing_unit_code: str = _Code
    applicant_name: str = Field(min_length=1, max_length=300, repr=False)
    commune_code: str = _Commune
    address: str = Field(min_length=1, max_length=500)
    parcel_id: str | None = Field(default=None, min_length=1, max_length=64)
    permit_type: PermitType
    issued_date: date | None = None
    floors: int | None = Field(default=None, ge=0, le=200)
    gross_floor_area_m2: float | None = Field(default=None, gt=0)
    status: PermitStatus
