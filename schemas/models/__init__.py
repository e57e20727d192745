"""The pydantic models of every dataset's record, one module per sector.

``from schemas.models import Dossier`` (or ``School``, ``Encounter``…): the record inside a
change event's envelope; ``Op`` and ``Sex`` are shared by every sector
(``schemas.models.common``). The catalog names each dataset's model as
``module:Class`` (``schemas/catalog.toml``).
"""

from __future__ import annotations

from schemas.models.common import (
    RECORD_CONFIG,
    Op,
    Sex,
)
from schemas.models.documents import (
    Confidentiality,
    Direction,
    DocumentTask,
    OfficialDocument,
    TaskRole,
    TaskStatus,
    Urgency,
)
from schemas.models.education import (
    ClassStat,
    EmploymentType,
    ExamResult,
    ExamType,
    Ownership,
    Qualification,
    School,
    SchoolLevel,
    SchoolStatus,
    Teacher,
    TeacherStatus,
)
from schemas.models.environment import (
    StationReading,
    StationType,
)
from schemas.models.feedback import (
    FeedbackReport,
    ReportCategory,
    ReportStatus,
)
from schemas.models.health import (
    CaseClassification,
    CaseOutcome,
    DiseaseCase,
    Encounter,
    EncounterOutcome,
    EncounterType,
    FacilityLevel,
    FacilityStatus,
    FacilityType,
    HealthFacility,
)
from schemas.models.land import (
    ConstructionPermit,
    Parcel,
    PermitStatus,
    PermitType,
)
from schemas.models.public_service import (
    Channel,
    Dossier,
    DossierStatus,
    DossierStep,
    StepStatus,
)
from schemas.models.transport import (
    BusPosition,
    OwnerKind,
    RegistrationStatus,
    VehicleRegistration,
    VehicleType,
)

__all__ = [
    "RECORD_CONFIG",
    "BusPosition",
    "CaseClassification",
    "CaseOutcome",
    "Channel",
    "ClassStat",
    "Confidentiality",
    "ConstructionPermit",
    "Direction",
    "DiseaseCase",
    "DocumentTask",
    "Dossier",
    "DossierStatus",
    "DossierStep",
    "EmploymentType",
    "Encounter",
    "EncounterOutcome",
    "EncounterType",
    "ExamResult",
    "ExamType",
    "FacilityLevel",
    "FacilityStatus",
    "FacilityType",
    "FeedbackReport",
    "HealthFacility",
    "OfficialDocument",
    "Op",
    "OwnerKind",
    "Ownership",
    "Parcel",
    "PermitStatus",
    "PermitType",
    "Qualification",
    "RegistrationStatus",
    "ReportCategory",
    "ReportStatus",
    "School",
    "SchoolLevel",
    "SchoolStatus",
    "Sex",
    "StationReading",
    "StationType",
    "StepStatus",
    "TaskRole",
    "TaskStatus",
    "Teacher",
    "TeacherStatus",
    "Urgency",
    "VehicleRegistration",
    "VehicleType",
]
