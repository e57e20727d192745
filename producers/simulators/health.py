"""The health data portal and hospital systems: facilities, encounters, disease cases.

Encounters and cases name facilities of the ``health.facilities`` roster. Encounter
times are ``yyyyMMddHHmm`` local text, as the insurance data exchange sends them; an
inpatient stay is published at admission and again at discharge. Disease cases move
SUSPECTED → CONFIRMED and UNDER_TREATMENT → RECOVERED.

Defects: unknown commune code; a malformed CCCD; discharge before admission; an
insurance payment larger than the cost; a case reported in the far future.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

from producers.simulators._common import (
    LOCAL,
    UNKNOWN_COMMUNE,
    History,
    Sim,
    SimRecord,
    SimSpec,
    State,
    emit,
    local_compact,
)
from schemas.domain.reference import ReferenceData
from schemas.models.common import Sex
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
    Ownership,
)

__all__ = ["simulate_disease_cases", "simulate_encounters", "simulate_facilities"]

# (code, name, level, type, ownership, commune, beds)
HOSPITALS = [
    (
        "75001",
        "Bệnh viện Đa khoa Đồng Nai",
        "SPECIALIZED",
        "GENERAL_HOSPITAL",
        "PUBLIC",
        "75004",
        1400,
    ),
    ("75002", "Bệnh viện Đa khoa Thống Nhất", "BASIC", "GENERAL_HOSPITAL", "PUBLIC", "75003", 1000),
    (
        "75003",
        "Bệnh viện Nhi đồng Đồng Nai",
        "SPECIALIZED",
        "SPECIALIZED_HOSPITAL",
        "PUBLIC",
        "75002",
        700,
    ),
    (
        "75004",
        "Bệnh viện Đa khoa khu vực Long Khánh",
        "BASIC",
        "GENERAL_HOSPITAL",
        "PUBLIC",
        "75013",
        600,
    ),
    (
        "75005",
        "Bệnh viện Đa khoa khu vực Long Thành",
        "BASIC",
        "GENERAL_HOSPITAL",
        "PUBLIC",
        "75015",
        500,
    ),
    (
        "75006",
        "Bệnh viện Phổi Đồng Nai",
        "SPECIALIZED",
        "SPECIALIZED_HOSPITAL",
        "PUBLIC",
        "75001",
        250,
    ),
    (
        "75007",
        "Trung tâm Kiểm soát bệnh tật tỉnh Đồng Nai",
        "BASIC",
        "PREVENTIVE_MEDICINE_CENTER",
        "PUBLIC",
        "75001",
        0,
    ),
    ("75008", "Bệnh viện Quốc tế Đồng Nai", "BASIC", "GENERAL_HOSPITAL", "PRIVATE", "75002", 200),
    (
        "75009",
        "Phòng khám Đa khoa Y Sài Gòn Biên Hòa",
        "INITIAL",
        "POLYCLINIC",
        "PRIVATE",
        "75001",
        10,
    ),
    (
        "70001",
        "Bệnh viện Đa khoa tỉnh Bình Phước",
        "SPECIALIZED",
        "GENERAL_HOSPITAL",
        "PUBLIC",
        "75026",
        800,
    ),
    (
        "70002",
        "Trung tâm Y tế khu vực Bình Long",
        "BASIC",
        "MEDICAL_CENTER",
        "PUBLIC",
        "75030",
        250,
    ),
    ("70003", "Trung tâm Y tế khu vực Lộc Ninh", "BASIC", "MEDICAL_CENTER", "PUBLIC", "75034", 200),
    (
        "70004",
        "Trung tâm Y tế khu vực Phước Long",
        "BASIC",
        "MEDICAL_CENTER",
        "PUBLIC",
        "75028",
        220,
    ),
]
DEPARTMENTS = ["K01", "K02", "K03", "K19", "K26", "K30", "K33", "K48"]  # khám, HSCC, nội, nhi, …
DIAGNOSES = [
    ("J06.9", 18), ("I10", 16), ("E11.9", 10), ("K29.7", 8), ("J18.9", 6), ("A09", 6),
    ("A90", 4), ("A91", 2), ("M54.5", 6), ("J20.9", 6), ("N39.0", 4), ("B05.9", 1),
    ("S52.5", 3), ("O80", 3), ("I63.9", 2), ("K35.8", 2), ("A01.0", 1), ("B08.4", 2),
]  # fmt: skip
SECONDARY = ["I10", "E11.9", "E78.5", "K21.9", "Z86.7", "I25.1"]
DISEASES = [
    ("A90", "Sốt Dengue", 30),
    ("A91", "Sốt xuất huyết Dengue", 12),
    ("B08.4", "Bệnh tay chân miệng", 20),
    ("A09", "Tiêu chảy nhiễm trùng", 12),
    ("B05", "Bệnh sởi", 8),
    ("B01", "Bệnh thủy đậu", 6),
    ("J10", "Cúm", 6),
    ("A01.0", "Bệnh thương hàn", 2),
    ("A37", "Bệnh ho gà", 2),
    ("A82", "Bệnh dại", 1),
]


@dataclass(frozen=True)
class _Facility:
    code: str
    name: str
    level: FacilityLevel
    type: FacilityType
    ownership: Ownership
    commune: str
    beds: int


def _facilities(ref: ReferenceData) -> list[_Facility]:
    out = [
        _Facility(
            code, name, FacilityLevel(level), FacilityType(kind), Ownership(own), commune, beds
        )
        for code, name, level, kind, own, commune, beds in HOSPITALS
    ]
    current = sorted(c for c, e in ref.crosswalk.items() if c == e.new_code)
    for i, commune in enumerate(current):
        place = ref.crosswalk[commune].name_new
        out.append(
            _Facility(
                code=f"75{100 + i:03d}",
                name=f"Trạm Y tế {place.lower().split(' ', 1)[0]} {place.split(' ', 1)[1]}",
                level=FacilityLevel.INITIAL,
                type=FacilityType.COMMUNE_HEALTH_STATION,
                ownership=Ownership.PUBLIC,
                commune=commune,
                beds=5,
            )
        )
    return out


def simulate_facilities(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("health.facilities", spec, ref)
    roster = _facilities(ref)
    defects = sim.defects(len(roster), ("unknown_admin_unit",))
    histories: list[History] = []
    for fac, reason in zip(roster, defects, strict=True):
        lat, lon = sim.point_in(fac.commune)
        license_no = f"{sim.rng.randint(1, 999):03d}/ĐNAI-GPHĐ"

        def make(
            beds: int,
            status: FacilityStatus,
            f: _Facility = fac,
            r: str | None = reason,
            lat: float = lat,
            lon: float = lon,
            license_no: str = license_no,
        ) -> HealthFacility:
            return HealthFacility(
                facility_code=f.code,
                facility_name=f.name,
                level=f.level,
                facility_type=f.type,
                ownership=f.ownership,
                commune_code=UNKNOWN_COMMUNE if r else f.commune,
                address=sim.commune_name(f.commune),
                latitude=lat,
                longitude=lon,
                beds=beds or None,
                license_number=license_no,
                status=status,
            )

        history = History(reason=reason)
        first = sim.moment(working_hours=True)
        history.states.append(State(first, make(fac.beds, FacilityStatus.ACTIVE)))
        if fac.beds > 50 and sim.rng.random() < 0.2:
            more = fac.beds + sim.rng.choice((20, 50, 100))
            later = first + sim.days(0.5, spec.days)
            history.states.append(State(later, make(more, FacilityStatus.ACTIVE)))
        histories.append(history)
    return emit(sim, histories)


def _insurance_number(sim: Sim, province: str) -> str:
    group = sim.pick(("DN", "HC", "GD", "HS", "TE", "HN", "CN"))
    return f"{group}{sim.rng.randint(1, 5)}{province}{sim.rng.randint(0, 9_999_999_999):010d}"


def simulate_encounters(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("health.encounters", spec, ref)
    roster = [f for f in _facilities(ref) if f.type is not FacilityType.PREVENTIVE_MEDICINE_CENTER]
    codes, weights = zip(*DIAGNOSES, strict=True)
    defects = sim.defects(
        sim.count, ("invalid_citizen_id", "discharged_before_admitted", "covered_exceeds_cost")
    )
    histories: list[History] = []
    for i, reason in enumerate(defects):
        fac = sim.pick(roster)
        bad_id = reason if reason == "invalid_citizen_id" else None
        person = sim.person(0, 90, bad_id=bad_id)
        kind = sim.rng.choices(list(EncounterType), [70, 18, 4, 8])[0]
        if fac.type is FacilityType.COMMUNE_HEALTH_STATION:
            kind = EncounterType.OUTPATIENT
        admitted = sim.moment(working_hours=kind is EncounterType.OUTPATIENT)
        if kind is EncounterType.INPATIENT:
            discharged = admitted + sim.days(2, 10)
        else:
            discharged = admitted + sim.hours(0.5, 6)
        dx = [sim.rng.choices(codes, weights)[0]]
        if sim.rng.random() < 0.3:
            dx.append(sim.pick(SECONDARY))
        per_day = 6_000_000 if kind is EncounterType.INPATIENT else 350_000
        days = max(1.0, (discharged - admitted).total_seconds() / 86400)
        cost = round(per_day * days * sim.rng.uniform(0.4, 1.8), -3)
        insured = sim.rng.random() < 0.92
        covered = round(cost * sim.pick((0.8, 0.95, 1.0)), -3) if insured else 0.0
        if reason == "covered_exceeds_cost":
            covered = round(cost * sim.rng.uniform(1.5, 3), -3)
        insurance = _insurance_number(sim, person.citizen_id[1:3]) if insured else None
        shown_discharge = discharged
        if reason == "discharged_before_admitted":
            shown_discharge = admitted - sim.hours(2, 72)
        person_sex = Sex(person.sex)
        dept = "K01" if kind is EncounterType.OUTPATIENT else sim.pick(DEPARTMENTS)
        outcome = sim.rng.choices(
            [EncounterOutcome.CURED, EncounterOutcome.IMPROVED, EncounterOutcome.UNCHANGED],
            [55, 40, 5],
        )[0]

        def make(
            done: bool,
            eid: str = f"{fac.code}-{admitted.astimezone(LOCAL):%Y%m%d}-{i + 1:06d}",
            fac_code: str = fac.code,
            person_name: str = person.full_name,
            cid: str = person.citizen_id,
            born: date = person.birth_date,
            sex: Sex = person_sex,
            insurance: str | None = insurance,
            kind: EncounterType = kind,
            admitted_text: str = local_compact(admitted),
            discharged_text: str = local_compact(shown_discharge),
            dx: list[str] = dx,
            cost: float = cost,
            covered: float = covered,
            outcome: EncounterOutcome = outcome,
            dept: str = dept,
        ) -> Encounter:
            return Encounter(
                encounter_id=eid,
                facility_code=fac_code,
                patient_citizen_id=cid,
                patient_name=person_name,
                patient_birth_date=born,
                patient_sex=sex,
                insurance_number=insurance,
                encounter_type=kind,
                department_code=dept,
                admitted_at=admitted_text,
                discharged_at=discharged_text if done else None,
                diagnosis_codes=dx,
                total_cost=cost if done else None,
                insurance_covered_amount=covered if done else 0.0,
                outcome=outcome if done else None,
            )

        history = History(reason=reason)
        if kind is EncounterType.INPATIENT and reason is None:
            history.states.append(State(admitted, make(False)))
        history.states.append(State(max(discharged, admitted), make(True)))
        if history.states[-1].at > sim.end and reason is not None:
            history.states[-1] = State(admitted, history.states[-1].record)
        histories.append(history)
    return emit(sim, histories)


def simulate_disease_cases(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("health.disease_cases", spec, ref)
    reporters = [f for f in _facilities(ref) if f.type is not FacilityType.POLYCLINIC]
    names = {code: name for code, name, _ in DISEASES}
    codes = [code for code, _, _ in DISEASES]
    weights = [w for _, _, w in DISEASES]
    defects = sim.defects(
        sim.count, ("unknown_admin_unit", "invalid_citizen_id", "far_future_timestamp")
    )
    histories: list[History] = []
    for i, reason in enumerate(defects):
        code = sim.rng.choices(codes, weights)[0]
        child = code in ("B08.4", "B05", "B01", "A37")
        person = sim.person(0, 6 if child else 70, bad_id=reason)
        reported = sim.moment()
        shown_report = sim.far_future() if reason == "far_future_timestamp" else reported
        onset = (reported - timedelta(days=sim.rng.randint(1, 5))).astimezone(LOCAL).date()
        commune = UNKNOWN_COMMUNE if reason == "unknown_admin_unit" else sim.commune()
        fac = sim.pick(reporters)
        with_id = sim.rng.random() < 0.7 or reason == "invalid_citizen_id"
        person_sex = Sex(person.sex)
        age = max(0, (reported.astimezone(LOCAL).date() - person.birth_date).days // 365)

        def make(
            cls: CaseClassification,
            outcome: CaseOutcome,
            cid: str = f"CB-{reported.astimezone(LOCAL):%Y%m%d}-{i + 1:05d}",
            code: str = code,
            onset: date = onset,
            shown: datetime = shown_report,
            fac_code: str = fac.code,
            commune: str = commune,
            age: int = age,
            sex: Sex = person_sex,
            patient: str | None = person.citizen_id if with_id else None,
        ) -> DiseaseCase:
            return DiseaseCase(
                case_id=cid,
                disease_code=code,
                disease_name=names[code],
                onset_date=onset,
                reported_at=shown,
                reporting_facility_code=fac_code,
                commune_code=commune,
                age_years=age,
                sex=sex,
                patient_citizen_id=patient,
                classification=cls,
                outcome=outcome,
            )

        history = History(reason=reason)
        history.states.append(
            State(reported, make(CaseClassification.SUSPECTED, CaseOutcome.UNDER_TREATMENT))
        )
        if sim.rng.random() < 0.7:
            confirmed = reported + sim.hours(6, 72)
            history.states.append(
                State(confirmed, make(CaseClassification.CONFIRMED, CaseOutcome.UNDER_TREATMENT))
            )
            if sim.rng.random() < 0.6:
                recovered = confirmed + sim.days(3, 10)
                history.states.append(
                    State(recovered, make(CaseClassification.CONFIRMED, CaseOutcome.RECOVERED))
                )
        histories.append(history)
    return emit(sim, histories)
