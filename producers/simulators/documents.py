"""The document management system: official documents and their processing tasks.

Documents arrive in office hours (incoming from ministries and the provincial
committee, outgoing from departments) and are published when registered; an incoming
one is updated when it is received. Tasks go PENDING → IN_PROGRESS → COMPLETED
(a few returned), with due dates in working days; some are finished late.

Defects: an unknown receiving/assignee unit; a confidential document sent on the bus;
a task done before it was assigned.
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
    local_time,
    working_days_after,
)
from schemas.domain.reference import ReferenceData
from schemas.models.documents import (
    Confidentiality,
    Direction,
    DocumentTask,
    OfficialDocument,
    TaskRole,
    TaskStatus,
    Urgency,
)

__all__ = ["simulate_official_documents", "simulate_tasks"]

# (document type, abbreviation)
TYPES = [
    ("Công văn", ""),
    ("Quyết định", "QĐ"),
    ("Kế hoạch", "KH"),
    ("Thông báo", "TB"),
    ("Báo cáo", "BC"),
    ("Tờ trình", "TTr"),
    ("Chỉ thị", "CT"),
    ("Giấy mời", "GM"),
]
ISSUERS = [
    ("Văn phòng Chính phủ", "VPCP", None),
    ("Bộ Nội vụ", "BNV", None),
    ("Bộ Tài chính", "BTC", None),
    ("Bộ Y tế", "BYT", None),
    ("Ủy ban nhân dân tỉnh Đồng Nai", "UBND", "DNA.VPUB"),
    ("Sở Nội vụ", "SNV", "DNA.SNV"),
    ("Sở Tài chính", "STC", "DNA.STC"),
    ("Sở Xây dựng", "SXD", "DNA.SXD"),
]
SUBJECTS = [
    "V/v triển khai thực hiện Nghị định về chính quyền địa phương hai cấp",
    "V/v báo cáo tình hình giải quyết thủ tục hành chính quý",
    "V/v tăng cường công tác phòng, chống dịch sốt xuất huyết",
    "V/v đẩy mạnh chuyển đổi số và kết nối, chia sẻ dữ liệu",
    "Về việc phê duyệt kế hoạch đào tạo, bồi dưỡng cán bộ, công chức",
    "V/v rà soát, cập nhật danh mục cơ sở dữ liệu dùng chung của tỉnh",
    "V/v tổ chức Hội nghị sơ kết công tác cải cách hành chính",
    "V/v đảm bảo an toàn giao thông dịp Tết Nguyên đán",
    "V/v góp ý dự thảo Quyết định quy định về quản lý nhà nước về đất đai",
]
INSTRUCTIONS = [
    "Chủ trì tham mưu, báo cáo UBND tỉnh trước ngày hạn",
    "Phối hợp cung cấp số liệu",
    "Nghiên cứu, đề xuất xử lý",
    "Để biết, theo dõi",
    None,
]


def simulate_official_documents(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("documents.official_documents", spec, ref)
    defects = sim.defects(sim.count, ("unknown_receiving_unit", "confidential_document"))
    units = [u for u in sim.units if not u.startswith("DNA.UBND.")] or sim.units
    histories: list[History] = []
    for i, reason in enumerate(defects):
        registered = sim.moment(working_hours=True)
        local_day = registered.astimezone(LOCAL).date()
        issuer, abbr, issuer_code = sim.pick(ISSUERS)
        doc_type, type_abbr = sim.pick(TYPES)
        incoming = issuer_code is None or sim.rng.random() < 0.5
        number = sim.rng.randint(1, 4800)
        symbol = f"{number}/{type_abbr}-{abbr}" if type_abbr else f"{number}/{abbr}-VP"
        issued = local_day - timedelta(days=sim.rng.randint(0, 5) if incoming else 0)
        receiver = UNKNOWN_UNIT if reason == "unknown_receiving_unit" else sim.pick(units)
        confidential = (
            Confidentiality.CONFIDENTIAL
            if reason == "confidential_document"
            else Confidentiality.NORMAL
        )
        urgency = sim.rng.choices(list(Urgency), [80, 14, 5, 1])[0]

        def make(
            received: bool,
            doc_id: str = f"VB-{local_day:%Y}-{i + 1:06d}",
            direction: Direction = Direction.INCOMING if incoming else Direction.OUTGOING,
            symbol: str = symbol,
            doc_type: str = doc_type,
            issuer: str = issuer,
            issuer_code: str | None = issuer_code,
            receiver: str = receiver,
            subject: str = sim.pick(SUBJECTS),
            pages: int = sim.rng.randint(1, 25),
            issued_at: object = issued,
            registered: object = registered,
            urgency: Urgency = urgency,
            confidential: Confidentiality = confidential,
        ) -> OfficialDocument:
            return OfficialDocument.model_validate(
                {
                    "document_id": doc_id,
                    "direction": direction,
                    "number_symbol": symbol,
                    "document_type": doc_type,
                    "issuing_unit_name": issuer,
                    "issuing_unit_code": issuer_code,
                    "receiving_unit_code": receiver,
                    "subject": subject,
                    "issued_date": issued_at,
                    "received_at": registered if received else None,
                    "urgency": urgency,
                    "confidentiality": confidential,
                    "page_count": pages,
                }
            )

        history = History(reason=reason)
        if incoming:
            history.states.append(State(registered, make(False)))
            history.states.append(State(registered + sim.minutes(5, 120), make(True)))
        else:
            history.states.append(State(registered, make(False)))
        histories.append(history)
    return emit(sim, histories)


def simulate_tasks(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("documents.tasks", spec, ref)
    defects = sim.defects(sim.count, ("unknown_receiving_unit", "done_before_assigned"), weight=1.3)
    units = [u for u in sim.units if not u.startswith("DNA.UBND.")] or sim.units
    histories: list[History] = []
    for i, reason in enumerate(defects):
        assigned = sim.moment(working_hours=True)
        day = assigned.astimezone(LOCAL).date()
        due = local_time(working_days_after(day, sim.pick((3, 5, 7, 10, 15))), 17.0)
        role = sim.rng.choices(list(TaskRole), [50, 35, 15])[0]
        unit = UNKNOWN_UNIT if reason == "unknown_receiving_unit" else sim.pick(units)
        officer = f"CB{sim.rng.randint(1, 9999):04d}"
        started = assigned + sim.hours(0.2, 24)
        span = (due - started).total_seconds()
        done = started + timedelta(seconds=round(sim.rng.uniform(0.1, 0.95) * max(span, 3600)))
        if sim.rng.random() < 0.12:
            done = due + sim.hours(4, 96)  # late
        final = TaskStatus.RETURNED if sim.rng.random() < 0.04 else TaskStatus.COMPLETED
        shown_done = done
        if reason == "done_before_assigned":
            shown_done = assigned - timedelta(days=sim.rng.randint(1, 10))

        def make(
            status: TaskStatus,
            finished: bool,
            task_id: str = f"CV-{day:%Y%m%d}-{i + 1:06d}",
            doc_id: str = f"VB-{day:%Y}-{sim.rng.randint(1, 999_999):06d}",
            unit: str = unit,
            officer: str = officer,
            role: TaskRole = role,
            instruction: str | None = sim.pick(INSTRUCTIONS),
            assigned: object = assigned,
            due: object = due,
            shown_done: object = shown_done,
        ) -> DocumentTask:
            return DocumentTask.model_validate(
                {
                    "task_id": task_id,
                    "document_id": doc_id,
                    "assignee_unit_code": unit,
                    "assignee_officer_id": officer if status is not TaskStatus.PENDING else None,
                    "role": role,
                    "instruction": instruction,
                    "status": status,
                    "assigned_at": assigned,
                    "due_at": due,
                    "done_at": shown_done if finished else None,
                }
            )

        history = History(reason=reason)
        if reason != "done_before_assigned":
            history.states.append(State(assigned, make(TaskStatus.PENDING, False)))
            history.states.append(State(started, make(TaskStatus.IN_PROGRESS, False)))
            history.states.append(State(done, make(final, True)))
        else:  # the whole story in one change, with an impossible done time
            history.states.append(State(assigned, make(TaskStatus.COMPLETED, True)))
        histories.append(history)
    return emit(sim, histories)
