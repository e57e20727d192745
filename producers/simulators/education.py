"""The Department of Education database: schools, class statistics, teachers, exam results.

All four datasets share one school roster (deterministic for the seed), so class stats,
teachers and exam results name schools that ``education.schools`` publishes.

Defects: unknown commune code (schools, exam results); a malformed CCCD or one that
disagrees with the record's sex / birth year (teachers, exam results); more girls than
pupils (class stats).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import date, timedelta

from producers.simulators._common import (
    LOCAL,
    UNKNOWN_COMMUNE,
    History,
    Sim,
    SimRecord,
    SimSpec,
    State,
    emit,
)
from schemas.domain.citizen_id import make_citizen_id
from schemas.domain.reference import ReferenceData
from schemas.models.common import Sex
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

__all__ = [
    "simulate_class_stats",
    "simulate_exam_results",
    "simulate_schools",
    "simulate_teachers",
]

PATRONS = [
    "Nguyễn Du", "Lê Quý Đôn", "Trần Hưng Đạo", "Ngô Quyền", "Nguyễn Trãi", "Chu Văn An",
    "Lương Thế Vinh", "Nguyễn Bỉnh Khiêm", "Trần Phú", "Võ Thị Sáu", "Lê Hồng Phong",
    "Nguyễn Đình Chiểu", "Hùng Vương", "Phan Bội Châu", "Quang Trung", "Đoàn Thị Điểm",
]  # fmt: skip
FLOWERS = ["Hoa Sen", "Hoa Mai", "Sơn Ca", "Họa Mi", "Vành Khuyên", "Hướng Dương"]
LEVEL_PREFIX = {
    SchoolLevel.PRESCHOOL: "Trường Mầm non",
    SchoolLevel.PRIMARY: "Trường Tiểu học",
    SchoolLevel.LOWER_SECONDARY: "Trường THCS",
    SchoolLevel.UPPER_SECONDARY: "Trường THPT",
    SchoolLevel.MULTI_LEVEL: "Trường TH, THCS và THPT",
    SchoolLevel.CONTINUING_EDUCATION: "Trung tâm Giáo dục nghề nghiệp - GDTX",
}
GRADES = {
    SchoolLevel.PRESCHOOL: range(0, 1),
    SchoolLevel.PRIMARY: range(1, 6),
    SchoolLevel.LOWER_SECONDARY: range(6, 10),
    SchoolLevel.UPPER_SECONDARY: range(10, 13),
    SchoolLevel.MULTI_LEVEL: range(1, 13),
    SchoolLevel.CONTINUING_EDUCATION: range(10, 13),
}
SUBJECTS = ["TOAN", "VAN", "ANH", "LY", "HOA", "SINH", "SU", "DIA", "GDCD", "TIN", "THEDUC"]
GRAD_ELECTIVES = ["LY", "HOA", "SINH", "SU", "DIA", "GDKTPL", "TIN", "CONGNGHE", "ANH"]
STREETS = ["Phạm Văn Thuận", "Đồng Khởi", "Nguyễn Ái Quốc", "Phú Riềng Đỏ", "Hùng Vương"]


@dataclass(frozen=True)
class _School:
    school_id: str
    name: str
    level: SchoolLevel
    ownership: Ownership
    commune: str
    lat: float
    lon: float
    established: int


def _roster(spec: SimSpec, ref: ReferenceData) -> list[_School]:
    """The province's schools, the same for every education dataset of a seed."""
    sim = Sim("education.roster", spec, ref)
    size = min(300, max(12, spec.days * spec.per_day // 3))
    levels = list(LEVEL_PREFIX)
    weights = [30, 30, 22, 12, 3, 3]
    out: list[_School] = []
    used: set[str] = set()
    for i in range(size):
        level = sim.rng.choices(levels, weights)[0]
        commune = sim.pick(sim.communes)
        patron = sim.pick(FLOWERS) if level is SchoolLevel.PRESCHOOL else sim.pick(PATRONS)
        name = f"{LEVEL_PREFIX[level]} {patron}"
        if name in used:
            place = sim.commune_name(commune).split(" ", 1)[1]
            name = f"{name} ({place})"
        used.add(name)
        ownership = sim.rng.choices(list(Ownership), [85, 3, 12])[0]
        lat, lon = sim.point_in(commune)
        out.append(
            _School(
                school_id=f"75{i + 1:06d}",
                name=name,
                level=level,
                ownership=ownership,
                commune=commune,
                lat=lat,
                lon=lon,
                established=sim.rng.randint(1960, 2022),
            )
        )
    return out


def _school_year(day: date) -> str:
    first = day.year if day.month >= 9 else day.year - 1
    return f"{first}-{first + 1}"


def simulate_schools(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("education.schools", spec, ref)
    roster = _roster(spec, ref)
    defects = sim.defects(len(roster), ("unknown_admin_unit",))
    histories: list[History] = []
    for school, reason in zip(roster, defects, strict=True):
        commune = UNKNOWN_COMMUNE if reason else school.commune
        address = (
            f"Số {sim.rng.randint(1, 300)} đường {sim.pick(STREETS)}, "
            f"{sim.commune_name(school.commune)}"
        )

        def make(
            status: SchoolStatus,
            phone: str,
            s: _School = school,
            c: str = commune,
            address: str = address,
        ) -> School:
            return School(
                school_id=s.school_id,
                school_name=s.name,
                school_level=s.level,
                ownership=s.ownership,
                commune_code=c,
                address=address,
                phone=phone,
                email=f"c{s.school_id}@dongnai.edu.vn",
                latitude=s.lat,
                longitude=s.lon,
                established_year=s.established,
                status=status,
            )

        phone = f"+84251{sim.rng.randint(0, 9_999_999):07d}"
        history = History(reason=reason)
        first = sim.moment(working_hours=True)
        history.states.append(State(first, make(SchoolStatus.ACTIVE, phone)))
        if sim.rng.random() < 0.15:
            later = first + sim.days(0.5, spec.days)
            new_phone = f"+84251{sim.rng.randint(0, 9_999_999):07d}"
            status = SchoolStatus.SUSPENDED if sim.rng.random() < 0.1 else SchoolStatus.ACTIVE
            history.states.append(State(later, make(status, new_phone)))
        histories.append(history)
    return emit(sim, histories)


def simulate_class_stats(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("education.class_stats", spec, ref)
    roster = _roster(spec, ref)
    combos = [(s, g) for s in roster for g in GRADES[s.level]]
    sim.rng.shuffle(combos)
    combos = combos[: sim.count]
    defects = sim.defects(len(combos), ("female_exceeds_students",))
    histories: list[History] = []
    for (school, grade), reason in zip(combos, defects, strict=True):
        first = sim.moment(working_hours=True)
        year = _school_year(first.astimezone(LOCAL).date())
        per_class = sim.rng.randint(30, 45) if grade else sim.rng.randint(20, 35)
        classes = sim.rng.randint(2, 12)
        minority_rate = 0.03 if school.commune < "75026" else sim.rng.uniform(0.1, 0.3)
        history = History(reason=reason)
        at = first
        for _ in range(sim.rng.choice((1, 1, 2))):
            students = classes * per_class + sim.rng.randint(-15, 15)
            female = round(students * sim.rng.uniform(0.45, 0.52))
            if reason:
                female = students + sim.rng.randint(1, 40)
            history.states.append(
                State(
                    at,
                    ClassStat(
                        school_id=school.school_id,
                        school_year=year,
                        grade=grade,
                        class_count=classes,
                        student_count=students,
                        female_student_count=female,
                        ethnic_minority_student_count=round(students * minority_rate),
                        disabled_student_count=sim.rng.randint(0, max(1, students // 100)),
                        repeating_student_count=sim.rng.randint(0, max(1, students // 50))
                        if grade
                        else None,
                        reported_date=at.astimezone(LOCAL).date(),
                    ),
                )
            )
            at = at + sim.days(1, max(1.5, spec.days / 2))
        histories.append(history)
    return emit(sim, histories)


def simulate_teachers(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("education.teachers", spec, ref)
    roster = _roster(spec, ref)
    defects = sim.defects(sim.count, ("invalid_citizen_id", "citizen_id_mismatch"))
    histories: list[History] = []
    for i, reason in enumerate(defects):
        school = sim.pick(roster)
        person = sim.person(23, 60, bad_id=reason)
        degree = sim.rng.choices(list(Qualification), [3, 12, 70, 14, 1])[0]
        employment = (
            EmploymentType.CIVIL_SERVANT if sim.rng.random() < 0.85 else EmploymentType.CONTRACT
        )
        start = person.birth_date + timedelta(days=365 * sim.rng.randint(22, 26))
        subject = None if school.level is SchoolLevel.PRESCHOOL else sim.pick(SUBJECTS)
        person_sex = Sex(person.sex)

        def make(
            status: TeacherStatus,
            s: _School = school,
            p: str = person.full_name,
            cid: str = person.citizen_id,
            born: date = person.birth_date,
            sex: Sex = person_sex,
            subj: str | None = subject,
            q: Qualification = degree,
            st: date = start,
            tid: str = f"GV75{i + 1:07d}",
            emp: EmploymentType = employment,
        ) -> Teacher:
            return Teacher(
                teacher_id=tid,
                school_id=s.school_id,
                full_name=p,
                citizen_id=cid,
                birth_date=born,
                sex=sex,
                subject_code=subj,
                qualification=q,
                employment_type=emp,
                status=status,
                start_date=st,
            )

        history = History(reason=reason)
        first = sim.moment(working_hours=True)
        history.states.append(State(first, make(TeacherStatus.ACTIVE)))
        if sim.rng.random() < 0.1:
            later = first + sim.days(0.5, spec.days)
            status = sim.pick((TeacherStatus.ON_LEAVE, TeacherStatus.TRANSFERRED))
            history.states.append(State(later, make(status)))
        histories.append(history)
    return emit(sim, histories)


def _score(rng: random.Random, step: float, mean: float) -> float:
    raw = min(10.0, max(0.0, rng.gauss(mean, 1.6)))
    return round(round(raw / step) * step, 2)


def simulate_exam_results(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("education.exam_results", spec, ref)
    roster = _roster(spec, ref)
    upper = [s for s in roster if s.level is SchoolLevel.UPPER_SECONDARY] or roster
    lower = [s for s in roster if s.level is SchoolLevel.LOWER_SECONDARY] or roster
    end_day = sim.end.astimezone(LOCAL).date()
    exam_year = end_day.year if end_day >= date(end_day.year, 7, 1) else end_day.year - 1
    defects = sim.defects(
        sim.count, ("invalid_citizen_id", "citizen_id_mismatch", "unknown_admin_unit")
    )
    histories: list[History] = []
    for reason in defects:
        exam = ExamType.GRADE10_ENTRANCE if sim.rng.random() < 0.5 else ExamType.HS_GRADUATION
        grade10 = exam is ExamType.GRADE10_ENTRANCE
        school = sim.pick(lower if grade10 else upper)
        age = 15 if grade10 else 18
        sex = sim.pick(("MALE", "FEMALE"))
        birth = date(exam_year - age, sim.rng.randint(1, 12), sim.rng.randint(1, 28))
        province = "075" if sim.rng.random() < 0.9 else sim.pick(sim.provinces)
        id_sex, id_year = sex, birth.year
        if reason == "invalid_citizen_id":
            province = "999"
        elif reason == "citizen_id_mismatch":
            id_year = birth.year - 1
        cid = make_citizen_id(province, id_year, id_sex, sim.rng.randint(0, 999_999))
        if grade10:
            step, subjects = 0.25, ["TOAN", "VAN", "ANH"]
            first_day = date(exam_year, 6, 3)
        else:
            step = 0.25
            subjects = ["TOAN", "VAN", *sim.rng.sample(GRAD_ELECTIVES, 2)]
            first_day = date(exam_year, 6, 26)
        mean = sim.rng.uniform(5.0, 8.0)
        scores = {s: _score(sim.rng, step, mean) for s in subjects}
        bonus = sim.pick((0.0, 0.0, 0.0, 0.5, 1.0))
        total = round(sum(scores.values()) + bonus, 2)
        council = "48"
        record = ExamResult(
            exam_type=exam,
            exam_year=exam_year,
            candidate_number=f"{council}{sim.serial():06d}",
            exam_council_code=council if not grade10 else "SGDDT-DNA",
            first_exam_date=first_day,
            student_citizen_id=cid,
            student_name=sim.name(sex),
            student_birth_date=birth,
            school_id=school.school_id,
            commune_code=UNKNOWN_COMMUNE if reason == "unknown_admin_unit" else school.commune,
            scores=scores,
            bonus_points=bonus or None,
            total_score=total,
        )
        histories.append(History([State(sim.moment(working_hours=True), record)], reason))
    return emit(sim, histories)
