"""The generic standardizer: a dataset is a list of field rules plus a few record checks.

A rule reads one raw field (or two, for coordinates), writes the standardized value(s)
into the output record, adds quality flags, or stops the event with a reason code. The
rules also describe their output in Avro, so the ``.std.v1.avsc`` files are generated from
the same declarations that produce the records (``stream_processors.standardizers.schema``)
and cannot drift from them.

Bad events are data: ``run`` never raises for any input, it returns ``Rejected``. One
problem in either image rejects the whole event (a sink that sees half of an update
would compute wrong KPIs). Reason messages are bilingual and never contain a citizen
id, a name, a phone number or a birth date.

What a dataset's contract needs beyond the rules is declared, not coded beside the
engine: rule options; ``DatasetRules`` prechecks (e.g. ``require_text``), record checks,
the std record's field order (``fields``), the dataset's wording of a reason
(``reasons``); and, where a contract reads a value its own way, a rule subclass in the
dataset's module that overrides a documented hook — ``read`` (``Timestamp``, ``Date``,
``CitizenId``: how the raw value is read) or ``too_far`` (``Timestamp``: how a far-future
time is worded). The dossiers (``standardizers.public_service``) use all of these.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from functools import cached_property, lru_cache
from typing import Any, Literal, TypeGuard
from uuid import UUID

from schemas.catalog import DEFAULT_EARLIEST
from schemas.domain.citizen_id import CitizenIdRejection, check_citizen_id
from schemas.domain.code_lists import CodeList
from schemas.domain.insurance import InsuranceRejection, check_insurance_number
from schemas.domain.phone import PhoneRejection, normalize_phone
from schemas.domain.reference import ReferenceData
from schemas.domain.text import normalize_text
from schemas.domain.timeparse import (
    FAR_FUTURE_TOLERANCE,
    LOCAL_TZ,
    TimeRejection,
    parse_date,
    parse_timestamp,
)
from stream_processors.standardizers.result import Invalid, Rejected, Standardized, rejected

__all__ = [
    "QUALITY_FLAGS",
    "REASONS",
    "Area",
    "Check",
    "CitizenId",
    "Code",
    "Commune",
    "Context",
    "Coordinates",
    "DatasetRules",
    "Date",
    "Email",
    "Enum",
    "Float",
    "Image",
    "ImageFunction",
    "Insurance",
    "Int",
    "Phone",
    "Rule",
    "Text",
    "Timestamp",
    "Unit",
    "Verify",
    "check_envelope_times",
    "check_same_entity",
    "earliest_instant",
    "require_text",
    "run",
    "run_with",
]

# reason -> (English, Vietnamese) base message; a dataset may word one its own way
# (``DatasetRules.reasons``).
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
    "unknown_admin_unit": (
        "commune/ward code is not in the administrative-unit list",
        "Mã đơn vị hành chính cấp xã không có trong danh mục",
    ),
    "unknown_receiving_unit": (
        "unit code is not in the list of units",
        "Mã đơn vị không có trong danh mục đơn vị",
    ),
    "invalid_phone": ("phone number is invalid", "Số điện thoại không hợp lệ"),
    "invalid_insurance_number": (
        "health-insurance number is invalid",
        "Mã thẻ bảo hiểm y tế không hợp lệ",
    ),
    "unknown_code": (
        "code is not in the national code list",
        "Mã không có trong danh mục dùng chung",
    ),
    "invalid_disease_code": (
        "disease code is not an ICD-10 code",
        "Mã bệnh không đúng định dạng ICD-10",
    ),
    "impossible_measurement": (
        "measurement is physically impossible",
        "Giá trị đo không thể xảy ra về mặt vật lý",
    ),
    "position_out_of_area": (
        "position lies outside the province",
        "Vị trí nằm ngoài địa bàn tỉnh",
    ),
    "confidential_document": (
        "state-secret documents must not be sent on the bus",
        "Văn bản mật không được gửi qua trục dữ liệu",
    ),
    "finished_before_started": (
        "step finished before it started",
        "Bước xử lý kết thúc trước khi bắt đầu",
    ),
    "done_before_assigned": (
        "task done before it was assigned",
        "Nhiệm vụ hoàn thành trước khi được giao",
    ),
    "responded_before_received": (
        "report answered before it was received",
        "Phản ánh được trả lời trước khi tiếp nhận",
    ),
    "discharged_before_admitted": (
        "discharge is before admission",
        "Thời điểm ra viện trước thời điểm vào viện",
    ),
    "covered_exceeds_cost": (
        "insurance-covered amount exceeds the total cost",
        "Số tiền bảo hiểm chi trả lớn hơn tổng chi phí",
    ),
    "female_exceeds_students": (
        "female students exceed all students",
        "Số học sinh nữ lớn hơn tổng số học sinh",
    ),
    "subcount_exceeds_students": (
        "a part of the students exceeds all students",
        "Số học sinh thành phần lớn hơn tổng số học sinh",
    ),
    "score_out_of_range": ("exam score is outside 0-10", "Điểm thi nằm ngoài thang điểm 0-10"),
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
        "completed_before_received",
        "completed_at_missing",  # status COMPLETED without completed_at
        "procedure_not_in_list",  # a procedure code the procedures code list lacks
        "compact_local_time",  # yyyyMMddHHmm[ss] read as Asia/Ho_Chi_Minh
        "name_case_normalized",  # an all-caps or all-lowercase person name title-cased
        "code_case_normalized",  # a code upper-cased or trimmed
        "code_mapped",  # a source spelling mapped to the national code
        "code_not_in_list",  # a code kept as sent: not in the national list
        "phone_normalized",  # written to E.164
        "phone_prefix_remapped",  # an 11-digit pre-2018 mobile number moved to 10 digits
        "phone_invalid_removed",  # an unusable optional phone number dropped
        "email_invalid_removed",
        "insurance_number_normalized",
        "coordinates_outside_province",
        "future_date",  # a date after the event that the record allows (e.g. a start date)
        "due_before_started",
        "due_before_assigned",
        "due_before_received",
        "onset_after_report",
        "disease_not_notifiable",
        "total_score_mismatch",
        "owner_citizen_id_missing",
        "organization_with_citizen_id",
        "inspection_expiry_before_registration",
        "use_term_before_valid_from",
        "issued_without_number",
        "received_at_on_outgoing",
        "parameter_of_other_station_type",
        "class_count_zero_with_students",
    }
)

# Avro int bounds: a standardized int must encode.
_INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
_COMMUNE_CODE_LENGTH = 5
_OLDEST_BIRTH_YEAR = 1900
_COMPACT_TIME = re.compile(r"(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})?")
_EMAIL = re.compile(r"[a-z0-9._%+-]+@[a-z0-9-]+(\.[a-z0-9-]+)+")
_TIMESTAMP_AVRO = {"type": "long", "logicalType": "timestamp-millis"}
_DATE_AVRO = {"type": "int", "logicalType": "date"}

Future = Literal["reject", "flag", "allow"]


# --- the envelope ---------------------------------------------------------------------------


def _aware(value: object, field: str) -> datetime:
    if not isinstance(value, datetime) or value.tzinfo is None:
        raise Invalid("invalid_envelope", field, "expected a timezone-aware datetime")
    return value


def _envelope_str(value: object, field: str) -> str:
    if not isinstance(value, str) or not value:
        raise Invalid("invalid_envelope", field, "expected a non-empty string")
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
    raise Invalid("invalid_envelope", "event_id", "expected a UUID")


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    # Decoded events are plain dicts: skip the slower ABC check for them.
    return type(value) is dict or isinstance(value, Mapping)


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def _source(value: object) -> dict[str, Any]:
    if not _is_mapping(value):
        raise Invalid("invalid_envelope", "source", "expected a record")
    get = value.get
    version = get("version")
    if not isinstance(version, int) or isinstance(version, bool):
        raise Invalid("invalid_envelope", "source.version", "expected an integer")
    # The checks of _envelope_str and _aware, for the exact types first: a call each only
    # for another type (which they accept or reject).
    system, unit, dataset = get("system"), get("unit"), get("dataset")
    if type(system) is not str or not system:
        system = _envelope_str(system, "source.system")
    if type(unit) is not str or not unit:
        unit = _envelope_str(unit, "source.unit")
    if type(dataset) is not str or not dataset:
        dataset = _envelope_str(dataset, "source.dataset")
    changed_at = get("ts_ms")
    if type(changed_at) is not datetime or changed_at.tzinfo is None:
        changed_at = _aware(changed_at, "source.ts_ms")
    return {
        "system": system,
        "unit": unit,
        "dataset": dataset,
        "ts_ms": changed_at,
        "version": version,
    }


@lru_cache(maxsize=64)
def earliest_instant(earliest: date) -> datetime:
    """The start (local midnight, Asia/Ho_Chi_Minh) of a dataset's earliest plausible day,
    expressed in UTC: the times it is compared with are UTC, and a comparison of two UTC
    datetimes needs no time-zone lookup."""
    return datetime.combine(earliest, time(), LOCAL_TZ).astimezone(UTC)


@lru_cache(maxsize=64)
def _local_date(moment: datetime) -> date:
    return moment.astimezone(LOCAL_TZ).date()


def _too_early(field: str, earliest: datetime) -> Invalid:
    day = _local_date(earliest).isoformat()
    return Invalid("timestamp_before_earliest", field, f"before {day} (the dataset's earliest)")


def check_envelope_times(
    ts: datetime, changed_at: datetime, now: datetime | None, earliest: datetime
) -> None:
    """The envelope's own times: ``ts_ms`` (when the publisher emitted the event) and
    ``source.ts_ms`` (when the change happened at the source). Both are dead-lettered
    when implausible, like a record's own times: before the dataset's earliest day
    (``timestamp_before_earliest``), or more than the far-future tolerance after ``now``
    (``far_future_timestamp``; ``now`` is the processor's clock, or without one the
    emit time, against which only the change time is judged). Raises ``Invalid``."""
    if now is not None and ts > now + FAR_FUTURE_TOLERANCE:
        raise Invalid(
            "far_future_timestamp",
            "ts_ms",
            f"{ts.isoformat()} is more than 1 day after {now.isoformat()}",
        )
    if ts < earliest:
        raise _too_early("ts_ms", earliest)
    reference = now if now is not None else ts
    if changed_at > reference + FAR_FUTURE_TOLERANCE:
        raise Invalid(
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
    Debezium emits it). Raises ``Invalid("entity_mismatch")``; the detail never carries
    the values."""
    if before is None or after is None:
        return
    for name in key_fields:
        if before.get(name) != after.get(name):
            raise Invalid("entity_mismatch", f"after.{name}", "differs from before: another entity")


def _to_millis(moment: datetime) -> datetime:
    # The std schemas store milliseconds; truncating here makes a decoded event equal
    # to the one we produced.
    micros = moment.microsecond
    if not micros % 1000:
        return moment
    return moment.replace(microsecond=micros // 1000 * 1000)


# --- images and rules ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Area:
    """A bounding box of the province, WGS84 decimal degrees."""

    min_lat: float
    max_lat: float
    min_lon: float
    max_lon: float

    def contains(self, lat: float, lon: float) -> bool:
        return self.min_lat <= lat <= self.max_lat and self.min_lon <= lon <= self.max_lon


@dataclass(frozen=True)
class Context:
    """What every image of every event is standardized against."""

    ref: ReferenceData
    codes: Mapping[str, CodeList]
    area: Area

    @cached_property
    def province_codes(self) -> frozenset[str]:
        """2-digit province codes: the 3-digit CCCD codes without their leading 0."""
        # Cached: the reference data is immutable, and insurance numbers ask on every event.
        return frozenset(c[1:] for c in self.ref.cccd_province_codes if c.startswith("0"))


class Image:
    """One ``before``/``after`` record being standardized."""

    __slots__ = (
        "_future_limit",
        "_future_limit_day",
        "_local_day",
        "changed_at",
        "ctx",
        "earliest",
        "earliest_day",
        "event_time",
        "flags",
        "now",
        "out",
        "prefix",
        "raw",
        "texts",
    )

    def __init__(
        self,
        raw: Mapping[str, Any],
        prefix: str,
        ctx: Context,
        now: datetime,
        changed_at: datetime,
        event_time: str | None,
        earliest: datetime | None = None,
        blank: Mapping[str, None] | None = None,
    ) -> None:
        self.raw = raw
        self.prefix = prefix
        self.ctx = ctx
        self.now = now
        self.changed_at = changed_at
        self.event_time = event_time
        # The dataset's earliest plausible instant (local midnight of its first day).
        self.earliest = earliest if earliest is not None else earliest_instant(DEFAULT_EARLIEST)
        self.earliest_day = _local_date(self.earliest)
        # Keyed in the std record's order up front when the rules run in another one.
        self.out: dict[str, Any] = dict(blank) if blank else {}
        self.texts: dict[str, str] = {}  # text already read and checked (require_text)
        self.flags: dict[str, None] = {}
        self._future_limit: datetime | None = None
        self._future_limit_day: date | None = None
        self._local_day: tuple[datetime, date] | None = None

    @property
    def future_limit(self) -> datetime:
        """``now`` plus the far-future tolerance, computed once per image."""
        limit = self._future_limit
        if limit is None:
            limit = self._future_limit = self.now + FAR_FUTURE_TOLERANCE
        return limit

    @property
    def future_limit_day(self) -> date:
        """The local calendar day of ``future_limit``."""
        day = self._future_limit_day
        if day is None:
            day = self._future_limit_day = self.future_limit.astimezone(LOCAL_TZ).date()
        return day

    @property
    def at_day(self) -> date:
        """The local calendar day of ``at``."""
        at = self.at
        cached = self._local_day
        if cached is not None and cached[0] is at:
            return cached[1]
        day = at.astimezone(LOCAL_TZ).date()
        self._local_day = (at, day)
        return day

    @property
    def at(self) -> datetime:
        """The record's own time: its event-time field once parsed, else the change time."""
        if self.event_time is not None:
            value = self.out.get(self.event_time)
            if isinstance(value, datetime):
                return value
        return self.changed_at

    def name(self, field_name: str) -> str:
        return f"{self.prefix}.{field_name}"

    def flag(self, *flags: str) -> None:
        for one in flags:
            self.flags[one] = None

    def fail(self, reason: str, field_name: str, detail: str) -> Invalid:
        return Invalid(reason, self.name(field_name), detail)

    def value(self, field_name: str, required: bool) -> Any:
        """The raw value; a missing required one stops the event."""
        value = self.raw.get(field_name)
        if value is None and required:
            raise self.fail("missing_field", field_name, "is missing")
        return value

    def string(self, field_name: str, required: bool) -> str | None:
        """Normalized text; blank optional text becomes None."""
        checked = self.texts.get(field_name)
        if checked is not None:
            return checked
        value = self.raw.get(field_name)
        if value is None:
            if required:
                raise self.fail("missing_field", field_name, "is missing")
            return None
        if not isinstance(value, str):
            raise self.fail("invalid_field", field_name, "expected a string")
        text, changed = normalize_text(value)
        if not text:
            if required:
                raise self.fail("missing_field", field_name, "empty after trimming")
            self.flag("blank_as_null")
            return None
        if changed:
            self.flag("text_normalized")
        return text

    def sent_text(self, field_name: str, required: bool, normalize: bool) -> str | None:
        """Text under a contract that types its fields strictly: anything but a string
        (null included, when required) is ``invalid_field``. ``normalize``: normalized
        without a ``text_normalized`` flag, blank as null (``blank_as_null``); otherwise the
        text as sent."""
        value = self.raw.get(field_name)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise self.fail("invalid_field", field_name, "expected a string")
        if not normalize:
            return value
        text = normalize_text(value).text
        if not text:
            self.flag("blank_as_null")
            return None
        return text


def require_text(*names: str) -> Callable[[Image], None]:
    """A precheck: each of ``names`` must be a non-blank string, read in this order before
    any rule reads a field, for a contract that reports a text problem before any other.
    Anything but a string, null included, is ``invalid_field``; blank text is
    ``missing_field``; a normalization is flagged ``text_normalized``."""

    def check(img: Image) -> None:
        get = img.raw.get
        texts = img.texts
        for name in names:
            value = get(name)
            if not isinstance(value, str):
                raise img.fail("invalid_field", name, "expected a string")
            text, changed = normalize_text(value)
            if not text:
                raise img.fail("missing_field", name, "empty after trimming")
            if changed:
                img.flags["text_normalized"] = None
            texts[name] = text

    check.text_names = names  # type: ignore[attr-defined]  # read by the compiler
    return check


class Rule(ABC):
    """A field rule: ``apply`` fills ``image.out``; ``avro`` describes what it writes."""

    name: str
    required: bool

    @abstractmethod
    def apply(self, img: Image) -> None: ...

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [_field(self.name, raw[self.name]["type"], self.required, _doc(raw, self.name))]


def _doc(raw: Mapping[str, Mapping[str, Any]], name: str, extra: str = "") -> str:
    doc = str(raw[name].get("doc", "")) if name in raw else ""
    return f"{doc} {extra}".strip()


def _non_null(avro_type: Any) -> Any:
    if isinstance(avro_type, list):
        rest = [t for t in avro_type if t != "null"]
        return rest[0] if len(rest) == 1 else rest
    return avro_type


def _field(name: str, avro_type: Any, required: bool, doc: str) -> dict[str, Any]:
    base = _non_null(avro_type)
    if required:
        return {"name": name, "type": base, "doc": doc}
    return {"name": name, "type": ["null", base], "default": None, "doc": doc}


def _title(text: str) -> str:
    return " ".join(word[:1].upper() + word[1:].lower() for word in text.split(" "))


@dataclass(frozen=True)
class Text(Rule):
    """NFC text; ``case`` "upper"/"lower" for codes, "person" to title-case shouted names."""

    name: str
    required: bool = True
    case: Literal["keep", "upper", "lower", "person"] = "keep"

    def apply(self, img: Image) -> None:
        text = img.string(self.name, self.required)
        if text is not None and self.case != "keep":
            if self.case == "person":
                if text.isupper() or text.islower():
                    fixed = _title(text)
                    if fixed != text:
                        img.flag("name_case_normalized")
                    text = fixed
            else:
                fixed = text.upper() if self.case == "upper" else text.lower()
                if fixed != text:
                    img.flag("code_case_normalized")
                text = fixed
        img.out[self.name] = text

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [_field(self.name, "string", self.required, _doc(raw, self.name))]


@dataclass(frozen=True)
class Enum(Rule):
    """One of ``symbols``. ``null_is_invalid``: a null required value is reported as an
    invalid value (``invalid_field``), as the dossier contract words it, not a missing one."""

    name: str
    symbols: frozenset[str]
    required: bool = True
    null_is_invalid: bool = False

    def apply(self, img: Image) -> None:
        value = img.value(self.name, self.required and not self.null_is_invalid)
        if (value is not None or self.required) and value not in self.symbols:
            raise img.fail(
                "invalid_field", self.name, f"expected one of {', '.join(sorted(self.symbols))}"
            )
        img.out[self.name] = value


@dataclass(frozen=True)
class Int(Rule):
    name: str
    required: bool = True
    min: int = _INT_MIN
    max: int = _INT_MAX
    reason: str = "invalid_field"

    def apply(self, img: Image) -> None:
        value = img.value(self.name, self.required)
        if value is not None:
            if not isinstance(value, int) or isinstance(value, bool):
                raise img.fail("invalid_field", self.name, "expected an integer")
            if not (max(self.min, _INT_MIN) <= value <= min(self.max, _INT_MAX)):
                raise img.fail(self.reason, self.name, f"outside {self.min}..{self.max}")
        img.out[self.name] = value

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [_field(self.name, "int", self.required, _doc(raw, self.name))]


def _number(img: Image, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise img.fail("invalid_field", name, "expected a number")
    number = float(value)
    if number != number or number in (float("inf"), float("-inf")):
        raise img.fail("invalid_field", name, "not a finite number")
    return number


@dataclass(frozen=True)
class Float(Rule):
    name: str
    required: bool = True
    min: float | None = None
    max: float | None = None
    reason: str = "invalid_field"

    def apply(self, img: Image) -> None:
        value = img.value(self.name, self.required)
        if value is None:
            img.out[self.name] = None
            return
        number = _number(img, self.name, value)
        if (self.min is not None and number < self.min) or (
            self.max is not None and number > self.max
        ):
            raise img.fail(self.reason, self.name, f"outside {self.min}..{self.max}")
        img.out[self.name] = number

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [_field(self.name, "double", self.required, _doc(raw, self.name))]


@lru_cache(maxsize=1 << 14)
def _compact(text: str) -> datetime | None:
    # Cached like parse_timestamp: dataloggers repeat their timestamps across stations.
    match = _COMPACT_TIME.fullmatch(text)
    if match is None:
        return None
    year, month, day, hour, minute, second = (int(g) if g else 0 for g in match.groups())
    naive = datetime(year, month, day, hour, minute, second)  # ValueError if impossible
    return naive.replace(tzinfo=LOCAL_TZ).astimezone(UTC)


@dataclass(frozen=True)
class Timestamp(Rule):
    """An instant: an Avro timestamp (aware datetime) or text in the accepted formats.

    ``deadline`` values lie in the future by design: no far-future check, and a date-only
    deadline means the end of that day. No instant, deadline or not, may precede the
    dataset's earliest day (timestamp_before_earliest). ``compact`` reads 12/14-digit
    text as the local ``yyyyMMddHHmm[ss]`` of dataloggers and the insurance exchange,
    never as epoch ms.
    """

    name: str
    required: bool = True
    deadline: bool = False
    compact: bool = False

    def apply(self, img: Image) -> None:
        moment = self.read(img)
        if moment is None:
            img.out[self.name] = None
            return
        if not self.deadline and moment > img.future_limit:
            raise self.too_far(img, moment)
        if moment < img.earliest:
            raise _too_early(img.name(self.name), img.earliest)
        img.out[self.name] = _to_millis(moment)

    def read(self, img: Image) -> datetime | None:
        """The instant the raw value denotes (flagged), None for an absent optional one.

        A dataset whose contract reads its times differently overrides this hook."""
        value = img.value(self.name, self.required)
        if value is None:
            return None
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise img.fail("invalid_timestamp", self.name, "a time without a time zone")
            return value.astimezone(UTC)
        if isinstance(value, str):
            text = img.string(self.name, self.required)
            return None if text is None else self.parse(img, text)
        raise img.fail("invalid_timestamp", self.name, "expected a time")

    def too_far(self, img: Image, moment: datetime) -> Invalid:
        """The rejection of a (non-deadline) instant beyond the far-future tolerance."""
        return img.fail(
            "far_future_timestamp",
            self.name,
            f"{moment.isoformat()} is more than 1 day after {img.now.isoformat()}",
        )

    def parse(self, img: Image, text: str) -> datetime:
        """``text`` as an instant (flagged); no far-future or earliest check yet."""
        if self.compact:
            try:
                compact = _compact(text)
            except (ValueError, OverflowError) as exc:
                raise img.fail("invalid_timestamp", self.name, f"impossible time: {exc}") from exc
            if compact is not None:
                img.flag("compact_local_time", "naive_time_assumed_local")
                return compact
        parsed = parse_timestamp(text, now=img.now, end_of_day=self.deadline, future_tolerance=None)
        if isinstance(parsed, TimeRejection):
            raise img.fail(parsed.reason, self.name, parsed.detail)
        img.flag(*parsed.flags)
        return parsed.value

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        doc = _doc(raw, self.name).split(" As sent:")[0]
        return [_field(self.name, _TIMESTAMP_AVRO, self.required, f"{doc} UTC.".strip())]


@dataclass(frozen=True)
class Date(Rule):
    """A calendar date (Avro date, or text as ISO / dd/mm/yyyy).

    ``future``: what a date after the event's day (+1 day) means — "reject" as
    far_future_timestamp, "flag" future_date, "allow" (expiry dates). ``birth``: a birth
    date, which must lie between 1900 and the event's day (invalid_date otherwise); any
    other date must not precede the dataset's earliest day (timestamp_before_earliest).
    """

    name: str
    required: bool = True
    future: Future = "reject"
    birth: bool = False
    event_name: str = "the event"  # how a birth date's rejection names the record's time

    def apply(self, img: Image) -> None:
        day = self.read(img)
        if day is None:
            img.out[self.name] = None
            return
        if self.birth:
            if day.year < _OLDEST_BIRTH_YEAR:
                raise img.fail("invalid_date", self.name, "birth year before 1900")
            if day > img.at_day:
                raise img.fail("invalid_date", self.name, f"birth date after {self.event_name}")
        elif day < img.earliest_day:
            raise _too_early(img.name(self.name), img.earliest)
        elif day > img.future_limit_day:
            if self.future == "reject":
                raise img.fail(
                    "far_future_timestamp", self.name, f"more than 1 day after {img.now.date()}"
                )
            if self.future == "flag":
                img.flag("future_date")
        img.out[self.name] = day

    def read(self, img: Image) -> date | None:
        """The date the raw value denotes, None for an absent optional one.

        A dataset whose contract reads its dates differently overrides this hook."""
        value = img.value(self.name, self.required)
        if value is None:
            return None
        if isinstance(value, datetime) or not isinstance(value, date | str):
            raise img.fail("invalid_date", self.name, "expected a date")
        if isinstance(value, date):
            return value
        text = img.string(self.name, self.required)
        return None if text is None else self.parse(img, text)

    def parse(self, img: Image, text: str) -> date:
        parsed = parse_date(text)
        if isinstance(parsed, TimeRejection):
            raise img.fail(parsed.reason, self.name, parsed.detail)
        return parsed.value

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [_field(self.name, _DATE_AVRO, self.required, _doc(raw, self.name))]


@dataclass(frozen=True)
class CitizenId(Rule):
    """A CCCD/CMND, checked against the record's birth date and sex when it has them."""

    name: str
    required: bool = True
    birth_date: str | None = None  # output field names, parsed before this rule
    sex: str | None = None

    def apply(self, img: Image) -> None:
        value = self.read(img)
        if value is None:
            img.out[self.name] = None
            return
        birth = img.out.get(self.birth_date) if self.birth_date else None
        sex = img.out.get(self.sex) if self.sex else None
        checked = check_citizen_id(
            value,
            img.ctx.ref.cccd_province_codes,
            birth_date=birth if isinstance(birth, date) else None,
            sex=sex if isinstance(sex, str) else None,
            today=img.at_day,
        )
        if isinstance(checked, CitizenIdRejection):
            raise img.fail(checked.reason, self.name, checked.detail)
        img.flag(*checked.flags)
        img.out[self.name] = checked.value

    def read(self, img: Image) -> Any:
        """The value to check: the raw one (``check_citizen_id`` rejects a non-string).

        A dataset whose contract reads it differently overrides this hook."""
        return img.value(self.name, self.required)

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        doc = _doc(raw, self.name, "Structure-checked, spaces removed.")
        return [_field(self.name, "string", self.required, doc)]


@dataclass(frozen=True)
class Phone(Rule):
    """E.164. ``drop_invalid``: an unusable optional number becomes null (flagged)."""

    name: str
    required: bool = False
    drop_invalid: bool = False

    def apply(self, img: Image) -> None:
        text = img.string(self.name, self.required)
        if text is None:
            img.out[self.name] = None
            return
        phone = normalize_phone(text)
        if isinstance(phone, PhoneRejection):
            if self.drop_invalid and not self.required:
                img.flag("phone_invalid_removed")
                img.out[self.name] = None
                return
            raise img.fail(phone.reason, self.name, phone.detail)
        img.flag(*phone.flags)
        img.out[self.name] = phone.value

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        doc = _doc(raw, self.name, "E.164 (+84…), pre-2018 mobile prefixes converted.")
        return [_field(self.name, "string", self.required, doc)]


@dataclass(frozen=True)
class Email(Rule):
    name: str
    required: bool = False

    def apply(self, img: Image) -> None:
        text = img.string(self.name, self.required)
        if text is not None:
            lowered = text.lower()
            if not _EMAIL.fullmatch(lowered):
                img.flag("email_invalid_removed")
                text = None
            else:
                text = lowered
        img.out[self.name] = text

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [_field(self.name, "string", False, _doc(raw, self.name, "Lower case."))]


@dataclass(frozen=True)
class Insurance(Rule):
    """A BHYT card number; its group, benefit level and province as extra fields."""

    name: str
    required: bool = False

    def apply(self, img: Image) -> None:
        text = img.string(self.name, self.required)
        fields = (f"{self.name}_group", f"{self.name}_benefit_level", f"{self.name}_province")
        if text is None:
            img.out.update(dict.fromkeys((self.name, *fields)))
            return
        groups = img.ctx.codes["bhyt_groups"].entries
        checked = check_insurance_number(text, groups, img.ctx.province_codes)
        if isinstance(checked, InsuranceRejection):
            raise img.fail(checked.reason, self.name, checked.detail)
        img.flag(*checked.flags)
        img.out[self.name] = checked.value
        img.out[fields[0]] = checked.group_code
        img.out[fields[1]] = checked.benefit_level
        img.out[fields[2]] = checked.province_code

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        n = self.name
        return [
            _field(n, "string", self.required, _doc(raw, n, "Upper case, no separators.")),
            _field(f"{n}_group", "string", False, "Beneficiary group code of the card (BHYT)."),
            _field(f"{n}_benefit_level", "int", False, "Benefit level 1-5 of the card."),
            _field(f"{n}_province", "string", False, "2-digit province code of the card."),
        ]


@dataclass(frozen=True)
class Commune(Rule):
    """A commune/ward code: the current code in ``name``, the code as sent in ``name_source``.

    Judged at the record's own time (``DatasetRules.event_time``, else the change time).
    """

    name: str
    required: bool = True

    def apply(self, img: Image) -> None:
        text = img.string(self.name, self.required)
        if text is None:
            img.out[self.name] = img.out[f"{self.name}_source"] = None
            return
        lookup = text
        if lookup.isascii() and lookup.isdigit() and len(lookup) < _COMMUNE_CODE_LENGTH:
            lookup = lookup.zfill(_COMMUNE_CODE_LENGTH)
            img.flag("admin_unit_code_zero_padded")
        unit = img.ctx.ref.resolve_admin_unit(lookup, img.at)
        if unit is None:
            raise img.fail(
                "unknown_admin_unit", self.name, f"{text!r} is not in admin_units_crosswalk.csv"
            )
        img.flag(*unit.flags)
        img.out[self.name] = unit.code
        img.out[f"{self.name}_source"] = text

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [
            _field(self.name, "string", self.required, "Current (post-reform) commune/ward code."),
            _field(
                f"{self.name}_source",
                "string",
                self.required,
                "The code as sent; differs when remapped.",
            ),
        ]


@dataclass(frozen=True)
class Unit(Rule):
    """A unit code of receiving_units.csv."""

    name: str
    required: bool = True

    def apply(self, img: Image) -> None:
        text = img.string(self.name, self.required)
        if text is not None and img.ctx.ref.receiving_unit(text) is None:
            raise img.fail(
                "unknown_receiving_unit", self.name, f"{text!r} is not in receiving_units.csv"
            )
        img.out[self.name] = text

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [_field(self.name, "string", self.required, _doc(raw, self.name))]


@dataclass(frozen=True)
class Code(Rule):
    """A value of a national code list (``schemas/data/codes_<list_name>.csv``).

    Without ``into`` the field itself becomes the national code; with ``into`` the field
    keeps its (normalized) text and the national code goes to the ``into`` field. An
    unknown value is rejected (``unknown_code``) or, with ``keep_unknown``, kept as sent
    and flagged ``code_not_in_list``.
    """

    name: str
    list_name: str
    required: bool = True
    keep_unknown: bool = False
    into: str | None = None

    def apply(self, img: Image) -> None:
        text = img.string(self.name, self.required)
        target = self.into or self.name
        if text is None:
            img.out[self.name] = img.out[target] = None
            return
        match = img.ctx.codes[self.list_name].lookup(text)
        img.out[self.name] = text
        if match is None:
            if not self.keep_unknown:
                raise img.fail(
                    "unknown_code", self.name, f"{text!r} is not in codes_{self.list_name}.csv"
                )
            img.flag("code_not_in_list")
            img.out[target] = None if self.into else text
            return
        if match.mapped and self.into is None:
            img.flag("code_mapped")
        img.out[target] = match.entry.code

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        listed = f"National code of codes_{self.list_name}.csv."
        if self.into is None:
            doc = _doc(raw, self.name, listed)
            return [_field(self.name, "string", self.required, doc)]
        return [
            _field(self.name, "string", self.required, _doc(raw, self.name)),
            _field(self.into, "string", False, f"{listed} Null when not in the list."),
        ]


@dataclass(frozen=True)
class Coordinates(Rule):
    """A WGS84 point. Outside the province: rejected (``reject_outside``) or flagged."""

    name: str  # the latitude field
    longitude: str
    required: bool = False
    reject_outside: bool = False

    def apply(self, img: Image) -> None:
        lat_raw = img.value(self.name, self.required)
        lon_raw = img.value(self.longitude, self.required)
        if lat_raw is None or lon_raw is None:
            img.out[self.name] = img.out[self.longitude] = None
            return
        lat = _number(img, self.name, lat_raw)
        lon = _number(img, self.longitude, lon_raw)
        if not (-90 <= lat <= 90 and -180 <= lon <= 180):
            raise img.fail("invalid_field", self.name, "not a WGS84 latitude/longitude")
        if not img.ctx.area.contains(lat, lon):
            if self.reject_outside:
                raise img.fail("position_out_of_area", self.name, "outside province_area.csv")
            img.flag("coordinates_outside_province")
        img.out[self.name] = lat
        img.out[self.longitude] = lon

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        return [
            _field(self.name, "double", self.required, _doc(raw, self.name)),
            _field(self.longitude, "double", self.required, _doc(raw, self.longitude)),
        ]


Check = Callable[[Image], None]


@dataclass(frozen=True)
class Verify(Rule):
    """A record check placed among the rules: it runs once the fields before it are read.

    Used where a defect must be reported before a later field could fail for a reason
    that only follows from it.
    """

    check: Check
    name: str = ""
    required: bool = False

    def apply(self, img: Image) -> None:
        self.check(img)

    def avro(self, raw: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
        return []


@dataclass(frozen=True)
class DatasetRules:
    """How one dataset is standardized, and what its std record is called."""

    dataset_id: str
    record: str  # the Avro record name, e.g. "School"
    doc: str
    rules: Sequence[Rule]
    checks: Sequence[Check] = ()  # after every rule, on img.out
    prechecks: Sequence[Check] = ()  # before any rule, on img.raw
    event_time: str | None = None  # the output timestamp field that dates the record
    ops: Collection[str] = field(default=frozenset({"c", "u", "d", "r"}))
    # The std record's fields in order, when the rules run in another order (a contract
    # that reports its problems in an order of its own); empty: the rules' order.
    fields: Sequence[str] = ()
    # The dataset's own wording of some reasons; the others come from REASONS.
    reasons: Mapping[str, tuple[str, str]] = field(default_factory=dict)
    # False: the .std.v1.avsc is written by hand (registered before the generator
    # existed); the generator must then agree with its structure, not its text.
    schema_generated: bool = True

    @cached_property
    def blank(self) -> Mapping[str, None]:
        """An empty std record in ``fields`` order (empty without ``fields``)."""
        return dict.fromkeys(self.fields)

    @cached_property
    def wording(self) -> Mapping[str, tuple[str, str]]:
        """Every reason's (English, Vietnamese) base message for this dataset."""
        return {**REASONS, **self.reasons} if self.reasons else REASONS


def _image(
    rules: DatasetRules,
    raw_image: object,
    prefix: str,
    ctx: Context,
    now: datetime,
    changed_at: datetime,
    earliest: datetime,
) -> dict[str, Any]:
    if not _is_mapping(raw_image):
        raise Invalid("invalid_field", prefix, "expected a record")
    img = Image(raw_image, prefix, ctx, now, changed_at, rules.event_time, earliest, rules.blank)
    for check in rules.prechecks:
        check(img)
    for rule in rules.rules:
        rule.apply(img)
    for check in rules.checks:
        check(img)
    img.out["quality_flags"] = list(img.flags)
    return img.out


ImageFunction = Callable[
    [object, str, Context, datetime, datetime, datetime], dict[str, Any]
]  # (raw image, prefix, ctx, now, changed_at, earliest) -> std image


def _interpreted(rules: DatasetRules) -> ImageFunction:
    def image(
        raw_image: object,
        prefix: str,
        ctx: Context,
        now: datetime,
        changed_at: datetime,
        earliest: datetime,
    ) -> dict[str, Any]:
        return _image(rules, raw_image, prefix, ctx, now, changed_at, earliest)

    return image


def _standardize(
    rules: DatasetRules,
    image: ImageFunction,
    raw: Mapping[str, Any],
    ctx: Context,
    now: datetime | None,
    earliest: datetime,
    key_fields: Sequence[str],
) -> Standardized:
    if not _is_mapping(raw):
        raise Invalid("invalid_envelope", "", "expected a record")
    get = raw.get
    event_id = get("event_id")
    event_id = str(event_id) if type(event_id) is UUID else _event_id(event_id)
    op = get("op")
    if op not in rules.ops:
        raise Invalid("invalid_envelope", "op", "expected one of c, u, d, r")
    ts = get("ts_ms")
    if type(ts) is not datetime or ts.tzinfo is None:
        ts = _aware(ts, "ts_ms")
    if ts.tzinfo is not UTC:
        ts = ts.astimezone(UTC)
    source = _source(get("source"))
    changed_at = _utc(source["ts_ms"])
    check_envelope_times(ts, changed_at, now, earliest)
    # Without a processor clock, "now" is the emit time (the event's own clock, not the
    # processor's), so a replay judges an event exactly as the first run did.
    reference_now = now if now is not None else ts
    needed = "before" if op == "d" else "after"
    if get(needed) is None:
        raise Invalid("missing_payload", needed, f"op {op!r} requires {needed!r}")
    raw_before, raw_after = get("before"), get("after")
    before = (
        None
        if raw_before is None
        else image(raw_before, "before", ctx, reference_now, changed_at, earliest)
    )
    after = (
        None
        if raw_after is None
        else image(raw_after, "after", ctx, reference_now, changed_at, earliest)
    )
    check_same_entity(before, after, key_fields)
    if before is None:
        flags = tuple(after["quality_flags"]) if after is not None else ()
    elif after is None:
        flags = tuple(before["quality_flags"])
    else:
        merged = dict.fromkeys(before["quality_flags"])
        merged.update(dict.fromkeys(after["quality_flags"]))
        flags = tuple(merged)
    source["ts_ms"] = _to_millis(changed_at)  # a dict of our own (_source)
    event = {
        "event_id": event_id,
        "op": op,
        "ts_ms": _to_millis(ts),
        "source": source,
        "before": before,
        "after": after,
    }
    return Standardized(event=event, flags=flags)


def run(
    rules: DatasetRules,
    raw: Mapping[str, Any],
    ctx: Context,
    now: datetime | None,
    *,
    earliest: date = DEFAULT_EARLIEST,
    key_fields: Sequence[str] = (),
) -> Standardized | Rejected:
    """Standardize one decoded raw event of ``rules.dataset_id``; never raises on data.

    ``earliest``: the dataset's earliest plausible day (the catalog's ``earliest``);
    ``key_fields``: its key (the catalog's ``key``), which ``before`` and ``after``
    must share. This is the interpreted engine, the reference: every rule object's
    ``apply`` in turn. ``standardizers.compiled`` runs the same declaration as one
    generated function per dataset, and must give the same results."""
    return run_with(rules, _interpreted(rules), raw, ctx, now, earliest, key_fields)


def run_with(
    rules: DatasetRules,
    image: ImageFunction,
    raw: Mapping[str, Any],
    ctx: Context,
    now: datetime | None,
    earliest: date,
    key_fields: Sequence[str],
) -> Standardized | Rejected:
    """``run`` with ``image`` standardizing each image of the event (``_image`` of the
    rules, or the compiled form of them)."""
    try:
        return _standardize(rules, image, raw, ctx, now, earliest_instant(earliest), key_fields)
    except Invalid as problem:
        return rejected(problem, rules.wording)
    except (ValueError, TypeError, OverflowError, ArithmeticError) as exc:
        # A value no rule foresaw (e.g. a datetime too close to year 1 to convert): still
        # data, still dead-lettered; the detail names the exception type, not the value.
        unforeseen = Invalid("invalid_field", "", f"unexpected {type(exc).__name__}")
        return rejected(unforeseen, rules.wording)
