"""One lifecycle for every alert rule: RAISED once, UPDATED sparingly, RESOLVED when clear.

A rule group's ``evaluate`` says, per rule and subject, what it sees now as a
``Condition``: ``firing`` (past the raise threshold), ``holding`` (inside the hysteresis
band, or too little evidence to judge: an open alert stays open, none is raised) or
``clear`` (past the clear threshold). ``decide`` turns a condition and the subject's
open-alert state into the next state and, when something changed, one record for
``alerts.v1``:

- no open alert + firing → RAISED, with an ``alert_id`` = rule, subject and the raise
  time, stable while the alert stays open (a later raise gets a new id);
- open + clear → RESOLVED (severity INFO), the open state is dropped;
- open + firing/holding → UPDATED only when the severity rises, or — at most once per
  ``min_update_interval_ms`` — when it falls or the value moved by ``material_change``
  or more since the last record (0 disables value updates). Everything else: nothing.

So a flapping input gives at most one RAISED per crossing of the whole hysteresis band
and, while open, at most a severity escalation plus one other update per interval.
Pure functions over JSON-able dicts; ``now_ms`` is passed in, so replays decide the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from schemas.headers import ALERTS_SOURCE, cloudevent, derived_id

__all__ = [
    "SEVERITY_RANK",
    "Condition",
    "Severity",
    "Status",
    "SubjectKind",
    "alert_headers",
    "decide",
    "disabled",
    "open_alert_key",
    "to_datetime",
]

Status = Literal["firing", "holding", "clear"]
Severity = Literal["INFO", "WARNING", "CRITICAL"]
SubjectKind = Literal["unit", "station", "commune", "dataset_unit"]
SEVERITY_RANK: Mapping[str, int] = {"INFO": 0, "WARNING": 1, "CRITICAL": 2}


@dataclass(frozen=True)
class Condition:
    """What a rule sees for one subject at ``window_end_ms``. Free of personal data."""

    rule: str
    status: Status
    severity: Severity  # meaningful while firing or holding
    dataset: str
    subject_kind: SubjectKind
    subject: str  # unit code, station id, commune code, or "dataset|unit"
    unit_code: str  # the unit or place written to the alert's unit_code
    value: float
    threshold: float
    clear_threshold: float | None
    window: str  # human-readable window, e.g. "30d", "24h", "3 readings"
    window_days: int  # whole days of the window; 0 when it is not counted in days
    window_start_ms: int
    window_end_ms: int
    evidence: Mapping[str, int]
    message_vi: str
    message_en: str
    material_change: float = 0.0
    min_update_interval_ms: int = 15 * 60_000
    extra: Mapping[str, Any] = field(default_factory=dict)


def disabled(
    rule: str, dataset: str, subject_kind: SubjectKind, subject: str, unit_code: str, now_ms: int
) -> Condition:
    """The condition of a disabled rule: clear, so an alert it left open resolves."""
    return Condition(
        rule=rule,
        status="clear",
        severity="INFO",
        dataset=dataset,
        subject_kind=subject_kind,
        subject=subject,
        unit_code=unit_code,
        value=0.0,
        threshold=0.0,
        clear_threshold=None,
        window="",
        window_days=0,
        window_start_ms=now_ms,
        window_end_ms=now_ms,
        evidence={},
        message_vi=f"{subject}: quy tắc {rule} đã được tắt",
        message_en=f"{subject}: rule {rule} disabled",
    )


def open_alert_key(condition: Condition) -> str:
    """Where to keep a subject's open alert of a rule: ``"<rule>|<subject>"``."""
    return f"{condition.rule}|{condition.subject}"


def to_datetime(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def decide(
    open_alert: dict[str, Any] | None, condition: Condition, now_ms: int
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """(open-alert state to store, or None to delete; alert record to send, or None)."""
    c = condition
    if open_alert is None:
        if c.status != "firing":
            return None, None
        alert_id = f"{c.rule}:{c.subject}:{now_ms}"
        state = {
            "alert_id": alert_id,
            "rule": c.rule,
            "subject": c.subject,
            "severity": c.severity,
            "value": c.value,
            "raised_ms": now_ms,
            "updated_ms": now_ms,
        }
        return state, _record(state, "RAISED", c.severity, c, now_ms)
    if c.status == "clear":
        return None, _record(open_alert, "RESOLVED", "INFO", c, now_ms)
    old_rank = SEVERITY_RANK[open_alert["severity"]]
    new_rank = SEVERITY_RANK[c.severity]
    due = now_ms - int(open_alert["updated_ms"]) >= c.min_update_interval_ms
    moved = c.material_change > 0 and abs(c.value - float(open_alert["value"])) >= (
        c.material_change
    )
    if new_rank > old_rank or (due and (new_rank < old_rank or moved)):
        state = {**open_alert, "severity": c.severity, "value": c.value, "updated_ms": now_ms}
        return state, _record(state, "UPDATED", c.severity, c, now_ms)
    return open_alert, None


def alert_headers(record: Mapping[str, Any], now_ms: int, schema: str) -> list[tuple[str, bytes]]:
    """The CloudEvents headers of an ``alerts.v1`` record: one id per alert, state and
    decision time (deciding again after a crash gives the same id), subject the alert id."""
    alert_id = str(record["alert_id"])
    state = str(record["state"])
    return cloudevent(
        id=derived_id(ALERTS_SOURCE, alert_id, f"{state}:{now_ms}"),
        source=ALERTS_SOURCE,
        type=f"vn.gov.databus.alert.{state.lower()}",
        time_ms=now_ms,
        subject=alert_id,
        schema=schema,
    )


def _record(
    alert: Mapping[str, Any], state: str, severity: str, c: Condition, now_ms: int
) -> dict[str, Any]:
    """A record for ``alerts.v1`` (timestamps as aware datetimes, as the codec expects)."""
    return {
        "alert_id": alert["alert_id"],
        "rule": c.rule,
        "state": state,
        "severity": severity,
        "dataset": c.dataset,
        "unit_code": c.unit_code,
        "value": round(float(c.value), 4),
        "threshold": round(float(c.threshold), 4),
        "window_days": c.window_days,
        "window_start": to_datetime(c.window_start_ms),
        "window_end": to_datetime(c.window_end_ms),
        "evidence": {k: int(v) for k, v in c.evidence.items()},
        "message": f"{c.message_vi} / {c.message_en}",
        "ts_ms": to_datetime(now_ms),
        "subject_kind": c.subject_kind,
        "subject": c.subject,
        "clear_threshold": None if c.clear_threshold is None else round(c.clear_threshold, 4),
        "window": c.window,
        "raised_at": to_datetime(int(alert["raised_ms"])),
        "message_vi": c.message_vi,
        "message_en": c.message_en,
    }
