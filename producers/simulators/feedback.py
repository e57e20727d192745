"""The citizen app: reports (phản ánh kiến nghị) and their handling.

A report is received at any hour (citizens report evenings and weekends), assigned to
the commune or the competent department, handled and responded to; the response
deadline is a number of working days, and a share of the reports miss it (responded
late or still open past the deadline). A few are rejected (duplicates, out of scope).

Defects: unknown commune code; a response before the report; a far-future receive time.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from producers.simulators._common import (
    LOCAL,
    UNKNOWN_COMMUNE,
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
from schemas.models.feedback import FeedbackReport, ReportCategory, ReportStatus

__all__ = ["simulate_reports"]

TEXTS: dict[ReportCategory, list[str]] = {
    ReportCategory.TRAFFIC: [
        "Đèn tín hiệu giao thông tại ngã tư bị hỏng từ sáng nay, xe cộ đi lại lộn xộn",
        "Xe tải chở đất làm rơi vãi trên đường, rất nguy hiểm cho người đi xe máy",
    ],
    ReportCategory.URBAN_ORDER: [
        "Hàng quán lấn chiếm vỉa hè, người đi bộ phải đi xuống lòng đường",
        "Quảng cáo rao vặt dán tràn lan trên cột điện",
    ],
    ReportCategory.ENVIRONMENT: [
        "Rác thải tập kết nhiều ngày chưa được thu gom, bốc mùi hôi thối",
        "Cơ sở sản xuất xả khói đen và mùi khét vào ban đêm",
        "Nước thải chảy ra rạch có màu đen, cá chết nổi",
    ],
    ReportCategory.INFRASTRUCTURE: [
        "Mặt đường xuất hiện ổ gà lớn, đã có người bị té ngã",
        "Nắp cống bị vỡ, đề nghị thay mới để đảm bảo an toàn",
    ],
    ReportCategory.ELECTRICITY_WATER: [
        "Khu phố mất nước sinh hoạt hai ngày chưa có thông báo",
        "Đèn chiếu sáng công cộng trên tuyến đường bị tắt cả tuần",
    ],
    ReportCategory.SECURITY_ORDER: [
        "Nhóm thanh niên tụ tập đua xe, gây ồn ào sau 23 giờ",
        "Karaoke mở loa công suất lớn quá khuya",
    ],
    ReportCategory.HEALTH: [
        "Khu dân cư có nhiều ca sốt xuất huyết, đề nghị phun thuốc diệt muỗi",
    ],
    ReportCategory.EDUCATION: [
        "Trường thu các khoản ngoài quy định đầu năm học",
    ],
    ReportCategory.ADMINISTRATIVE_PROCEDURE: [
        "Hồ sơ đăng ký biến động đất đai quá hạn nhưng chưa được trả kết quả",
        "Cán bộ một cửa yêu cầu nộp thêm giấy tờ không có trong quy định",
    ],
    ReportCategory.OTHER: ["Đề nghị bố trí thêm sân chơi cho trẻ em trong khu dân cư"],
}
WEIGHTS = [18, 14, 16, 14, 10, 8, 5, 3, 7, 5]
DEPARTMENT = {
    ReportCategory.TRAFFIC: "DNA.SXD",
    ReportCategory.INFRASTRUCTURE: "DNA.SXD",
    ReportCategory.ENVIRONMENT: "DNA.SNNMT",
    ReportCategory.ELECTRICITY_WATER: "DNA.SCT",
    ReportCategory.SECURITY_ORDER: "DNA.CAT",
    ReportCategory.HEALTH: "DNA.SYT",
    ReportCategory.EDUCATION: "DNA.SGDDT",
    ReportCategory.ADMINISTRATIVE_PROCEDURE: "DNA.TTPVHCC",
}
STREETS = ["Phạm Văn Thuận", "Đồng Khởi", "Võ Thị Sáu", "Nguyễn Ái Quốc", "Phú Riềng Đỏ"]


def simulate_reports(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim("feedback.reports", spec, ref)
    defects = sim.defects(
        sim.count,
        ("unknown_admin_unit", "responded_before_received", "far_future_timestamp"),
        weight=1.3,
    )
    categories = list(TEXTS)
    histories: list[History] = []
    for i, reason in enumerate(defects):
        received = sim.moment()
        category = sim.rng.choices(categories, WEIGHTS)[0]
        commune = sim.commune(old_share=0.0)
        lat, lon = sim.point_in(commune)
        commune_unit = f"DNA.UBND.{commune}"
        if commune_unit in ref.receiving_units and category not in (
            ReportCategory.HEALTH,
            ReportCategory.EDUCATION,
        ):
            unit = commune_unit
        else:
            unit = DEPARTMENT.get(category, "DNA.VPUB")
        deadline = local_time(
            working_days_after(received.astimezone(LOCAL).date(), sim.pick((5, 7, 10))), 17.0
        )
        text = f"{sim.pick(TEXTS[category])} (đường {sim.pick(STREETS)})"
        late = sim.rng.random() < 0.15
        shown_received = sim.far_future() if reason == "far_future_timestamp" else received

        def make(
            status: ReportStatus,
            responded: datetime | None,
            report_id: str = f"PA-{received.astimezone(LOCAL):%Y%m%d}-{i + 1:06d}",
            category: ReportCategory = category,
            text: str = text,
            commune: str = UNKNOWN_COMMUNE if reason == "unknown_admin_unit" else commune,
            lat: float = lat,
            lon: float = lon,
            phone: str | None = sim.phone() if sim.rng.random() < 0.8 else None,
            unit: str = unit,
            shown_received: datetime = shown_received,
            deadline: datetime = deadline,
        ) -> FeedbackReport:
            return FeedbackReport(
                report_id=report_id,
                category=category,
                description=text,
                commune_code=commune,
                latitude=lat,
                longitude=lon,
                reporter_phone=phone,
                handling_unit_code=unit if status is not ReportStatus.RECEIVED else None,
                status=status,
                received_at=shown_received,
                response_deadline=deadline,
                responded_at=responded,
            )

        history = History(reason=reason)
        if reason == "responded_before_received":
            responded = received - sim.hours(2, 72)
            history.states.append(State(received, make(ReportStatus.RESPONDED, responded)))
            histories.append(history)
            continue
        history.states.append(State(received, make(ReportStatus.RECEIVED, None)))
        if sim.rng.random() < 0.04:
            rejected = received + sim.hours(1, 24)
            history.states.append(State(rejected, make(ReportStatus.REJECTED, None)))
            histories.append(history)
            continue
        assigned = received + sim.hours(0.5, 8)
        history.states.append(State(assigned, make(ReportStatus.ASSIGNED, None)))
        working = assigned + sim.hours(2, 48)
        history.states.append(State(working, make(ReportStatus.IN_PROGRESS, None)))
        if late:
            responded = deadline + sim.hours(4, 24 * 7)
        else:
            span = max((deadline - working).total_seconds(), 3600)
            responded = working + timedelta(seconds=round(sim.rng.uniform(0.1, 0.95) * span))
        history.states.append(State(responded, make(ReportStatus.RESPONDED, responded)))
        closed = responded + sim.days(1, 5)
        history.states.append(State(closed, make(ReportStatus.CLOSED, responded)))
        histories.append(history)
    return emit(sim, histories)
