"""Pydantic models of the education datasets, as the Department of Education database sends them.

Each model is the record inside the Debezium-style envelope of
``schemas/avro/education/<dataset>.raw.v1.avsc``; field names match the Avro record
exactly. Personal fields are kept out of ``repr`` so they never reach a log line.
"""

from __future__ import annotations

from datetime import date
from enum import StrEnum
from typing import Annotated

from pydantic import BaseModel, Field

from schemas.models.common import RECORD_CONFIG, Sex

__all__ = [
    "ClassStat",
    "EmploymentType",
    "ExamResult",
    "ExamType",
    "Ownership",
    "Qualification",
    "School",
    "SchoolLevel",
    "SchoolStatus",
    "Teacher",
    "TeacherStatus",
]

_Code = Field(min_length=1, max_length=64)
_Commune = Field(min_length=1, max_length=16, description="5-digit commune/ward code")
_CitizenId = Field(min_length=1, max_length=20, repr=False)
_SubjectCode = Annotated[str, Field(min_length=1, max_length=16)]
_Score = Annotated[float, Field(ge=0, le=10)]


class SchoolLevel(StrEnum):
    PRESCHOOL = "PRESCHOOL"
    PRIMARY = "PRIMARY"
    LOWER_SECONDARY = "LOWER_SECONDARY"
    UPPER_SECONDARY = "UPPER_SECONDARY"
    MULTI_LEVEL = "MULTI_LEVEL"
    CONTINUING_EDUCATION = "CONTINUING_EDUCATION"


class Ownership(StrEnum):
    PUBLIC = "PUBLIC"
    COMMUNITY = "COMMUNITY"
    PRIVATE = "PRIVATE"


class SchoolStatus(StrEnum):
    ACTIVE = "ACTIVE"
    SUSPENDED = "SUSPENDED"
    CLOSED = "CLOSED"


class School(BaseModel):
    """A school (trường học) as the education database stores it."""

    model_config = RECORD_CONFIG

    school_id: str = _Code
    school_name: str = Field(min_length=1, max_length=300)
    school_level: SchoolLevel
    ownership: Ownership
    commune_code: str = _Commune
    address: str | None = Field(default=None, max_length=500)
    phone: str | None = Field(default=None, max_length=20)
    email: str | None = Field(default=None, max_length=254)
    latitude: float | None = Field(default=None, ge=-90, le=90)
    longitude: float | None = Field(default=None, ge=-180, le=180)
    established_year: int | None = Field(default=None, ge=1800, le=2100)
    status: SchoolStatus


class ClassStat(BaseModel):
    """Class and enrolment counts of one grade of one school in one school year."""

    model_config = RECORD_CONFIG

    school_id: str = _Code
    school_year: str = Field(pattern=r"^[0-9]{4}-[0-9]{4}$", description="YYYY-YYYY")
    grade: int = Field(ge=0, le=12, description="1-12; 0 = preschool")
    class_count: int = Field(ge=0)
    student_count: int = Field(ge=0)
    female_student_count: int = Field(ge=0)
    ethnic_minority_student_count: int = Field(ge=0)
    disabled_student_count: int | None = Field(default=None, ge=0)
    repeating_student_count: int | None = Field(default=None, ge=0)
    reported_date: date


class Qualification(StrEnum):
    INTERMEDIATE = "INTERMEDIATE"
    COLLEGE = "COLLEGE"
    BACHELOR = "BACHELOR"
    MASTER = "MASTER"
    DOCTORATE = "DOCTORATE"


class EmploymentType(StrEnum):
    CIVIL_SERVANT = "CIVIL_SERVANT"
    CONTRACT = "CONTRACT"


class TeacherStatus(StrEnum):
    ACTIVE = "ACTIVE"
    ON_LEAVE = "ON_LEAVE"
    TRANSFERRED = "TRANSFERRED"
    RETIRED = "RETIRED"
    TERMINATED = "TERMINATED"


class Teacher(BaseModel):
    """A teacher (giáo viên) employed by a school."""

    model_config = RECORD_CONFIG

    teacher_id: str = _Code
    school_id: str = _Code
    full_name: str = Field(min_length=1, max_length=200, repr=False)
    citizen_id: str = _CitizenId
    birth_date: date = Field(repr=False)
    sex: Sex | None = Field(default=None, repr=False)
    subject_code: str | None = Field(default=None, min_length=1, max_length=64)
    qualification: Qualification | None = None
    employment_type: EmploymentType
    status: TeacherStatus
    start_date: date | None = None


class ExamType(StrEnum):
    GRADE10_ENTRANCE = "GRADE10_ENTRANCE"
    HS_GRADUATION = "HS_GRADUATION"


class ExamResult(BaseModel):
    """One candidate's result in a grade-10 entrance or high-school graduation exam.

    ``scores`` maps a subject code (``TOAN``, ``VAN``, ``ANH``, …) to a 0–10 score: the
    subjects differ by exam, by province and by candidate (electives), so fixed fields
    would be mostly null and break with every reform. A subject not sat is absent.
    """

    model_config = RECORD_CONFIG

    exam_type: ExamType
    exam_year: int = Field(ge=2000, le=2100)
    candidate_number: str = _Code
    exam_council_code: str = _Code
    first_exam_date: date
    student_citizen_id: str = _CitizenId
    student_name: str = Field(min_length=1, max_length=200, repr=False)
    student_birth_date: date | None = Field(default=None, repr=False)
    school_id: str | None = Field(default=None, min_length=1, max_length=64)
    commune_code: str = _Commune
    scores: dict[_SubjectCode, _Score] = Field(min_length=1)
    bonus_points: float | None = Field(default=None, ge=0, le=10)
    total_score: float | None = Field(default=None, ge=0)
