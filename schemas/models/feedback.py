"""Pydantic models of the citizen-feedback datasets, as the citizen app sends them.

Each model is the record inside the Debezium-style envelope of
``schemas/avro/feedback/<dataset>.raw.v1.avsc``; field names match the Avro record
exactly. Times are app-server machine times (timestamp-millis).
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, Field

from schemas.models.common import RECORD_CONFIG

__all__ = ["FeedbackReport", "ReportCategory", "ReportStatus"]


class ReportCategory(StrEnum):
    TRAFFIC = "TRAFFIC"
    URBAN_ORDER = "URBAN_ORDER"
    ENVIRONMENT = "ENVIRONMENT"
    INFRASTRUCTURE = "INFRASTRUCTURE"
    ELECTRICITY_WATER = "ELECTRICITY_WATER"
    SECURITY_ORDER = "SECURITY_ORDER"
    HEALTH = "HEALTH"
    EDUCATION = "EDUCATION"
    ADMINISTRATIVE_PROCEDURE = "ADMINISTRATIVE_PROCEDURE"
    OTHER = "OTHER"


class ReportStatus(StrEnum):
    RECEIVED = "RECEIVED"
    ASSIGNED = "ASSIGNED"
    IN_PROGRESS = "IN_PROGRESS"
    RESPONDED = "RESPONDED"
    CLOSED = "CLOSED"
    REJECTED = "REJECTED"


class FeedbackReport(BaseModel):
    """A citizen report (phản ánh kiến nghị) from the citizen app."""

    model_config = RECORD_CONFIG

    report_id: str = Field(min_length=1, max_length=64)
    category: ReportCategory
    description: str = Field(min_length=1, max_length=5000)
    commune_code: str | None = Field(default=None, min_length=1, max_length=16)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    # E.164 is what the app should send, but checking it (and mapping pre-2018 11-digit
    # mobiles) is the standardizer's job, so a bad number is dead-lettered, not lost here.
    reporter_phone: str | None = Field(default=None, min_length=1, max_length=20, repr=False)
    handling_unit_code: str | None = Field(default=None, min_length=1, max_length=64)
    status: ReportStatus
    received_at: AwareDatetime
    response_deadline: AwareDatetime | None = None
    responded_at: AwareDatetime | None = None
