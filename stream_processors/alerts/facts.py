"""What an entity's current image contributes to the alert rules' state.

``contributions(dataset_id, std_event)`` → ``[(group, key, payload), ...]``: the rule
group (``alert_rules.RULE_GROUPS``), the subject key within it, and a small JSON-able
payload. The loop keeps each entity's previous list and sends the difference as
deltas (``{"sign": -1, "payload": old}``, then ``{"sign": 1, "payload": new}``, each with
``"event_ms"``), so a state change moves a count from one bucket to another.

- ``publicservice.dossiers`` → ``dossier_unit`` / receiving_unit_code:
  ``{"k": "open", "due_h"}`` (received, in progress, supplement requested) or
  ``{"k": "on_time" | "late", "day"}`` (completed);
- ``feedback.reports`` → ``feedback_unit`` / handling_unit_code (``UNASSIGNED`` when
  none) and ``feedback_commune`` / commune_code: the same shapes (open with a response
  deadline, or responded / closed);
- ``environment.station_readings`` → ``aqi_station`` / station_id:
  ``{"t": reading time ms, "aqi"}`` (air readings with an AQI);
- ``health.disease_cases`` → ``disease_commune`` / commune_code:
  ``{"day": local report day, "d": ICD-10 code}``.

``due_h`` is the deadline's epoch hour, ``day`` a local (UTC+7) day number since the
epoch. Keys and payloads hold codes and counts, never a person's id, name or phone.
Deletions (op ``d``), other datasets and records missing what a rule needs contribute
nothing; this never raises. Times are read from aware datetimes (std events), epoch
milliseconds, ISO 8601 / ``dd/mm/yyyy`` text or ``yyyyMMddHHmm[ss]`` local text (raw
station and encounter times), naive times being Asia/Ho_Chi_Minh.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from schemas.domain.timeparse import to_ms
from stream_processors.alerts.rules.window import HOUR_MS, local_day

__all__ = ["Contribution", "contributions"]

Contribution = tuple[str, str, dict[str, Any]]

_FAR = datetime(9999, 1, 1, tzinfo=UTC)
_DOSSIER_OPEN = {"RECEIVED", "IN_PROGRESS", "SUPPLEMENT_REQUESTED"}
_REPORT_OPEN = {"RECEIVED", "ASSIGNED", "IN_PROGRESS"}
_REPORT_ANSWERED = {"RESPONDED", "CLOSED"}


def _text(record: Mapping[str, Any], field: str) -> str | None:
    value = record.get(field)
    if value is None:
        return None
    text = str(getattr(value, "value", value)).strip()  # enums as their value
    return text or None


def _deadline_payload(
    status: str | None,
    open_statuses: set[str],
    done_statuses: set[str],
    due_ms: int | None,
    done_ms: int | None,
) -> dict[str, Any] | None:
    if due_ms is None or status is None:
        return None
    if status in open_statuses:
        return {"k": "open", "due_h": due_ms // HOUR_MS}
    if status in done_statuses and done_ms is not None:
        return {"k": "on_time" if done_ms <= due_ms else "late", "day": local_day(done_ms)}
    return None


def _dossier(record: Mapping[str, Any]) -> list[Contribution]:
    unit = _text(record, "receiving_unit_code")
    payload = _deadline_payload(
        _text(record, "status"),
        _DOSSIER_OPEN,
        {"COMPLETED"},
        to_ms(record.get("due_at")),
        to_ms(record.get("completed_at")),
    )
    if unit is None or payload is None:
        return []
    return [("dossier_unit", unit, payload)]


def _report(record: Mapping[str, Any]) -> list[Contribution]:
    payload = _deadline_payload(
        _text(record, "status"),
        _REPORT_OPEN,
        _REPORT_ANSWERED,
        to_ms(record.get("response_deadline")),
        to_ms(record.get("responded_at")),
    )
    if payload is None:
        return []
    found: list[Contribution] = [
        ("feedback_unit", _text(record, "handling_unit_code") or "UNASSIGNED", payload)
    ]
    commune = _text(record, "commune_code")
    if commune is not None:
        found.append(("feedback_commune", commune, dict(payload)))
    return found


def _reading(record: Mapping[str, Any]) -> list[Contribution]:
    station = _text(record, "station_id")
    aqi = record.get("aqi")
    at = to_ms(record.get("reading_time"))
    if (
        station is None
        or _text(record, "station_type") != "AIR"
        or not isinstance(aqi, int | float)
        or isinstance(aqi, bool)
        or at is None
    ):
        return []
    return [("aqi_station", station, {"t": at, "aqi": int(aqi)})]


def _case(record: Mapping[str, Any]) -> list[Contribution]:
    commune = _text(record, "commune_code")
    disease = _text(record, "disease_code")
    reported = to_ms(record.get("reported_at"))
    if commune is None or disease is None or reported is None:
        return []
    return [("disease_commune", commune, {"day": local_day(reported), "d": disease})]


_EXTRACTORS: Mapping[str, Callable[[Mapping[str, Any]], list[Contribution]]] = {
    "publicservice.dossiers": _dossier,
    "feedback.reports": _report,
    "environment.station_readings": _reading,
    "health.disease_cases": _case,
}


def contributions(dataset_id: str, std_event: Mapping[str, Any]) -> list[Contribution]:
    """What the event's current image (``after``) contributes; [] for op ``d``."""
    extract = _EXTRACTORS.get(dataset_id)
    if extract is None or std_event.get("op") == "d":
        return []
    record = std_event.get("after")
    if record is not None and not isinstance(record, Mapping):
        dump = getattr(record, "model_dump", None)
        record = dump() if callable(dump) else None
    if not record:
        return []
    try:
        return extract(record)
    except (TypeError, ValueError, OverflowError, OSError):
        return []  # a malformed image contributes nothing; it is not this stage's to refuse
