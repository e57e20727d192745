"""Standardize a raw dossier event (``dossiers.raw.v1``) into ``dossiers.std.v1``.

Bad events are data: the function returns ``Rejected`` (which the agent writes to the
DLQ) instead of raising, and one problem in either image rejects the whole event, because
a downstream sink that sees half of an update would compute wrong KPIs.

Quality flags say what standardization changed or assumed; they are a closed set of
lowercase codes so they can be metric labels. Reason codes are stable for the DLQ.
Neither messages nor flags ever contain a citizen id, a name or a birth date.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from functools import lru_cache
from typing import Any, TypeGuard
from uuid import UUID

from schemas.catalog import DEFAULT_EARLIEST
from schemas.domain.citizen_id import CitizenIdRejection, check_citizen_id
from schemas.domain.code_lists import CodeList, default_code_lists
from schemas.domain.reference import ReferenceData
from schemas.domain.text import normalize_text
from schemas.domain.timeparse import (
    FAR_FUTURE_TOLERANCE,
    LOCAL_TZ,
    TimeRejection,
    parse_date,
    parse_timestamp,
    parse_timestamp_text,
)

__all__ = [
    "DOSSIER_KEY",
    "QUALITY_FLAGS",
    "REASONS",
    "Rejected",
    "Standardized",
    "check_envelope_times",
    "check_same_entity",
    "earliest_instant",
    "standardize_dossier_event",
]

DOSSIER_KEY = ("dossier_id",)

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
    "timestamp_before_earliest": (
        "date/time is before the dataset's earliest plausible date",
        "Ngày giờ sớm hơn mốc sớm nhất hợp lý của bộ dữ liệu",
    ),
    "entity_mismatch": (
        "before and after images are different entities",
        "Dữ liệu trước và sau thay đổi thuộc hai đối tượng khác nhau",
    ),
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
        "procedure_not_in_list",  # a procedure code the procedures code list lacks
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


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    # Decoded events are plain dicts: skip the slower ABC check for them.
    return type(value) is dict or isinstance(value, Mapping)


def _source(value: object) -> dict[str, Any]:
    if not _is_mapping(value):
        raise _Invalid("invalid_envelope", "source", "expected a record")
    get = value.get
    version = get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise _Invalid("invalid_envelope", "source.version", "expected an integer")
    return {
        "system": _envelope_str(get("system"), "source.system"),
        "unit": _envelope_str(get("unit"), "source.unit"),
        "dataset": _envelope_str(get("dataset"), "source.dataset"),
        "ts_ms": _aware(get("ts_ms"), "source.ts_ms"),
        "version": version,
    }


@lru_cache(maxsize=64)
def earliest_instant(earliest: date) -> datetime:
    """The start (local midnight, Asia/Ho_Chi_Minh) of a dataset's earliest plausible day."""
    return datetime.combine(earliest, time(), LOCAL_TZ)


def _too_early(field: str, earliest: datetime) -> _Invalid:
    day = earliest.date().isoformat()
    return _Invalid("timestamp_before_earliest", field, f"before {day} (the dataset's earliest)")


def check_envelope_times(
    ts: datetime, changed_at: datetime, now: datetime | None, earliest: datetime
) -> None:
    """The envelope's own times: ``ts_ms`` (when the publisher emitted the event) and
    ``source.ts_ms`` (when the change happened at the source). Both are dead-lettered
    when implausible, like a record's own times: before the dataset's earliest day
    (``timestamp_before_earliest``), or more than the far-future tolerance after ``now``
    (``far_future_timestamp``; ``now`` is the processor's clock, or without one the
    emit time, against which only the change time is judged). Raises ``_Invalid``."""
    if now is not None and ts > now + FAR_FUTURE_TOLERANCE:
        raise _Invalid(
            "far_future_timestamp",
            "ts_ms",
            f"{ts.isoformat()} is more than 1 day after {now.isoformat()}",
        )
    if ts < earliest:
        raise _too_early("ts_ms", earliest)
    reference = now if now is not None else ts
    if changed_at > reference + FAR_FUTURE_TOLERANCE:
        raise _Invalid(
            "far_future_timestamp",
            "source.ts_ms",
            f"{changed_at.isoformat()} is more than 1 day after {reference.isoformat()}",
        )
    if changed_at < earliest:
        raise _too_early("source.ts_ms", earliest)


def check_same_entity(
    before: Mapping[str, Any] | None, after: Mapping[str, Any] | None, key_fields: Sequence[str]
) -> None:
    """An event with both images must change one entity: the standardized key fields of
    ``before`` and ``after`` must be equal (a key change is a delete and a create, as
    Debezium emits it). Raises ``_Invalid("entity_mismatch")``; the detail never carries
    the values."""
    if before is None or after is None:
        return
    for name in key_fields:
        if before.get(name) != after.get(name):
            raise _Invalid(
                "entity_mismatch", f"after.{name}", "differs from before: another entity"
            )


def _to_millis(moment: datetime) -> datetime:
    # The std schema stores milliseconds; truncating here makes a decoded event equal
    # to the one we produced.
    micros = moment.microsecond
    if not micros % 1000:
        return moment
    return moment.replace(microsecond=micros // 1000 * 1000)


# The text fields of a dossier image, in the order their problems are reported.
_TEXT_FIELDS = (
    "dossier_id",
    "dossier_code",
    "procedure_code",
    "procedure_name",
    "receiving_unit_code",
    "admin_unit_code",
    "applicant_citizen_id",
    "applicant_name",
)


def _enum_problem(prefix: str, field: str, symbols: frozenset[str]) -> _Invalid:
    return _Invalid(
        "invalid_field", f"{prefix}.{field}", f"expected one of {', '.join(sorted(symbols))}"
    )


def _timestamp(
    value: str,
    prefix: str,
    field: str,
    now: datetime,
    deadline: bool,
    flags: dict[str, None],
    earliest: datetime,
) -> datetime:
    """``parse_timestamp`` inlined for the hot path: the cached parse, then the check
    against ``now`` (a deadline lies in the future by design, so it gets none, and a
    date-only deadline means "by the end of that day")."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")  # a caller bug, as in parse_timestamp
    parsed = parse_timestamp_text(value, deadline)
    if isinstance(parsed, TimeRejection):
        raise _Invalid(parsed.reason, f"{prefix}.{field}", parsed.detail)
    if not deadline and parsed.value > now + FAR_FUTURE_TOLERANCE:
        # Rare: let parse_timestamp word the rejection.
        rejection = parse_timestamp(value, now=now)
        if isinstance(rejection, TimeRejection):
            raise _Invalid(rejection.reason, f"{prefix}.{field}", rejection.detail)
    if parsed.value < earliest:
        raise _too_early(f"{prefix}.{field}", earliest)
    for flag in parsed.flags:
        flags[flag] = None
    return _to_millis(parsed.value)


def _standardize_image(
    image: object, prefix: str, ref: ReferenceData, now: datetime, earliest: datetime
) -> dict[str, Any]:
    # One flat function rather than a helper object: it runs for every dossier event,
    # and the checks keep the order (and so the reported problem) of the field list.
    if not _is_mapping(image):
        raise _Invalid("invalid_field", prefix, "expected a dossier record")
    get = image.get
    flags: dict[str, None] = {}  # first-seen order

    texts: list[str] = []
    for field in _TEXT_FIELDS:
        value = get(field)
        if not isinstance(value, str):
            raise _Invalid("invalid_field", f"{prefix}.{field}", "expected a string")
        text, changed = normalize_text(value)
        if not text:
            raise _Invalid("missing_field", f"{prefix}.{field}", "empty after trimming")
        if changed:
            flags["text_normalized"] = None
        texts.append(text)
    (
        dossier_id,
        dossier_code,
        procedure_code,
        procedure_name,
        receiving_unit_code,
        admin_unit_source,
        citizen_id_text,
        applicant_name,
    ) = texts

    sex = get("applicant_sex")
    if sex is not None:
        if sex not in _SEXES:
            raise _enum_problem(prefix, "applicant_sex", _SEXES)
        sex = str(sex)
    status = get("status")
    if status not in _STATUSES:
        raise _enum_problem(prefix, "status", _STATUSES)
    status = str(status)
    channel = get("channel")
    if channel not in _CHANNELS:
        raise _enum_problem(prefix, "channel", _CHANNELS)
    channel = str(channel)

    received_raw = get("received_at")
    if not isinstance(received_raw, str):
        raise _Invalid("invalid_field", f"{prefix}.received_at", "expected a string")
    received_at = _timestamp(received_raw, prefix, "received_at", now, False, flags, earliest)
    due_raw = get("due_at")
    if not isinstance(due_raw, str):
        raise _Invalid("invalid_field", f"{prefix}.due_at", "expected a string")
    due_at = _timestamp(due_raw, prefix, "due_at", now, True, flags, earliest)
    completed_at: datetime | None = None
    completed_raw = get("completed_at")
    if completed_raw is not None:
        if not isinstance(completed_raw, str):
            raise _Invalid("invalid_field", f"{prefix}.completed_at", "expected a string")
        completed_text = normalize_text(completed_raw).text
        if completed_text:
            completed_at = _timestamp(
                completed_text, prefix, "completed_at", now, False, flags, earliest
            )
        else:
            flags["blank_as_null"] = None

    received_day: date | None = None
    birth_date: date | None = None
    birth_raw = get("applicant_birth_date")
    if birth_raw is not None:
        if not isinstance(birth_raw, str):
            raise _Invalid("invalid_field", f"{prefix}.applicant_birth_date", "expected a string")
        birth_text = normalize_text(birth_raw).text
        if not birth_text:
            flags["blank_as_null"] = None
        else:
            parsed = parse_date(birth_text)
            if isinstance(parsed, TimeRejection):
                # The value itself is personal data: the detail of parse_date omits it.
                raise _Invalid(parsed.reason, f"{prefix}.applicant_birth_date", parsed.detail)
            birth_date = parsed.value
            if birth_date.year < _OLDEST_BIRTH_YEAR:
                raise _Invalid(
                    "invalid_date", f"{prefix}.applicant_birth_date", "birth year before 1900"
                )
            received_day = received_at.astimezone(LOCAL_TZ).date()
            if birth_date > received_day:
                raise _Invalid(
                    "invalid_date", f"{prefix}.applicant_birth_date", "birth date after received_at"
                )
    if received_day is None:
        received_day = received_at.astimezone(LOCAL_TZ).date()

    citizen = check_citizen_id(
        citizen_id_text,
        ref.cccd_province_codes,
        birth_date=birth_date,
        sex=sex,
        today=received_day,
    )
    if isinstance(citizen, CitizenIdRejection):
        raise _Invalid(citizen.reason, f"{prefix}.applicant_citizen_id", citizen.detail)
    for flag in citizen.flags:
        flags[flag] = None

    if ref.receiving_unit(receiving_unit_code) is None:
        raise _Invalid(
            "unknown_receiving_unit",
            f"{prefix}.receiving_unit_code",
            f"{receiving_unit_code!r} is not in receiving_units.csv",
        )

    lookup_code = admin_unit_source
    if len(lookup_code) < _COMMUNE_CODE_LENGTH and lookup_code.isascii() and lookup_code.isdigit():
        lookup_code = lookup_code.zfill(_COMMUNE_CODE_LENGTH)
        flags["admin_unit_code_zero_padded"] = None
    # Judged at received_at, the dossier's own time, not when the event reached the bus.
    admin_unit = ref.resolve_admin_unit(lookup_code, received_at)
    if admin_unit is None:
        raise _Invalid(
            "unknown_admin_unit",
            f"{prefix}.admin_unit_code",
            f"{admin_unit_source!r} is not in admin_units_crosswalk.csv",
        )
    if admin_unit.remapped:
        flags["admin_unit_remapped"] = None
    if admin_unit.outdated:
        flags["admin_unit_code_outdated"] = None

    # Suspicious but usable: flagged for quality scores rather than dead-lettered, so the
    # dossier still counts in the unit's KPIs.
    if due_at < received_at:
        flags["due_before_received"] = None
    if completed_at is not None and completed_at < received_at:
        flags["completed_before_received"] = None
    if status == "COMPLETED" and completed_at is None:
        flags["completed_at_missing"] = None

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
        "quality_flags": list(flags),
    }


def _standardize(
    raw: Mapping[str, Any],
    ref: ReferenceData,
    now: datetime | None,
    earliest: datetime,
    procedures: CodeList | None,
) -> Standardized:
    if not _is_mapping(raw):
        raise _Invalid("invalid_envelope", "", "expected a record")
    get = raw.get
    event_id = _event_id(get("event_id"))
    op = get("op")
    if op not in _OPS:
        raise _Invalid("invalid_envelope", "op", "expected one of c, u, d, r")
    ts = _aware(get("ts_ms"), "ts_ms")
    source = _source(get("source"))
    check_envelope_times(ts, source["ts_ms"], now, earliest)
    # Default reference time: when the publisher emitted the event. Using the event's
    # own clock (not the processor's) keeps replays deterministic.
    reference_now = now if now is not None else ts

    needed = "before" if op == "d" else "after"
    if get(needed) is None:
        raise _Invalid("missing_payload", needed, f"op {op!r} requires {needed!r}")
    before = get("before")
    std_before = (
        None
        if before is None
        else _standardize_image(before, "before", ref, reference_now, earliest)
    )
    after = get("after")
    std_after = (
        None if after is None else _standardize_image(after, "after", ref, reference_now, earliest)
    )
    check_same_entity(std_before, std_after, DOSSIER_KEY)
    if procedures is not None:
        # The code is normalized text already: its case-fold is the list's lookup form
        # (CodeList.lookup would normalize it again, ~10 µs).
        aliases = procedures.aliases
        for image in (std_before, std_after):
            if image is not None and image["procedure_code"].casefold() not in aliases:
                image["quality_flags"].append("procedure_not_in_list")
    if std_before is None:
        flags = tuple(std_after["quality_flags"]) if std_after is not None else ()
    elif std_after is None:
        flags = tuple(std_before["quality_flags"])
    else:
        merged = dict.fromkeys(std_before["quality_flags"])
        merged.update(dict.fromkeys(std_after["quality_flags"]))
        flags = tuple(merged)
    event = {
        "event_id": event_id,
        "op": op,
        "ts_ms": ts,
        "source": source,
        "before": std_before,
        "after": std_after,
    }
    return Standardized(event=event, flags=flags)


def standardize_dossier_event(
    raw: Mapping[str, Any],
    ref: ReferenceData,
    *,
    now: datetime | None = None,
    earliest: date = DEFAULT_EARLIEST,
    procedures: CodeList | None = None,
) -> Standardized | Rejected:
    """Standardize one decoded ``dossiers.raw.v1`` event.

    ``now`` bounds "far future" times; it defaults to the event's ``ts_ms`` (emit time).
    Pass the processor's clock to also catch publishers whose clocks run ahead.
    ``earliest`` is the dataset's earliest plausible day (the catalog's ``earliest``).
    ``procedures``: the procedure code list (``codes_procedures.csv``, default the
    packaged one); a code it lacks is kept as sent and flagged ``procedure_not_in_list``.
    """
    if procedures is None:
        procedures = default_code_lists().get("procedures")
    try:
        return _standardize(raw, ref, now, earliest_instant(earliest), procedures)
    except _Invalid as problem:
        return _rejected(problem)
