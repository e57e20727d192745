"""Alert rule: a receiving unit's dossier overdue rate over a rolling window.

Pure functions over small JSON-able state, so the Faust agent only loads, calls
and stores. One definition (DOMAIN.md): overdue rate = (completed late + open
overdue) / (completed on time + completed late + open overdue). Completed
dossiers count in the window of their completion day; an open dossier counts as
overdue once its deadline has passed, however long ago (it is still a problem).

State per unit stays bounded: completions are counted per day (pruned past the
window) and open dossiers per deadline hour, so an open dossier is seen as
overdue at most one hour after its deadline. Per dossier, the agent keeps only
(version, kind, bucket), which makes replays and out-of-order events no-ops.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any

from bus.settings import AlertSettings

__all__ = [
    "RULE",
    "Contribution",
    "DossierFact",
    "Evaluation",
    "apply_fact",
    "contribution",
    "decide",
    "evaluate",
    "fact_from_std_event",
]

RULE = "dossier_overdue_rate"
DATASET = "publicservice.dossiers"
_DAY_MS = 86_400_000
_HOUR_MS = 3_600_000
_OPEN_STATUSES = {"RECEIVED", "IN_PROGRESS", "SUPPLEMENT_REQUESTED"}

# (kind, bucket): kind is "on_time" | "late" (bucket = completion day) or "open"
# (bucket = deadline hour); None when the dossier counts nowhere.
Contribution = tuple[str, int] | None


@dataclass(frozen=True)
class DossierFact:
    """What the rule needs of one dossier change; no personal data."""

    dossier_id: str
    unit: str
    version: int
    status: str
    due_ms: int
    completed_ms: int | None
    event_ms: int
    deleted: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DossierFact:
        return cls(**data)


def _ms(value: datetime | int | None) -> int | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return int(value.timestamp() * 1000)
    return int(value)


def fact_from_std_event(event: dict[str, Any]) -> DossierFact:
    record = event["after"] if event["after"] is not None else event["before"]
    due_ms = _ms(record["due_at"])
    assert due_ms is not None
    return DossierFact(
        dossier_id=record["dossier_id"],
        unit=record["receiving_unit_code"],
        version=int(event["source"]["version"]),
        status=record["status"],
        due_ms=due_ms,
        completed_ms=_ms(record.get("completed_at")),
        event_ms=_ms(event["source"]["ts_ms"]) or 0,
        deleted=event["op"] == "d",
    )


def contribution(fact: DossierFact) -> Contribution:
    if fact.deleted:
        return None
    if fact.status == "COMPLETED" and fact.completed_ms is not None:
        kind = "on_time" if fact.completed_ms <= fact.due_ms else "late"
        return kind, fact.completed_ms // _DAY_MS
    if fact.status in _OPEN_STATUSES:
        return "open", fact.due_ms // _HOUR_MS
    return None


def new_unit_state() -> dict[str, Any]:
    return {"done": {}, "open": {}, "watermark_ms": 0}


def apply_fact(
    state: dict[str, Any] | None,
    old: Contribution,
    new: Contribution,
    event_ms: int,
    window_days: int,
) -> dict[str, Any]:
    """The unit state with ``old`` taken out and ``new`` put in (a new dict)."""
    base = state or new_unit_state()
    done = {k: list(v) for k, v in base["done"].items()}
    open_ = dict(base["open"])
    for sign, contrib in ((-1, old), (1, new)):
        if contrib is None:
            continue
        kind, bucket = contrib
        key = str(bucket)
        if kind == "open":
            open_[key] = open_.get(key, 0) + sign
            if open_[key] <= 0:
                del open_[key]
        else:
            counts = done.setdefault(key, [0, 0])
            counts[0 if kind == "on_time" else 1] += sign
            if counts[0] <= 0 and counts[1] <= 0:
                del done[key]
    watermark = max(int(base["watermark_ms"]), event_ms)
    oldest_day = watermark // _DAY_MS - window_days + 1
    done = {k: v for k, v in done.items() if int(k) >= oldest_day}
    return {"done": done, "open": open_, "watermark_ms": watermark}


@dataclass(frozen=True)
class Evaluation:
    on_time: int
    late: int
    open_overdue: int
    rate: float | None
    window_start_ms: int
    window_end_ms: int

    @property
    def total(self) -> int:
        return self.on_time + self.late + self.open_overdue


def evaluate(state: dict[str, Any], now_ms: int, window_days: int) -> Evaluation:
    today = now_ms // _DAY_MS
    first_day = today - window_days + 1
    on_time = late = 0
    for day, (ok, lt) in state["done"].items():
        if first_day <= int(day) <= today:
            on_time += ok
            late += lt
    overdue = sum(n for hour, n in state["open"].items() if (int(hour) + 1) * _HOUR_MS <= now_ms)
    total = on_time + late + overdue
    return Evaluation(
        on_time=on_time,
        late=late,
        open_overdue=overdue,
        rate=(late + overdue) / total if total else None,
        window_start_ms=first_day * _DAY_MS,
        window_end_ms=now_ms,
    )


def _severity(rate: float, cfg: AlertSettings) -> str:
    return "CRITICAL" if rate >= min(0.9, 2 * cfg.overdue_rate_threshold) else "WARNING"


def decide(
    alert_state: dict[str, Any] | None,
    ev: Evaluation,
    unit: str,
    cfg: AlertSettings,
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(new alert state, alert record to emit or None). Raised once; updated only on a
    severity change; resolved below the clear threshold (hysteresis, no storms)."""
    raised = alert_state is not None
    if ev.rate is None:
        return alert_state, None
    if not raised:
        if ev.total < cfg.min_dossiers or ev.rate <= cfg.overdue_rate_threshold:
            return None, None
        severity = _severity(ev.rate, cfg)
        alert_id = f"{RULE}:{unit}:{ev.window_end_ms}"
        state = {"alert_id": alert_id, "severity": severity, "raised_ms": ev.window_end_ms}
        return state, _record(alert_id, "RAISED", severity, unit, ev, cfg)
    assert alert_state is not None
    if ev.rate < cfg.overdue_rate_clear:
        return None, _record(alert_state["alert_id"], "RESOLVED", "INFO", unit, ev, cfg)
    severity = _severity(ev.rate, cfg)
    if severity != alert_state["severity"]:
        state = {**alert_state, "severity": severity}
        return state, _record(alert_state["alert_id"], "UPDATED", severity, unit, ev, cfg)
    return alert_state, None


def _record(
    alert_id: str, state: str, severity: str, unit: str, ev: Evaluation, cfg: AlertSettings
) -> dict[str, Any]:
    rate = ev.rate or 0.0
    days = cfg.window_days
    if state == "RESOLVED":
        vi = f"Đơn vị {unit}: tỷ lệ hồ sơ quá hạn đã giảm còn {rate:.0%} ({days} ngày)"
        en = f"Unit {unit}: overdue rate back to {rate:.0%} over {days} days"
    else:
        vi = (
            f"Đơn vị {unit}: tỷ lệ hồ sơ quá hạn {rate:.0%} trong {days} ngày "
            f"(ngưỡng {cfg.overdue_rate_threshold:.0%})"
        )
        en = (
            f"Unit {unit}: overdue rate {rate:.0%} over {days} days "
            f"(threshold {cfg.overdue_rate_threshold:.0%})"
        )
    return {
        "alert_id": alert_id,
        "rule": RULE,
        "state": state,
        "severity": severity,
        "dataset": DATASET,
        "unit_code": unit,
        "value": round(rate, 4),
        "threshold": cfg.overdue_rate_threshold,
        "window_days": days,
        "window_start": datetime.fromtimestamp(ev.window_start_ms / 1000, UTC),
        "window_end": datetime.fromtimestamp(ev.window_end_ms / 1000, UTC),
        "evidence": {
            "completed_on_time": ev.on_time,
            "completed_late": ev.late,
            "open_overdue": ev.open_overdue,
        },
        "message": f"{vi} / {en}",
        "ts_ms": datetime.fromtimestamp(ev.window_end_ms / 1000, UTC),
    }
