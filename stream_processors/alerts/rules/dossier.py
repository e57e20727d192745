"""Rule group ``dossier_unit``: a receiving unit's dossiers (``publicservice.dossiers``).

Key: the receiving unit code. Payloads (``alert_facts``): ``{"k": "open", "due_h"}`` for
a dossier received / in progress / waiting for a supplement, ``{"k": "on_time" |
"late", "day"}`` for a completed one (returned and cancelled dossiers count nowhere).

Rules:
- ``dossier_overdue_rate`` — the one definition of docs/domain.md over a rolling window;
  completed dossiers count in the window of their completion day, an open one counts as
  overdue once its deadline hour has passed, however long ago. No denominator, or fewer
  than ``min_dossiers``, raises nothing (an open alert holds).
- ``dossier_due_soon`` — open dossiers not yet overdue whose deadline falls by the end
  of the N-th working day from today (weekends and public holidays skipped).
"""

from __future__ import annotations

from typing import Any

from schemas.domain.working_days import add_working_days
from stream_processors.alerts.lifecycle import Condition, Severity, Status, disabled
from stream_processors.alerts.rules.config import RulesConfig
from stream_processors.alerts.rules.window import (
    HOUR_MS,
    day_of,
    day_start_ms,
    deadline_apply,
    deadline_counts,
    local_date,
    local_day,
)

__all__ = ["DUE_SOON", "GROUP", "OVERDUE", "DossierUnitGroup"]

GROUP = "dossier_unit"
DATASET = "publicservice.dossiers"
OVERDUE = "dossier_overdue_rate"
DUE_SOON = "dossier_due_soon"


class DossierUnitGroup:
    name = GROUP

    def apply(
        self, state: dict[str, Any] | None, deltas: list[dict[str, Any]], rules: RulesConfig
    ) -> dict[str, Any]:
        return deadline_apply(state, deltas, rules.dossier_overdue_rate.window_days)

    def evaluate(
        self, key: str, state: dict[str, Any], now_ms: int, rules: RulesConfig
    ) -> list[Condition]:
        return [self._overdue(key, state, now_ms, rules), self._due_soon(key, state, now_ms, rules)]

    def _overdue(
        self, unit: str, state: dict[str, Any], now_ms: int, rules: RulesConfig
    ) -> Condition:
        cfg = rules.dossier_overdue_rate
        if not cfg.enabled:
            return disabled(OVERDUE, DATASET, "unit", unit, unit, now_ms)
        on_time, late, overdue, _ = deadline_counts(state, now_ms, cfg.window_days)
        total = on_time + late + overdue
        rate = (late + overdue) / total if total > 0 else None
        status: Status
        if rate is None:
            status = "holding"  # no denominator, no rate (not 0): nothing to decide on
        elif rate < cfg.clear_below:
            status = "clear"
        elif rate > cfg.raise_above and total >= cfg.min_dossiers:
            status = "firing"
        else:
            status = "holding"
        shown = rate or 0.0
        severity: Severity = "CRITICAL" if shown >= cfg.critical_at else cfg.severity
        days = cfg.window_days
        if status == "clear":
            vi = f"Đơn vị {unit}: tỷ lệ hồ sơ quá hạn đã giảm còn {shown:.0%} ({days} ngày)"
            en = f"Unit {unit}: dossier overdue rate back to {shown:.0%} over {days} days"
        else:
            vi = (
                f"Đơn vị {unit}: tỷ lệ hồ sơ quá hạn {shown:.0%} trong {days} ngày "
                f"({late + overdue}/{total} hồ sơ, ngưỡng {cfg.raise_above:.0%})"
            )
            en = (
                f"Unit {unit}: dossier overdue rate {shown:.0%} over {days} days "
                f"({late + overdue} of {total} dossiers, threshold {cfg.raise_above:.0%})"
            )
        first_day = local_day(now_ms) - days + 1
        return Condition(
            rule=OVERDUE,
            status=status,
            severity=severity,
            dataset=DATASET,
            subject_kind="unit",
            subject=unit,
            unit_code=unit,
            value=round(shown, 4),
            threshold=cfg.raise_above,
            clear_threshold=cfg.clear_below,
            window=f"{days}d",
            window_days=days,
            window_start_ms=day_start_ms(first_day),
            window_end_ms=now_ms,
            evidence={
                "completed_on_time": on_time,
                "completed_late": late,
                "open_overdue": overdue,
                "total": total,
            },
            message_vi=vi,
            message_en=en,
            material_change=cfg.update_step,
            min_update_interval_ms=cfg.min_update_interval_ms,
        )

    def _due_soon(
        self, unit: str, state: dict[str, Any], now_ms: int, rules: RulesConfig
    ) -> Condition:
        cfg = rules.dossier_due_soon
        if not cfg.enabled:
            return disabled(DUE_SOON, DATASET, "unit", unit, unit, now_ms)
        last_day = add_working_days(local_date(now_ms), cfg.working_days)
        limit_ms = day_start_ms(day_of(last_day) + 1)  # the end of that local day
        due_soon = 0
        pending = 0
        for hour, n in state["open"].items():
            end_of_hour = (int(hour) + 1) * HOUR_MS
            if end_of_hour > now_ms:
                pending += n
                if int(hour) * HOUR_MS < limit_ms:
                    due_soon += n
        due_soon = max(due_soon, 0)
        status: Status = (
            "firing"
            if due_soon >= cfg.raise_at
            else "clear"
            if due_soon < cfg.clear_below
            else "holding"
        )
        severity: Severity = "CRITICAL" if due_soon >= cfg.critical_at else cfg.severity
        n_days = cfg.working_days
        by = f"{last_day:%d/%m/%Y}"
        return Condition(
            rule=DUE_SOON,
            status=status,
            severity=severity,
            dataset=DATASET,
            subject_kind="unit",
            subject=unit,
            unit_code=unit,
            value=float(due_soon),
            threshold=float(cfg.raise_at),
            clear_threshold=float(cfg.clear_below),
            window=f"{n_days} working days",
            window_days=0,
            window_start_ms=now_ms,
            window_end_ms=limit_ms,
            evidence={"due_soon": due_soon, "open_not_due": max(pending, 0)},
            message_vi=(
                f"Đơn vị {unit}: {due_soon} hồ sơ đến hạn trong {n_days} ngày làm việc "
                f"(đến hết {by})"
            ),
            message_en=(
                f"Unit {unit}: {due_soon} dossiers due within {n_days} working days "
                f"(by end of {by})"
            ),
            material_change=cfg.update_step,
            min_update_interval_ms=cfg.min_update_interval_ms,
        )
