"""What every sector simulator shares: the spec, the record, the rng helpers.

A simulator is a pure function of a ``SimSpec`` and the reference data: the same seed
gives the same records, event ids included. Each dataset draws from its own
``random.Random`` seeded with the spec's seed and the dataset id, so adding a dataset
never changes another one's output.

An entity (one key) has a *history*: its states in time order. ``emit`` turns the
histories into ``SimRecord`` items — version 1 (op ``c``) for the first state, 2, 3, …
(op ``u``) for the later ones — drops states after the window's end, and sorts by time.
A defective entity carries its ``expect_reason`` on every state.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import TypeVar
from zoneinfo import ZoneInfo

import holidays
from pydantic import BaseModel

from schemas.domain.citizen_id import make_citizen_id
from schemas.domain.reference import ReferenceData
from schemas.models.common import Op

__all__ = [
    "LOCAL",
    "Person",
    "Sim",
    "SimRecord",
    "SimSpec",
    "State",
    "emit",
    "op_of",
]

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
_VN_HOLIDAYS = holidays.country_holidays("VN")

T = TypeVar("T")

UNKNOWN_COMMUNE = "99999"
UNKNOWN_UNIT = "DNA.KHONGTONTAI"
BAD_PROVINCE = "999"  # not an official CCCD province code
FAR_FUTURE_YEARS = 30

FAMILY = [
    "Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng",
    "Bùi", "Đỗ", "Hồ", "Ngô", "Dương", "Lý", "Trương", "Đinh", "Lâm", "Điểu",
]  # fmt: skip
MIDDLE_MALE = ["Văn", "Hữu", "Minh", "Quốc", "Đức", "Thanh", "Công", "Xuân", "Gia", "Hoàng"]
MIDDLE_FEMALE = ["Thị", "Ngọc", "Thu", "Thanh", "Mỹ", "Kim", "Bảo", "Hồng", "Diệu", "Phương"]
GIVEN_MALE = [
    "Hùng", "Dũng", "Khoa", "Đức", "Lộc", "Phúc", "Tuấn", "Quân", "Huy", "Nghĩa",
    "Thắng", "Bảo", "Long", "Trí", "Khánh", "Sơn", "Tài", "Việt", "Hiếu", "Phước",
]  # fmt: skip
GIVEN_FEMALE = [
    "Hương", "Tuyết", "Loan", "Quỳnh", "Hòa", "Thủy", "Lan", "Trang", "Yến", "Ngân",
    "Hạnh", "Nhung", "Thảo", "Vy", "My", "Ánh", "Diễm", "Oanh", "Huyền", "Liên",
]  # fmt: skip
HOME_PROVINCES = ("075", "070")  # Đồng Nai, Bình Phước (merged into Đồng Nai in 2025)


@dataclass(frozen=True)
class SimSpec:
    """How much to simulate: ``per_day`` new entities a day over ``days`` days up to ``end``.

    ``end`` None means now. ``invalid_share`` of the entities (rounded) are defective by
    design, each marked with the reason code the processors should dead-letter it with.
    """

    days: int = 7
    per_day: int = 20
    seed: int = 7
    invalid_share: float = 0.03
    end: datetime | None = None


@dataclass(frozen=True)
class SimRecord:
    """One change event to publish, with the truth about it."""

    dataset_id: str
    record: BaseModel
    version: int
    op: Op
    at: datetime  # when the change happened (aware, UTC): the envelope's source.ts_ms
    event_id: str  # deterministic for a seed: a re-run replays the same ids
    expect_reason: str | None = None  # the defect by design; None for a valid record


@dataclass(frozen=True)
class Person:
    full_name: str
    sex: str  # MALE | FEMALE
    birth_date: date
    citizen_id: str


@dataclass
class State:
    """One state of an entity's history."""

    at: datetime
    record: BaseModel


@dataclass
class History:
    states: list[State] = field(default_factory=list)
    reason: str | None = None


class Sim:
    """The random source and the reference data of one dataset's simulation."""

    def __init__(self, dataset_id: str, spec: SimSpec, ref: ReferenceData) -> None:
        self.dataset_id = dataset_id
        self.spec = spec
        self.ref = ref
        self.rng = random.Random(f"{spec.seed}:{dataset_id}")
        self.end = (spec.end or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
        self.start = self.end - timedelta(days=spec.days)
        self.communes = sorted(
            code for code, e in ref.crosswalk.items() if e.new_code == e.old_code
        )
        self.old_communes = sorted(
            code for code, e in ref.crosswalk.items() if e.new_code != e.old_code
        )
        self.provinces = sorted(ref.cccd_province_codes)
        self.units = sorted(ref.receiving_units)
        self._serial = 0

    # ---- sizes and defects

    @property
    def count(self) -> int:
        return max(1, self.spec.days * self.spec.per_day)

    def defects(self, n: int, kinds: Sequence[str], *, weight: float = 1.0) -> list[str | None]:
        """Exactly ``round(n * invalid_share * weight)`` defect codes among ``n`` slots.

        ``weight`` > 1 makes up for defective entities publishing fewer versions than
        valid ones, so the share of *records* stays close to ``invalid_share``.
        """
        k = min(n, round(n * self.spec.invalid_share * weight))
        chosen = set(self.rng.sample(range(n), k))
        return [self.rng.choice(kinds) if i in chosen else None for i in range(n)]

    # ---- randomness

    def pick(self, items: Sequence[T]) -> T:
        return items[self.rng.randrange(len(items))]

    def event_id(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def serial(self) -> int:
        self._serial += 1
        return self._serial

    # ---- time

    def moment(self, *, working_hours: bool = False) -> datetime:
        """A time in the window; office hours on a working day when asked (if any fits)."""
        span = int((self.end - self.start).total_seconds())
        if not working_hours:
            return self.start + timedelta(seconds=self.rng.randint(0, span))
        return self.moment_between(7.5, 16.75, working_days=True)

    def moment_between(
        self, first_hour: float, last_hour: float, *, working_days: bool
    ) -> datetime:
        """A time in the window between two local hours (whole seconds)."""
        span = int((self.end - self.start).total_seconds())
        for _ in range(50):
            day = (self.start + timedelta(seconds=self.rng.randint(0, span))).astimezone(LOCAL)
            if working_days and not is_working_day(day.date()):
                continue
            at = local_time(day.date(), first_hour) + timedelta(
                seconds=self.rng.randint(0, int((last_hour - first_hour) * 3600))
            )
            if self.start <= at <= self.end:
                return at
        return self.start + timedelta(seconds=self.rng.randint(0, span))

    def hours(self, low: float, high: float) -> timedelta:
        """A random duration in whole seconds (times travel as milliseconds in Avro)."""
        return timedelta(seconds=round(self.rng.uniform(low, high) * 3600))

    def minutes(self, low: float, high: float) -> timedelta:
        return timedelta(seconds=round(self.rng.uniform(low, high) * 60))

    def days(self, low: float, high: float) -> timedelta:
        return timedelta(seconds=round(self.rng.uniform(low, high) * 86400))

    def far_future(self) -> datetime:
        return self.end + timedelta(days=365 * FAR_FUTURE_YEARS + self.rng.randint(0, 300))

    # ---- people and places

    def name(self, sex: str) -> str:
        if sex == "MALE":
            return f"{self.pick(FAMILY)} {self.pick(MIDDLE_MALE)} {self.pick(GIVEN_MALE)}"
        return f"{self.pick(FAMILY)} {self.pick(MIDDLE_FEMALE)} {self.pick(GIVEN_FEMALE)}"

    def person(self, min_age: int, max_age: int, *, bad_id: str | None = None) -> Person:
        """A person with a CCCD consistent with birth date and sex (unless ``bad_id``).

        ``bad_id``: "invalid_citizen_id" (an unofficial province code) or
        "citizen_id_mismatch" (the id encodes the other sex).
        """
        sex = self.pick(("MALE", "FEMALE"))
        today = self.end.astimezone(LOCAL).date()
        age_days = self.rng.randint(min_age * 365 + 1, max_age * 365 + 364)
        birth = today - timedelta(days=age_days)
        province = (
            self.pick(HOME_PROVINCES) if self.rng.random() < 0.8 else self.pick(self.provinces)
        )
        id_sex = sex
        if bad_id == "invalid_citizen_id":
            province = BAD_PROVINCE
        elif bad_id == "citizen_id_mismatch":
            id_sex = "FEMALE" if sex == "MALE" else "MALE"
        cid = make_citizen_id(province, birth.year, id_sex, self.rng.randint(0, 999_999))
        return Person(self.name(sex), sex, birth, cid)

    def commune(self, *, old_share: float = 0.03) -> str:
        """A current commune/ward code; now and then a pre-reform code."""
        if self.old_communes and self.rng.random() < old_share:
            return self.pick(self.old_communes)
        return self.pick(self.communes)

    def commune_name(self, code: str) -> str:
        entry = self.ref.crosswalk.get(code)
        return entry.name_new if entry is not None else "Phường Biên Hòa"

    def point_in(self, commune: str) -> tuple[float, float]:
        """A plausible point for a commune: the Biên Hòa–Long Khánh area or the north."""
        south = commune < "75026" or not commune.startswith("75")
        if south:
            lat, lon = self.rng.uniform(10.9, 11.05), self.rng.uniform(106.78, 107.3)
        else:
            lat, lon = self.rng.uniform(11.35, 11.85), self.rng.uniform(106.62, 107.15)
        return round(lat, 6), round(lon, 6)

    def phone(self) -> str:
        prefix = self.pick(("90", "91", "93", "94", "96", "97", "98", "86", "88", "39", "70"))
        return f"+84{prefix}{self.rng.randint(0, 9_999_999):07d}"


def is_public_holiday(day: date) -> bool:
    """A Vietnamese public holiday (Tết included), whichever day of the week."""
    return day in _VN_HOLIDAYS


def is_working_day(day: date) -> bool:
    return day.weekday() < 5 and not is_public_holiday(day)


def working_days_after(start: date, n: int) -> date:
    day = start
    while n > 0:
        day += timedelta(days=1)
        if is_working_day(day):
            n -= 1
    return day


def local_time(day: date, hour: float) -> datetime:
    """``hour`` (fractional) on a local calendar day, as an aware UTC datetime."""
    minutes = round(hour * 60)
    local = datetime.combine(day, time(0, 0), LOCAL) + timedelta(minutes=minutes)
    return local.astimezone(UTC)


def local_iso(at: datetime) -> str:
    """ISO 8601 with the +07:00 offset, to the second."""
    return at.astimezone(LOCAL).isoformat(timespec="seconds")


def local_compact(at: datetime, fmt: str = "%Y%m%d%H%M") -> str:
    """A naive local time in a datalogger's compact form (Asia/Ho_Chi_Minh)."""
    return at.astimezone(LOCAL).strftime(fmt)


def op_of(version: int) -> Op:
    """A change's op by its version: the first creates the entity, the later ones update it."""
    return Op.CREATE if version == 1 else Op.UPDATE


def emit(sim: Sim, histories: Sequence[History]) -> list[SimRecord]:
    """Number, cut at the window's end and sort the states of every entity."""
    out: list[tuple[datetime, int, SimRecord]] = []
    order = 0
    for history in histories:
        version = 0
        last: datetime | None = None
        for state in history.states:
            if state.at > sim.end or state.at < sim.start:
                continue
            if last is not None and state.at <= last:
                # Two changes in the same second still need distinct, increasing times.
                state = State(last + timedelta(seconds=1), state.record)
                if state.at > sim.end:
                    continue
            version += 1
            last = state.at
            order += 1
            record = SimRecord(
                dataset_id=sim.dataset_id,
                record=state.record,
                version=version,
                op=op_of(version),
                at=state.at,
                event_id=sim.event_id(),
                expect_reason=history.reason,
            )
            out.append((state.at, order, record))
    out.sort(key=lambda item: (item[0], item[1]))
    return [record for _, _, record in out]
