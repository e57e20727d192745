"""Standardize a raw dossier event (``dossiers.raw.v1``) into ``dossiers.std.v1``.

Bad events are data: the function returns ``Rejected`` (which the agent writes to the
DLQ) instead of raising, and one problem in either image rejects the whole event, because
a downstream sink that sees half of an update would compute wrong KPIs.

Quality flags say what standardization changed or assumed; they are a closed set of
lowercase codes so they can be metric labels. Reason codes are stable for the DLQ.
Neither messages nor flags ever contain a citizen id, a name or a birth date.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any
from uuid import UUID

from stream_processors.citizen_id import CitizenIdRejection, check_citizen_id
from stream_processors.reference import ReferenceData
from stream_processors.text import normalize_text
from stream_processors.timeparse import (
    FAR_FUTURE_TOLERANCE,
    LOCAL_TZ,
    TimeRejection,
    parse_date,
    parse_timestamp,
)

__all__ = [
    "QUALITY_FLAGS",
    "REASONS",
    "Rejected",
    "Standardized",
    "standardize_dossier_event",
]

# reason -> (English, Vietnamese) base message.
REASONS: Mapping[str, tuple[str, str]] = {
    "invalid_envelope": ("event envelope is invalid", "Phong bì sự kiện không hợp lệ"),
    "missing_payload": (
        "event has no dossier image for its operation",
        "Sự kiện không có dữ liệu hồ sơ tương ứng với thao tác",
    ),
    "missing_field": (
        "required field is missing or empty",
        "Thiếu trường bắt buộc hoặc trường bị để trống",
    ),
    "invalid_field": ("field has an invalid value", "Trường có giá trị không hợp lệ"),
    "invalid_timestamp": ("date/time is invalid", "Ngày giờ không hợp lệ"),
    "far_future_timestamp": (
        "date/time is more than 1 day in the future",
        "Ngày giờ ở tương lai quá 1 ngày",
    ),
    "invalid_date": ("date is invalid", "Ngày không hợp lệ"),
    "invalid_citizen_id": (
        "citizen id (CCCD/CMND) is invalid",
        "Số định danh cá nhân (CCCD/CMND) không hợp lệ",
    ),
    "citizen_id_mismatch": (
        "citizen id does not match the record's birth year or sex",
        "Số CCCD không khớp với năm sinh hoặc giới tính trong hồ sơ",
    ),
    "unknown_receiving_unit": (
        "receiving unit code is not in the list of units",
        "Mã đơn vị tiếp nhận không có trong danh mục",
    ),
    "unknown_admin_unit": (
        "commune/ward code is not in the administrative-unit list",
        "Mã đơn vị hành chính cấp xã không có trong danh mục",
    ),
}

QUALITY_FLAGS: frozenset[str] = frozenset(
    {
        "text_normalized",  # a text field changed under NFC/space/Đ/tone normalization
        "blank_as_null",  # an optional field held only whitespace
        "naive_time_assumed_local",  # a time without offset read as Asia/Ho_Chi_Minh
        "date_only_start_of_day",  # a date without time read as 00:00 local
        "date_only_end_of_day",  # a deadline without time read as 23:59:59.999 local
        "epoch_seconds",  # a number read as Unix seconds
        "epoch_millis",  # a number read as Unix milliseconds
        "excel_serial_date",  # a number read as an Excel day serial
        "citizen_id_spaces_removed",
        "legacy_cmnd_id",  # 9-digit CMND instead of a CCCD
        "admin_unit_code_zero_padded",  # leading zeros restored (lost by spreadsheets)
        "admin_unit_remapped",  # a pre-reform code replaced with the current one
        "admin_unit_code_outdated",  # a pre-reform code used after the cut-over
        "due_before_received",
        "completed_before_received",
        "completed_at_missing",  # status COMPLETED without completed_at
    }
)

_OPS = frozenset({"c", "u", "d", "r"})
_STATUSES = frozenset(
    {"RECEIVED", "IN_PROGRESS", "SUPPLEMENT_REQUESTED", "COMPLETED", "RETURNED", "CANCELLED"}
)
_CHANNELS = frozenset({"ONLINE", "IN_PERSON"})
_SEXES = frozenset({"MALE", "FEMALE"})
_COMMUNE_CODE_LENGTH = 5
_OLDEST_BIRTH_YEAR = 1900  # a CCCD cannot encode an earlier one


@dataclass(frozen=True, slots=True)
class Standardized:
    event: dict[str, Any]  # ready for the dossiers.std.v1 writer
    flags: tuple[str, ...]  # union of both images' quality_flags, for metrics


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: str
    field: str
    message_en: str
    message_vi: str


class _Invalid(Exception):
    """Internal early exit; never escapes this module."""

    def __init__(self, reason: str, field: str, detail: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field
        self.detail = detail


def _rejected(problem: _Invalid) -> Rejected:
    english, vietnamese = REASONS[problem.reason]
    return Rejected(
        reason=problem.reason,
        field=problem.field,
        message_en=f"{problem.field}: {english}: {problem.detail}",
        message_vi=f"{vietnamese} (trường {problem.field})",
    )


def _aware(value: object, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise _Invalid("invalid_envelope", field, "expected a timezone-aware datetime")
    return value


def _envelope_str(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise _Invalid("invalid_envelope", field, "expected a non-empty string")
    return value


def _event_id(value: object) -> str:
    # fastavro decodes the uuid logical type to uuid.UUID; hand-built dicts carry a str.
    # Either way the std event gets the canonical lowercase form, so that sinks that
    # deduplicate on event_id see one spelling per event.
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, str):
        try:
            return str(UUID(value))
        except ValueError:
            pass
    raise _Invalid("invalid_envelope", "event_id", "expected a UUID")


def _source(value: object) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise _Invalid("invalid_envelope", "source", "expected a record")
    version = value.get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _Invalid("invalid_envelope", "source.version", "expected an integer")
    return {
        "system": _envelope_str(value.get("system"), "source.system"),
        "unit": _envelope_str(value.get("unit"), "source.unit"),
        "dataset": _envelope_str(value.get("dataset"), "source.dataset"),
        "ts_ms": _aware(value.get("ts_ms"), "source.ts_ms"),
        "version": version,
    }


def _to_millis(moment: datetime) -> datetime:
    # The std schema stores milliseconds; truncating here makes a decoded event equal
    # to the one we produced.
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


class _Image:
    """Standardizes one dossier image; collects flags in first-seen order."""

    def __init__(self, image: Mapping[str, Any], prefix: str, now: datetime) -> None:
        self.image = image
        self.prefix = prefix
        self.now = now
        self.flags: dict[str, None] = {}

    def name(self, field: str) -> str:
        return f"{self.prefix}.{field}"

    def flag(self, *flags: str) -> None:
        for flag in flags:
            self.flags[flag] = None

    def raw_str(self, field: str, *, optional: bool = False) -> str | None:
        value = self.image.get(field)
        if value is None and optional:
            return None
        if not isinstance(value, str):
            raise _Invalid("invalid_field", self.name(field), "expected a string")
        return value

    def text(self, field: str) -> str:
        value = self.raw_str(field)
        assert value is not None  # raw_str without optional never returns None
        text, changed = normalize_text(value)
        if not text:
            raise _Invalid("missing_field", self.name(field), "empty after trimming")
        if changed:
            self.flag("text_normalized")
        return text

    def optional_text(self, field: str) -> str | None:
        value = self.raw_str(field, optional=True)
        if value is None:
            return None
        text = normalize_text(value).text
        if not text:
            self.flag("blank_as_null")
            return None
        return text

    def enum(self, field: str, symbols: frozenset[str], *, optional: bool = False) -> str | None:
        value = self.image.get(field)
        if value is None and optional:
            return None
        if value not in symbols:
            raise _Invalid(
                "invalid_field", self.name(field), f"expected one of {', '.join(sorted(symbols))}"
            )
        return str(value)

    def timestamp(self, field: str, *, deadline: bool = False) -> datetime:
        value = self.raw_str(field)
        assert value is not None
        return self._parsed(field, value, deadline)

    def optional_timestamp(self, field: str) -> datetime | None:
        value = self.optional_text(field)
        return None if value is None else self._parsed(field, value, False)

    def _parsed(self, field: str, value: str, deadline: bool) -> datetime:
        # A deadline lies in the future by design, so it gets no far-future check, and a
        # date-only deadline means "by the end of that day".
        parsed = parse_timestamp(
            value,
            now=self.now,
            end_of_day=deadline,
            future_tolerance=None if deadline else FAR_FUTURE_TOLERANCE,
        )
        if isinstance(parsed, TimeRejection):
            raise _Invalid(parsed.reason, self.name(field), parsed.detail)
        self.flag(*parsed.flags)
        return _to_millis(parsed.value)

    def birth_date(self, received_at: datetime) -> date | None:
        field = "applicant_birth_date"
        value = self.optional_text(field)
        if value is None:
            return None
        parsed = parse_date(value)
        if isinstance(parsed, TimeRejection):
            # The value itself is personal data: the detail of parse_date omits it.
            raise _Invalid(parsed.reason, self.name(field), parsed.detail)
        if parsed.value.year < _OLDEST_BIRTH_YEAR:
            raise _Invalid("invalid_date", self.name(field), "birth year before 1900")
        if parsed.value > received_at.astimezone(LOCAL_TZ).date():
            raise _Invalid("invalid_date", self.name(field), "birth date after received_at")
        return parsed.value


def _standardize_image(
    image: object, prefix: str, ref: ReferenceData, now: datetime
) -> dict[str, Any]:
    if not isinstance(image, Mapping):
        raise _Invalid("invalid_field", prefix, "expected a dossier record")
    img = _Image(image, prefix, now)

    dossier_id = img.text("dossier_id")
    dossier_code = img.text("dossier_code")
    procedure_code = img.text("procedure_code")
    procedure_name = img.text("procedure_name")
    receiving_unit_code = img.text("receiving_unit_code")
    admin_unit_source = img.text("admin_unit_code")
    citizen_id_text = img.text("applicant_citizen_id")
    applicant_name = img.text("applicant_name")
    sex = img.enum("applicant_sex", _SEXES, optional=True)
    status = img.enum("status", _STATUSES)
    channel = img.enum("channel", _CHANNELS)

    received_at = img.timestamp("received_at")
    due_at = img.timestamp("due_at", deadline=True)
    completed_at = img.optional_timestamp("completed_at")
    birth_date = img.birth_date(received_at)
    received_day = received_at.astimezone(LOCAL_TZ).date()

    citizen = check_citizen_id(
        citizen_id_text,
        ref.cccd_province_codes,
        birth_date=birth_date,
        sex=sex,
        today=received_day,
    )
    if isinstance(citizen, CitizenIdRejection):
        raise _Invalid(citizen.reason, img.name("applicant_citizen_id"), citizen.detail)
    img.flag(*citizen.flags)

    if ref.receiving_unit(receiving_unit_code) is None:
        raise _Invalid(
            "unknown_receiving_unit",
            img.name("receiving_unit_code"),
            f"{receiving_unit_code!r} is not in receiving_units.csv",
        )

    lookup_code = admin_unit_source
    if lookup_code.isascii() and lookup_code.isdigit() and len(lookup_code) < _COMMUNE_CODE_LENGTH:
        lookup_code = lookup_code.zfill(_COMMUNE_CODE_LENGTH)
        img.flag("admin_unit_code_zero_padded")
    # Judged at received_at, the dossier's own time, not when the event reached the bus.
    admin_unit = ref.resolve_admin_unit(lookup_code, received_at)
    if admin_unit is None:
        raise _Invalid(
            "unknown_admin_unit",
            img.name("admin_unit_code"),
            f"{admin_unit_source!r} is not in admin_units_crosswalk.csv",
        )
    img.flag(*admin_unit.flags)

    # Suspicious but usable: flagged for quality scores rather than dead-lettered, so the
    # dossier still counts in the unit's KPIs.
    if due_at < received_at:
        img.flag("due_before_received")
    if completed_at is not None and completed_at < received_at:
        img.flag("completed_before_received")
    if status == "COMPLETED" and completed_at is None:
        img.flag("completed_at_missing")

    return {
        "dossier_id": dossier_id,
        "dossier_code": dossier_code,
        "procedure_code": procedure_code,
        "procedure_name": procedure_name,
        "receiving_unit_code": receiving_unit_code,
        "admin_unit_code": admin_unit.code,
        "admin_unit_code_source": admin_unit_source,
        "applicant_citizen_id": citizen.value,
        "applicant_name": applicant_name,
        "applicant_birth_date": birth_date,
        "applicant_sex": sex,
        "status": status,
        "channel": channel,
        "received_at": received_at,
        "due_at": due_at,
        "completed_at": completed_at,
        "quality_flags": list(img.flags),
    }


def _standardize(raw: Mapping[str, Any], ref: ReferenceData, now: datetime | None) -> Standardized:
    if not isinstance(raw, Mapping):
        raise _Invalid("invalid_envelope", "", "expected a record")
    event_id = _event_id(raw.get("event_id"))
    op = raw.get("op")
    if op not in _OPS:
        raise _Invalid("invalid_envelope", "op", "expected one of c, u, d, r")
    ts = _aware(raw.get("ts_ms"), "ts_ms")
    source = _source(raw.get("source"))
    # Default reference time: when the publisher emitted the event. Using the event's
    # own clock (not the processor's) keeps replays deterministic.
    reference_now = now if now is not None else ts

    needed = "before" if op == "d" else "after"
    if raw.get(needed) is None:
        raise _Invalid("missing_payload", needed, f"op {op!r} requires {needed!r}")
    images: dict[str, dict[str, Any] | None] = {}
    for prefix in ("before", "after"):
        image = raw.get(prefix)
        images[prefix] = (
            None if image is None else _standardize_image(image, prefix, ref, reference_now)
        )
    flags: dict[str, None] = {}
    for std_image in images.values():
        if std_image is not None:
            flags.update(dict.fromkeys(std_image["quality_flags"]))
    event = {
        "event_id": event_id,
        "op": op,
        "ts_ms": ts,
        "source": source,
        "before": images["before"],
        "after": images["after"],
    }
    return Standardized(event=event, flags=tuple(flags))


def standardize_dossier_event(
    raw: Mapping[str, Any], ref: ReferenceData, *, now: datetime | None = None
) -> Standardized | Rejected:
    """Standardize one decoded ``dossiers.raw.v1`` event.

    ``now`` bounds "far future" times; it defaults to the event's ``ts_ms`` (emit time).
    Pass the processor's clock to also catch publishers whose clocks run ahead.
    """
    try:
        return _standardize(raw, ref, now)
    except _Invalid as problem:
        return _rejected(problem)
