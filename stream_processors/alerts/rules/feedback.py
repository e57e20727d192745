"""Rule groups ``feedback_unit`` and ``feedback_commune``: citizen reports (``feedback.reports``).

Keys: the handling unit code (``UNASSIGNED`` while no unit has the report), and the
commune code. Payloads (``alert_facts``): ``{"k": "open", "due_h"}`` for a report
received / assigned / in progress with a response deadline, ``{"k": "on_time" |
"late", "day"}`` for one responded to (rejected reports and reports without a
deadline count nowhere).

Rule ``feedback_unanswered``: the number of reports still unanswered once their
deadline hour has passed — a count per subject, never one alert per report. The rule's
``by`` list says which of the two groups evaluate it.
"""

from __future__ import annotations

from typing import Any, Literal

from stream_processors.alerts.lifecycle import Condition, Severity, Status, disabled
from stream_processors.alerts.rules.config import RulesConfig
from stream_processors.alerts.rules.window import (
    day_start_ms,
    deadline_apply,
    deadline_counts,
    local_day,
)

__all__ = ["BY_COMMUNE", "BY_UNIT", "RULE", "UNASSIGNED", "FeedbackGroup"]

BY_UNIT = "feedback_unit"
BY_COMMUNE = "feedback_commune"
DATASET = "feedback.reports"
RULE = "feedback_unanswered"
UNASSIGNED = "UNASSIGNED"


class FeedbackGroup:
    def __init__(self, by: Literal["unit", "commune"]) -> None:
        self.by: Literal["unit", "commune"] = by
        self.name = BY_UNIT if by == "unit" else BY_COMMUNE

    def apply(
        self, state: dict[str, Any] | None, deltas: list[dict[str, Any]], rules: RulesConfig
    ) -> dict[str, Any]:
        return deadline_apply(state, deltas, rules.feedback_unanswered.window_days)

    def evaluate(
        self, key: str, state: dict[str, Any], now_ms: int, rules: RulesConfig
    ) -> list[Condition]:
        cfg = rules.feedback_unanswered
        kind: Literal["unit", "commune"] = self.by
        if not cfg.enabled or self.by not in cfg.by:
            return [disabled(RULE, DATASET, kind, key, key, now_ms)]
        on_time, late, overdue, pending = deadline_counts(state, now_ms, cfg.window_days)
        status: Status = (
            "firing"
            if overdue >= cfg.raise_at
            else "clear"
            if overdue < cfg.clear_below
            else "holding"
        )
        severity: Severity = "CRITICAL" if overdue >= cfg.critical_at else cfg.severity
        who_vi = f"Đơn vị {key}" if kind == "unit" else f"Xã/phường {key}"
        who_en = f"Unit {key}" if kind == "unit" else f"Commune {key}"
        return [
            Condition(
                rule=RULE,
                status=status,
                severity=severity,
                dataset=DATASET,
                subject_kind=kind,
                subject=key,
                unit_code=key,
                value=float(overdue),
                threshold=float(cfg.raise_at),
                clear_threshold=float(cfg.clear_below),
                window=f"{cfg.window_days}d",
                window_days=cfg.window_days,
                window_start_ms=day_start_ms(local_day(now_ms) - cfg.window_days + 1),
                window_end_ms=now_ms,
                evidence={
                    "unanswered_overdue": overdue,
                    "unanswered_not_due": pending,
                    "answered_on_time": on_time,
                    "answered_late": late,
                },
                message_vi=f"{who_vi}: {overdue} phản ánh quá hạn trả lời chưa được xử lý",
                message_en=f"{who_en}: {overdue} citizen reports unanswered past their deadline",
                material_change=cfg.update_step,
                min_update_interval_ms=cfg.min_update_interval_ms,
            )
        ]
