"""Pydantic models of the public-service datasets, as the public-service portal sends them.

Each model is the record inside the Debezium-style envelope of
``schemas/avro/publicservice/<dataset>.raw.v1.avsc``; field names match the Avro record
exactly. Personal fields are kept out of ``repr`` so they never reach a log line.

The models check what the Avro schema can express (types, required fields, code
lists, lengths). Semantic checks that need reference data — is the citizen id
well formed, does the unit exist — belong to the stream processors, so a record
that fails them is dead-lettered with its reason instead of vanishing at the edge.
Times are text as the portal sends them (ISO 8601, dd/mm/yyyy HH:MM or epoch); the
standardizer parses them.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, Field

from schemas.models.common import RECORD_CONFIG, Sex

__all__ = ["Channel", "Dossier", "DossierStatus", "DossierStep", "StepStatus"]

_Code = Field(min_length=1, max_length=64)
_Time = Field(min_length=1, max_length=40, description="ISO 8601, dd/mm/yyyy HH:MM, or epoch")


class DossierStatus(StrEnum):
    RECEIVED = "RECEIVED"
    IN_PROGRESS = "IN_PROGRESS"
    SUPPLEMENT_REQUESTED = "SUPPLEMENT_REQUESTED"
    COMPLETED = "COMPLETED"
    RETURNED = "RETURNED"
    CANCELLED = "CANCELLED"


class Channel(StrEnum):
    ONLINE = "ONLINE"
    IN_PERSON = "IN_PERSON"


class Dossier(BaseModel):
    """An administrative-procedure dossier as the public-service portal stores it."""

    model_config = RECORD_CONFIG

    # The examples make `databus template` write a row that passes every check.
    dossier_id: str = Field(min_length=1, max_length=64, examples=["HS-STP-000001"])
    dossier_code: str = Field(min_length=1, max_length=64, examples=["000.00.12.H19-250701-0001"])
    procedure_code: str = Field(min_length=1, max_length=64, examples=["1.000894"])
    procedure_name: str = Field(min_length=1, max_length=500, examples=["Đăng ký khai sinh"])
    receiving_unit_code: str = Field(min_length=1, max_length=64, examples=["DNA.STP"])
    admin_unit_code: str = Field(min_length=1, max_length=64, examples=["75001"])
    applicant_citizen_id: str = Field(
        min_length=1, max_length=20, repr=False, examples=["075190000042"]
    )
    applicant_name: str = Field(
        min_length=1, max_length=200, repr=False, examples=["Nguyễn Thị Hòa"]
    )
    applicant_birth_date: str | None = Field(
        default=None, max_length=40, repr=False, examples=["15/03/1990"]
    )
    applicant_sex: Sex | None = Field(default=None, repr=False, examples=["FEMALE"])
    status: DossierStatus = Field(examples=["COMPLETED"])
    channel: Channel = Field(examples=["ONLINE"])
    received_at: str = Field(min_length=1, max_length=40, examples=["01/07/2025 08:30"])
    due_at: str = Field(min_length=1, max_length=40, examples=["04/07/2025 17:00"])
    completed_at: str | None = Field(default=None, max_length=40, examples=["03/07/2025 10:15"])


class StepStatus(StrEnum):
    WAITING = "WAITING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    RETURNED = "RETURNED"
    CANCELLED = "CANCELLED"


class DossierStep(BaseModel):
    """One processing step of a dossier (bước xử lý hồ sơ) as the portal stores it.

    ``handler_officer_id`` is a public servant's staff code, shown so the processing is
    auditable; it is not citizen personal data, and the dataset is classified internal.
    """

    model_config = RECORD_CONFIG

    step_id: str = _Code
    dossier_id: str = _Code
    step_order: int = Field(ge=1, le=1000, description="Position in the workflow, from 1")
    step_code: str = _Code
    step_name: str = Field(min_length=1, max_length=500, description="Vietnamese")
    handling_unit_code: str = _Code
    handler_officer_id: str | None = Field(default=None, max_length=64)
    status: StepStatus
    started_at: str = _Time
    due_at: str | None = Field(default=None, max_length=40)
    finished_at: str | None = Field(default=None, max_length=40)
    note: str | None = Field(default=None, max_length=2000)
