"""Education datasets: schools, class statistics, teachers, exam results."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from stream_processors.standardizers.engine import (
    CitizenId,
    Code,
    Commune,
    Coordinates,
    DatasetRules,
    Date,
    Email,
    Enum,
    Float,
    Image,
    Int,
    Phone,
    Rule,
    Text,
)

__all__ = ["CLASS_STATS", "EXAM_RESULTS", "SCHOOLS", "TEACHERS"]

_SEXES = frozenset({"MALE", "FEMALE"})
_SCHOOL_YEAR = re.compile(r"(\d{4})\s*[-/]\s*(\d{4})")
_MAX_SCORE = 10.0
# Scores are published to 0.25 (or 0.05 for some subjects): a total within this of the
# recomputed one is the authority's own rounding, not a mismatch.
_TOTAL_TOLERANCE = 0.051


SCHOOLS = DatasetRules(
    dataset_id="education.schools",
    record="School",
    doc="A standardized school: NFC text, current commune code, E.164 phone.",
    rules=(
        Text("school_id"),
        Text("school_name"),
        Enum(
            "school_level",
            frozenset(
                {
                    "PRESCHOOL",
                    "PRIMARY",
                    "LOWER_SECONDARY",
                    "UPPER_SECONDARY",
                    "MULTI_LEVEL",
                    "CONTINUING_EDUCATION",
                }
            ),
        ),
        Enum("ownership", frozenset({"PUBLIC", "COMMUNITY", "PRIVATE"})),
        Commune("commune_code"),
        Text("address", required=False),
        Phone("phone", drop_invalid=True),
        Email("email"),
        Coordinates("latitude", "longitude"),
        Int("established_year", required=False, min=1800, max=2100),
        Enum("status", frozenset({"ACTIVE", "SUSPENDED", "CLOSED"})),
    ),
)


@dataclass(frozen=True)
class SchoolYear(Rule):
    """``YYYY-YYYY`` with consecutive years; ``2025/2026`` and spaces are tolerated."""

    name: str
    required: bool = True

    def apply(self, img: Image) -> None:
        text = img.string(self.name, self.required)
        if text is None:  # required: string() has already rejected a missing value
            return
        match = _SCHOOL_YEAR.fullmatch(text)
        if match is None or int(match[2]) != int(match[1]) + 1:
            raise img.fail("invalid_field", self.name, "expected YYYY-YYYY, consecutive years")
        img.out[self.name] = f"{match[1]}-{match[2]}"

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [{"name": self.name, "type": "string", "doc": str(raw[self.name]["doc"])}]


def _class_counts(img: Image) -> None:
    students = img.out["student_count"]
    if img.out["female_student_count"] > students:
        raise img.fail(
            "female_exceeds_students", "female_student_count", "more girls than students"
        )
    for part in (
        "ethnic_minority_student_count",
        "disabled_student_count",
        "repeating_student_count",
    ):
        value = img.out[part]
        if value is not None and value > students:
            raise img.fail("subcount_exceeds_students", part, "more than student_count")
    if img.out["class_count"] == 0 and students > 0:
        img.flag("class_count_zero_with_students")


CLASS_STATS = DatasetRules(
    dataset_id="education.class_stats",
    record="ClassStat",
    doc="Standardized class and enrolment counts, checked for consistency.",
    rules=(
        Text("school_id"),
        SchoolYear("school_year"),
        Int("grade", min=0, max=12),
        Int("class_count", min=0, max=10_000),
        Int("student_count", min=0, max=1_000_000),
        Int("female_student_count", min=0, max=1_000_000),
        Int("ethnic_minority_student_count", min=0, max=1_000_000),
        Int("disabled_student_count", required=False, min=0, max=1_000_000),
        Int("repeating_student_count", required=False, min=0, max=1_000_000),
        Date("reported_date"),
    ),
    checks=(_class_counts,),
)


TEACHERS = DatasetRules(
    dataset_id="education.teachers",
    record="Teacher",
    doc="A standardized teacher: NFC name, CCCD checked against birth date and sex.",
    rules=(
        Text("teacher_id"),
        Text("school_id"),
        Text("full_name", case="person"),
        Date("birth_date", birth=True),
        Enum("sex", _SEXES, required=False),
        CitizenId("citizen_id", birth_date="birth_date", sex="sex"),
        Code("subject_code", "subjects", required=False, keep_unknown=True),
        Enum(
            "qualification",
            frozenset({"INTERMEDIATE", "COLLEGE", "BACHELOR", "MASTER", "DOCTORATE"}),
            required=False,
        ),
        Enum("employment_type", frozenset({"CIVIL_SERVANT", "CONTRACT"})),
        Enum(
            "status",
            frozenset({"ACTIVE", "ON_LEAVE", "TRANSFERRED", "RETIRED", "TERMINATED"}),
        ),
        # A start date agreed for next term is legitimate: flagged, not rejected.
        Date("start_date", required=False, future="flag"),
    ),
)


@dataclass(frozen=True)
class Scores(Rule):
    """Subject -> score 0-10; subject codes mapped to the national list."""

    name: str
    required: bool = True

    def apply(self, img: Image) -> None:
        value = img.value(self.name, self.required)
        if not isinstance(value, Mapping):
            raise img.fail("invalid_field", self.name, "expected a map of subject to score")
        subjects = img.ctx.codes["subjects"]
        scores: dict[str, float] = {}
        for subject, score in value.items():
            if not isinstance(subject, str) or not subject.strip():
                raise img.fail("invalid_field", self.name, "subject code is not text")
            if isinstance(score, bool) or not isinstance(score, int | float):
                raise img.fail("invalid_field", self.name, "a score is not a number")
            if not (math.isfinite(score) and 0 <= score <= _MAX_SCORE):
                raise img.fail("score_out_of_range", self.name, "a score is outside 0-10")
            match = subjects.lookup(subject)
            if match is None:
                img.flag("code_not_in_list")
                code = subject.strip().upper()
            else:
                if match.mapped:
                    img.flag("code_mapped")
                code = match.entry.code
            if code in scores:
                raise img.fail("invalid_field", self.name, f"subject {code} appears twice")
            scores[code] = float(score)
        img.out[self.name] = scores

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        doc = f"{raw[self.name]['doc']} Keys are national subject codes (codes_subjects.csv)."
        return [{"name": self.name, "type": {"type": "map", "values": "double"}, "doc": doc}]


def _total(img: Image) -> None:
    total = img.out["total_score"]
    if total is None:
        return
    expected = sum(img.out["scores"].values()) + (img.out["bonus_points"] or 0.0)
    if abs(total - expected) > _TOTAL_TOLERANCE:
        img.flag("total_score_mismatch")


EXAM_RESULTS = DatasetRules(
    dataset_id="education.exam_results",
    record="ExamResult",
    doc="A standardized exam result: CCCD checked, current commune code, national subjects.",
    rules=(
        Enum("exam_type", frozenset({"GRADE10_ENTRANCE", "HS_GRADUATION"})),
        Int("exam_year", min=1990, max=2100),
        Text("candidate_number"),
        Text("exam_council_code", case="upper"),
        Date("first_exam_date", future="flag"),
        Text("student_name", case="person"),
        Date("student_birth_date", required=False, birth=True),
        CitizenId("student_citizen_id", birth_date="student_birth_date"),
        Text("school_id", required=False),
        Commune("commune_code"),
        Scores("scores"),
        Float("bonus_points", required=False, min=0, max=_MAX_SCORE),
        Float("total_score", required=False, min=0, max=100),
    ),
    checks=(_total,),
)
