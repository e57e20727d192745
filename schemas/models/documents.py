"""Pydantic models of the documents datasets, as the document management system sends them.

Each model is the record inside the Debezium-style envelope of
``schemas/avro/documents/<dataset>.raw.v1.avsc``; field names match the Avro record
exactly. Times are machine times of the system (timestamp-millis), so they are
timezone-aware datetimes here.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum

from pydantic import AwareDatetime, BaseModel, Field

from schemas.models.common import RECORD_CONFIG

__all__ = [
    "Confidentiality",
    "Direction",
    "DocumentTask",
    "OfficialDocument",
    "TaskRole",
    "TaskStatus",
    "Urgency",
]

_Code = Field(min_length=1, max_length=64)


class Direction(StrEnum):
    INCOMING = "INCOMING"
    OUTGOING = "OUTGOING"


class Urgency(StrEnum):
    NORMAL = "NORMAL"
    URGENT = "URGENT"
    VERY_URGENT = "VERY_URGENT"
    EXPRESS = "EXPRESS"


class Confidentiality(StrEnum):
    NORMAL = "NORMAL"
    CONFIDENTIAL = "CONFIDENTIAL"
    SECRET = "SECRET"
    TOP_SECRET = "TOP_SECRET"


class OfficialDocument(BaseModel):
    """An incoming or outgoing official document (văn bản đến / văn bản đi).

    Only ``Confidentiality.NORMAL`` belongs on the bus; the other levels exist so a
    mis-sent state-secret document is recognised (and dead-lettered) rather than
    rejected as an unknown symbol.
    """

    model_config = RECORD_CONFIG

    document_id: str = _Code
    direction: Direction
    number_symbol: str = Field(min_length=1, max_length=100, description="số, ký hiệu")
    document_type: str = Field(min_length=1, max_length=100)
    issuing_unit_name: str = Field(min_length=1, max_length=300)
    issuing_unit_code: str | None = Field(default=None, min_length=1, max_length=64)
    receiving_unit_code: str = _Code
    subject: str = Field(min_length=1, max_length=2000, description="trích yếu")
    issued_date: date
    received_at: AwareDatetime | None = None
    urgency: Urgency
    confidentiality: Confidentiality
    page_count: int | None = Field(default=None, ge=1)


class TaskRole(StrEnum):
    LEAD = "LEAD"
    COORDINATE = "COORDINATE"
    FOR_INFORMATION = "FOR_INFORMATION"


class TaskStatus(StrEnum):
    PENDING = "PENDING"
    IN_PROGRESS = "IN_PROGRESS"
    COMPLETED = "COMPLETED"
    RETURNED = "RETURNED"
    CANCELLED = "CANCELLED"


class DocumentTask(BaseModel):
    """A processing task assigned on an official document.

    ``assignee_officer_id`` is a public servant's staff code, shown so processing is
    auditable; it is not citizen personal data (as for ``DossierStep``).
    """

    model_config = RECORD_CONFIG

    task_id: str = _Code
    document_id: str = _Code
    assignee_unit_code: str = _Code
    assignee_officer_id: str | None = Field(default=None, min_length=1, max_length=64)
    role: TaskRole
    instruction: str | None = Field(default=None, max_length=2000)
    status: TaskStatus
    assigned_at: AwareDatetime
    due_at: AwareDatetime | None = None
    done_at: AwareDatetime | None = None
