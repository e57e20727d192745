"""Processing steps of administrative dossiers (``publicservice.dossier_steps``).

Each dossier goes through the one-stop-shop workflow — reception, appraisal, approval,
return of results — each step handled by a unit, moving WAITING → IN_PROGRESS →
COMPLETED in office hours (a few are returned). Times are ISO 8601 with the +07:00
offset, as the portal sends them.

Defects: an unknown handling unit; a step finished before it started.
"""

from __future__ import annotations

from datetime import timedelta

from producers.simulators._common import (
    LOCAL,
    UNKNOWN_UNIT,
    History,
    Sim,
    SimRecord,
    SimSpec,
    State,
    emit,
    local_iso,
    local_time,
    working_days_after,
)
from schemas.domain.reference import ReferenceData
from schemas.models.public_service import DossierStep, StepStatus

__all__ = ["DATASET", "simulate_dossier_steps"]

DATASET = "publicservice.dossier_steps"
DEFECTS = ("unknown_receiving_unit", "finished_before_started")

WORKFLOW = [
    ("TIEP_NHAN", "Tiếp nhận hồ sơ", 0),
    ("THAM_DINH", "Thẩm định hồ sơ", 3),
    ("PHE_DUYET", "Phê duyệt kết quả", 1),
    ("TRA_KET_QUA", "Trả kết quả cho công dân", 1),
]
NOTES = [
    None,
    None,
    "Hồ sơ đầy đủ, hợp lệ",
    "Đã chuyển phòng chuyên môn thẩm định",
    "Đề nghị bổ sung bản sao giấy chứng nhận quyền sử dụng đất",
    "Trình lãnh đạo ký duyệt",
]


def simulate_dossier_steps(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim(DATASET, spec, ref)
    n_steps = sim.count
    dossiers = max(1, n_steps // len(WORKFLOW))
    defects = sim.defects(dossiers * len(WORKFLOW), DEFECTS, weight=1.3)
    units = [u for u in sim.units if u != "DNA.VPUB"]
    histories: list[History] = []
    for d in range(dossiers):
        received = sim.moment(working_hours=True)
        dossier_id = f"HS-{received.astimezone(LOCAL):%y%m%d}-{sim.serial():06d}"
        specialist = sim.pick(units)
        cursor = received
        for order, (code, name, work_days) in enumerate(WORKFLOW, start=1):
            reason = defects[d * len(WORKFLOW) + order - 1]
            unit = "DNA.TTPVHCC" if code in ("TIEP_NHAN", "TRA_KET_QUA") else specialist
            if reason == "unknown_receiving_unit":
                unit = UNKNOWN_UNIT
            officer = f"CB{sim.rng.randint(1, 9999):04d}"
            started = cursor + sim.minutes(5, 90)
            due_day = working_days_after(started.astimezone(LOCAL).date(), max(work_days, 1))
            due = local_time(due_day, 17.0)
            finished = started + sim.hours(0.3, 20 * max(work_days, 1))
            if sim.rng.random() < 0.08:
                finished = due + sim.hours(2, 48)  # late on purpose
            returned = code == "THAM_DINH" and sim.rng.random() < 0.05
            step_id = f"{dossier_id}-B{order}"

            def step(
                status: StepStatus,
                fin: str | None,
                *,
                step_id: str = step_id,
                dossier_id: str = dossier_id,
                order: int = order,
                code: str = code,
                name: str = name,
                unit: str = unit,
                officer: str = officer,
                started_at: str = local_iso(started),
                due_at: str = local_iso(due),
            ) -> DossierStep:
                return DossierStep(
                    step_id=step_id,
                    dossier_id=dossier_id,
                    step_order=order,
                    step_code=code,
                    step_name=name,
                    handling_unit_code=unit,
                    handler_officer_id=officer if status is not StepStatus.WAITING else None,
                    status=status,
                    started_at=started_at,
                    due_at=due_at,
                    finished_at=fin,
                    note=sim.pick(NOTES),
                )

            history = History(reason=reason)
            final = StepStatus.RETURNED if returned else StepStatus.COMPLETED
            if reason == "finished_before_started":
                # One change carrying the whole step, with an impossible finish time.
                fin_text = local_iso(started - timedelta(days=sim.rng.randint(1, 5)))
                history.states.append(State(started, step(final, fin_text)))
            else:
                history.states.append(State(started, step(StepStatus.WAITING, None)))
                history.states.append(
                    State(
                        started + sim.minutes(1, 15),
                        step(StepStatus.IN_PROGRESS, None),
                    )
                )
                history.states.append(State(finished, step(final, local_iso(finished))))
            histories.append(history)
            cursor = finished
            if returned:
                break
    return emit(sim, histories)
