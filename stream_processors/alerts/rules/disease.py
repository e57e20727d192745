"""Rule group ``disease_commune``: notifiable disease cases (``health.disease_cases``).

Key: the commune code of the case. Payload (``alert_facts``): ``{"day": local day of
the report, "d": ICD-10 code}`` — no person, only a count per day and disease. State:
``{"days": {day: {code: n}}, "wm": newest event time}``, days older than the window
plus the baseline weeks dropped, so it is bounded by days × diseases.

Rule ``disease_cases_above_baseline``: ``cases`` = cases reported in the commune over
the ``window_days`` local days ending today; ``baseline`` = the mean cases per window
over the ``baseline_weeks`` weeks before that window, never below
``baseline_floor``. Firing when cases ≥ ``min_cases`` and cases > ``factor`` ×
baseline; clear when cases < ``clear_min_cases`` or cases ≤ ``clear_factor`` × baseline;
CRITICAL above ``critical_factor`` × baseline. ``diseases`` narrows the count.
"""

from __future__ import annotations

from typing import Any

from stream_processors.alerts.lifecycle import Condition, Severity, Status, disabled
from stream_processors.alerts.rules.config import RulesConfig
from stream_processors.alerts.rules.window import day_start_ms, local_day

__all__ = ["GROUP", "RULE", "DiseaseCommuneGroup"]

GROUP = "disease_commune"
DATASET = "health.disease_cases"
RULE = "disease_cases_above_baseline"


class DiseaseCommuneGroup:
    name = GROUP

    def apply(
        self, state: dict[str, Any] | None, deltas: list[dict[str, Any]], rules: RulesConfig
    ) -> dict[str, Any]:
        cfg = rules.disease_cases_above_baseline
        days: dict[str, dict[str, int]] = (
            {d: dict(v) for d, v in state["days"].items()} if state else {}
        )
        wm = int(state["wm"]) if state else 0
        for delta in deltas:
            wm = max(wm, int(delta.get("event_ms") or 0))
        oldest = local_day(wm) - cfg.window_days - 7 * cfg.baseline_weeks + 1
        for delta in deltas:
            day = int(delta["payload"]["day"])
            if day < oldest:
                continue
            code = str(delta["payload"]["d"])
            counts = days.setdefault(str(day), {})
            value = counts.get(code, 0) + int(delta["sign"])
            if value == 0:
                counts.pop(code, None)
            else:
                counts[code] = value
            if not counts:
                del days[str(day)]
        return {"days": {d: v for d, v in days.items() if int(d) >= oldest}, "wm": wm}

    def evaluate(
        self, key: str, state: dict[str, Any], now_ms: int, rules: RulesConfig
    ) -> list[Condition]:
        cfg = rules.disease_cases_above_baseline
        if not cfg.enabled:
            return [disabled(RULE, DATASET, "commune", key, key, now_ms)]
        wanted = set(cfg.diseases)
        today = local_day(now_ms)
        first = today - cfg.window_days + 1
        base_first = first - 7 * cfg.baseline_weeks
        cases = base_total = 0
        for day_text, counts in state["days"].items():
            day = int(day_text)
            n = sum(v for code, v in counts.items() if not wanted or code in wanted)
            if first <= day <= today:
                cases += n
            elif base_first <= day < first:
                base_total += n
        cases = max(cases, 0)
        base_total = max(base_total, 0)
        baseline = max(base_total * cfg.window_days / (7 * cfg.baseline_weeks), cfg.baseline_floor)
        status: Status
        if cases < cfg.clear_min_cases or cases <= cfg.clear_factor * baseline:
            status = "clear"
        elif cases >= cfg.min_cases and cases > cfg.factor * baseline:
            status = "firing"
        else:
            status = "holding"
        severity: Severity = "CRITICAL" if cases > cfg.critical_factor * baseline else cfg.severity
        d = cfg.window_days
        return [
            Condition(
                rule=RULE,
                status=status,
                severity=severity,
                dataset=DATASET,
                subject_kind="commune",
                subject=key,
                unit_code=key,
                value=float(cases),
                threshold=round(cfg.factor * baseline, 2),
                clear_threshold=round(cfg.clear_factor * baseline, 2),
                window=f"{d}d",
                window_days=d,
                window_start_ms=day_start_ms(first),
                window_end_ms=now_ms,
                evidence={
                    "cases": cases,
                    "baseline_cases": base_total,
                    "baseline_weeks": cfg.baseline_weeks,
                    "min_cases": cfg.min_cases,
                },
                message_vi=(
                    f"Xã/phường {key}: {cases} ca bệnh truyền nhiễm trong {d} ngày, "
                    f"mức nền {baseline:.1f} ca/{d} ngày ({cfg.baseline_weeks} tuần trước)"
                ),
                message_en=(
                    f"Commune {key}: {cases} notifiable disease cases in {d} days, "
                    f"baseline {baseline:.1f} per {d} days (previous {cfg.baseline_weeks} weeks)"
                ),
                material_change=cfg.update_step,
                min_update_interval_ms=cfg.min_update_interval_ms,
            )
        ]
