"""A simulator of the province's public-service portal, driving the ``Publisher``.

``generate`` is pure and deterministic for a seed: many receiving units over
simulated working days, realistic lifecycles (received → in progress →
maybe supplement requested → completed / returned / cancelled, or still open),
a few units overdue on purpose, and a small share of deliberately bad input.
Each event carries the truth the test needs to check the bus independently:
the true UTC times, whether the dossier should be dead-lettered and why.

Bad input, by design:
- dead-lettered (whole dossier): a malformed citizen id, an unknown receiving
  unit, an unknown commune/ward code;
- standardized, not refused: naive local timestamps, dd/mm/yyyy dates,
  NFD (decomposed) Vietnamese text, stray spaces, pre-reform commune codes.
"""

from __future__ import annotations

import random
import time
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import holidays

from producers.publisher import Publisher
from schemas.catalog import DOSSIERS
from schemas.domain.citizen_id import make_citizen_id
from schemas.domain.reference import ReferenceData
from schemas.models.common import Op, Sex
from schemas.models.public_service import Channel, Dossier, DossierStatus

__all__ = [
    "HOLIDAY_SHARE",
    "WEEKEND_SHARE",
    "SimConfig",
    "SimEvent",
    "day_share",
    "dossiers_per_unit_on",
    "generate",
    "latest_truth",
    "live_events",
    "publish_events",
]

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
_VN_HOLIDAYS = holidays.country_holidays("VN")

PROCEDURES = [
    ("1.001612", "Đăng ký thành lập hộ kinh doanh"),
    ("2.000889", "Cấp giấy phép xây dựng nhà ở riêng lẻ"),
    ("1.004227", "Cấp bản sao trích lục hộ tịch"),
    ("1.000894", "Đăng ký khai sinh"),
    ("1.001193", "Chứng thực bản sao từ bản chính"),
    ("2.001711", "Cấp giấy phép lái xe quốc tế"),
    ("1.003003", "Đăng ký biến động quyền sử dụng đất"),
    ("1.002755", "Cấp chứng chỉ hành nghề khám bệnh, chữa bệnh"),
]
FAMILY = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Võ", "Đặng", "Bùi", "Đỗ"]
MIDDLE = ["Văn", "Thị", "Hữu", "Minh", "Thanh", "Ngọc", "Quốc", "Thủy"]
GIVEN = ["Hòa", "Thủy", "Khoa", "Tuyết", "Đức", "Hương", "Quỳnh", "Loan", "Anh", "Lộc"]

BAD_KINDS = ("invalid_citizen_id", "unknown_receiving_unit", "unknown_admin_unit")


@dataclass(frozen=True)
class SimConfig:
    days: int = 30
    dossiers_per_unit_per_day: float = 2.0
    units: int | None = None  # None: every receiving unit of the reference data
    overdue_units: int = 3
    bad_share: float = 0.04
    messy_share: float = 0.15
    seed: int = 7
    end: datetime | None = None  # None: now


@dataclass(frozen=True)
class SimEvent:
    """One change to publish, with the truth about it for independent checks."""

    at: datetime
    version: int
    op: Op
    dossier: Dossier
    truth: dict[str, object] = field(repr=False)
    expect_reason: str | None = None  # the DLQ reason code when it must be refused
    event_id: str = ""  # deterministic for a seed, so a second run is a true replay


# The one-stop counters close on weekends and public holidays, but the online portal
# (and a weekend counter in some wards) keeps taking dossiers: fewer, never none.
WEEKEND_SHARE = 0.25
HOLIDAY_SHARE = 0.10
LIVE_FALLBACK = 5  # events a live batch repeats on a working day when its window is empty


def day_share(day: date) -> float:
    """The share of a working day's dossiers received on ``day`` (a local calendar day):
    1 on working days, ``WEEKEND_SHARE`` on Saturdays and Sundays, ``HOLIDAY_SHARE`` on
    public holidays (Tết included), whichever day of the week they fall on."""
    if day in _VN_HOLIDAYS:
        return HOLIDAY_SHARE
    if day.weekday() >= 5:
        return WEEKEND_SHARE
    return 1.0


def dossiers_per_unit_on(day: date, per_working_day: float) -> float:
    """Expected dossiers a receiving unit gets on ``day``, given its working-day rate."""
    return per_working_day * day_share(day)


def _working_days_after(start: date, n: int) -> date:
    day = start
    while n > 0:
        day += timedelta(days=1)
        if day.weekday() < 5 and day not in _VN_HOLIDAYS:
            n -= 1
    return day


def _local_at(day: date, hour: float) -> datetime:
    h, m = int(hour), int((hour % 1) * 60)
    return datetime(day.year, day.month, day.day, h, m, tzinfo=LOCAL).astimezone(UTC)


def _fmt(at: datetime, style: str) -> str:
    local = at.astimezone(LOCAL)
    if style == "naive":
        return local.replace(tzinfo=None).isoformat(timespec="seconds")
    if style == "ddmmyyyy":
        return local.strftime("%d/%m/%Y %H:%M:%S")
    return local.isoformat(timespec="seconds")


def _messy(text: str, rng: random.Random) -> str:
    return "  " + unicodedata.normalize("NFD", text).replace(" ", "\u00a0 ", 1) + " "


@dataclass
class _Dossier:
    truth: dict[str, object]
    fields: dict[str, object]
    bad: str | None
    events: list[tuple[datetime, str, datetime | None]]  # (at, status, completed_at)


def _plan_dossier(
    rng: random.Random,
    n: int,
    unit: str,
    overdue_unit: bool,
    received: datetime,
    end: datetime,
    ref: ReferenceData,
    communes: Sequence[str],
    old_communes: Sequence[str],
    bad: str | None,
) -> _Dossier:
    proc_code, proc_name = rng.choice(PROCEDURES)
    due_day = _working_days_after(received.astimezone(LOCAL).date(), rng.choice([3, 5, 7, 10]))
    due = _local_at(due_day, 17.0)
    sex = rng.choice([Sex.MALE, Sex.FEMALE])
    birth_year = rng.randint(1950, 2006)
    provinces = sorted(ref.cccd_province_codes)
    citizen_id = make_citizen_id(
        rng.choice(provinces), birth_year, sex.value, rng.randint(0, 999_999)
    )
    commune = (
        rng.choice(old_communes) if old_communes and rng.random() < 0.05 else rng.choice(communes)
    )
    if bad == "invalid_citizen_id":
        citizen_id = rng.choice(
            ["999" + citizen_id[3:], citizen_id[:11], citizen_id[:6] + "ABCDEF"]
        )
    elif bad == "unknown_receiving_unit":
        unit = "DNA.KHONGTONTAI"
    elif bad == "unknown_admin_unit":
        commune = "99999"
    name = f"{rng.choice(FAMILY)} {rng.choice(MIDDLE)} {rng.choice(GIVEN)}"
    fields: dict[str, object] = {
        "dossier_id": f"HS-{unit.rsplit('.', 1)[-1]}-{n:06d}",
        "dossier_code": f"000.00.{n % 100:02d}.H19-{received.astimezone(LOCAL):%y%m%d}-{n:04d}",
        "procedure_code": proc_code,
        "procedure_name": proc_name,
        "receiving_unit_code": unit,
        "admin_unit_code": commune,
        "applicant_citizen_id": citizen_id,
        "applicant_name": name,
        "applicant_birth_date": f"{rng.randint(1, 28):02d}/{rng.randint(1, 12):02d}/{birth_year}",
        "applicant_sex": sex,
        "channel": rng.choice([Channel.ONLINE, Channel.ONLINE, Channel.IN_PERSON]),
    }
    # Lifecycle: where it ends up, and when.
    roll = rng.random()
    late_p, open_p = (0.55, 0.15) if overdue_unit else (0.03, 0.0)
    span = (due - received).total_seconds()
    events: list[tuple[datetime, str, datetime | None]] = [(received, "RECEIVED", None)]
    started = received + timedelta(hours=rng.uniform(0.5, 6))
    events.append((started, "IN_PROGRESS", None))
    if rng.random() < 0.1:
        events.append((started + timedelta(hours=rng.uniform(1, 24)), "SUPPLEMENT_REQUESTED", None))
        events.append((events[-1][0] + timedelta(hours=rng.uniform(4, 48)), "IN_PROGRESS", None))
    last = events[-1][0]
    if roll < open_p:
        outcome: tuple[str, datetime] | None = None
    elif roll < open_p + late_p:
        outcome = ("COMPLETED", due + timedelta(hours=rng.uniform(2, 24 * 6)))
    elif roll < open_p + late_p + 0.03:
        outcome = (
            rng.choice(["RETURNED", "CANCELLED"]),
            last + timedelta(hours=rng.uniform(1, 24)),
        )
    else:
        finish = last + timedelta(
            seconds=rng.uniform(0.1, 0.9) * max(span - (last - received).total_seconds(), 3600)
        )
        outcome = ("COMPLETED", min(finish, due))
    if outcome is not None and outcome[0] == "COMPLETED" and outcome[1] <= last:
        outcome = ("COMPLETED", last + timedelta(minutes=30))
    if outcome is not None:
        events.append((outcome[1], outcome[0], outcome[1] if outcome[0] == "COMPLETED" else None))
    events = [e for e in events if e[0] <= end]
    truth = {
        "dossier_id": fields["dossier_id"],
        "receiving_unit_code": unit,
        "received_at": received,
        "due_at": due,
        "overdue_unit": overdue_unit,
    }
    return _Dossier(truth=truth, fields=fields, bad=bad, events=events)


def generate(config: SimConfig, ref: ReferenceData) -> list[SimEvent]:
    """Every event of the simulated period, in time order."""
    rng = random.Random(config.seed)
    end = (config.end or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    units = (
        sorted(ref.receiving_units)[: config.units] if config.units else sorted(ref.receiving_units)
    )
    overdue = set(rng.sample(units, min(config.overdue_units, len(units))))
    communes = sorted({e.new_code for e in ref.crosswalk.values()})
    old_communes = sorted(code for code, e in ref.crosswalk.items() if e.new_code != code)
    out: list[SimEvent] = []
    n = 0
    start_day = end.astimezone(LOCAL).date() - timedelta(days=config.days)
    for offset in range(config.days + 1):
        day = start_day + timedelta(days=offset)
        rate = dossiers_per_unit_on(day, config.dossiers_per_unit_per_day)
        for unit in units:
            count = int(rate) + (rng.random() < rate % 1)
            for _ in range(count):
                received = _local_at(day, rng.uniform(7.5, 16.5))
                if received > end:
                    continue
                n += 1
                bad = rng.choice(BAD_KINDS) if rng.random() < config.bad_share else None
                plan = _plan_dossier(
                    rng, n, unit, unit in overdue, received, end, ref, communes, old_communes, bad
                )
                out.extend(_events_of(plan, rng, config.messy_share))
    out.sort(key=lambda e: (e.at, e.dossier.dossier_id, e.version))
    return out


def _events_of(plan: _Dossier, rng: random.Random, messy_share: float) -> Iterator[SimEvent]:
    for version, (at, status, completed) in enumerate(plan.events, start=1):
        style = rng.choices(
            ["iso", "naive", "ddmmyyyy"], [1 - messy_share, messy_share * 0.7, messy_share * 0.3]
        )[0]
        fields = dict(plan.fields)
        if rng.random() < messy_share:
            fields["procedure_name"] = _messy(str(fields["procedure_name"]), rng)
            fields["applicant_name"] = _messy(str(fields["applicant_name"]), rng)
        dossier = Dossier.model_validate(
            {
                **fields,
                "status": DossierStatus(status),
                "received_at": _fmt(plan.truth["received_at"], style),  # type: ignore[arg-type]
                "due_at": _fmt(plan.truth["due_at"], style),  # type: ignore[arg-type]
                "completed_at": _fmt(completed, style) if completed else None,
            }
        )
        truth = {**plan.truth, "status": status, "completed_at": completed, "version": version}
        yield SimEvent(
            at=at,
            version=version,
            op=Op.CREATE if version == 1 else Op.UPDATE,
            dossier=dossier,
            truth=truth,
            expect_reason=plan.bad,
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        )


def latest_truth(events: Sequence[SimEvent]) -> list[dict[str, object]]:
    """The true latest state of every dossier that must pass standardization."""
    latest: dict[str, dict[str, object]] = {}
    for ev in events:
        if ev.expect_reason is None:
            latest[ev.dossier.dossier_id] = ev.truth
    return list(latest.values())


def publish_events(
    publisher: Publisher,
    events: Sequence[SimEvent],
    *,
    rate: float | None = None,
    on_progress: Callable[[int], None] | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Publish in order, at most ``rate`` events/s (None: as fast as the broker takes)."""
    started = time.monotonic()
    sent = 0
    for ev in events:
        if stop():
            break
        publisher.publish(
            DOSSIERS,
            ev.dossier,
            version=ev.version,
            op=ev.op,
            changed_at=ev.at,
            event_id=ev.event_id or None,
        )
        sent += 1
        if on_progress is not None and sent % 100 == 0:
            on_progress(sent)
        if rate:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)  # pacing a simulated source, not synchronisation
    publisher.flush()
    if on_progress is not None:
        on_progress(sent)
    return sent


def live_events(
    config: SimConfig, ref: ReferenceData, batch_seconds: float = 10.0
) -> Iterator[list[SimEvent]]:
    """After the history: new dossiers keep arriving at wall-clock time, forever."""
    seed = config.seed
    while True:
        seed += 1
        end = datetime.now(UTC)
        batch = generate(
            SimConfig(
                days=0,
                dossiers_per_unit_per_day=0.3,
                units=config.units,
                overdue_units=config.overdue_units,
                bad_share=config.bad_share,
                messy_share=config.messy_share,
                seed=seed,
                end=end,
            ),
            ref,
        )
        # An empty window (night, or no dossier just now) repeats the day's last few
        # events, fewer on weekends and holidays: the feed stays alive every day.
        fallback = max(1, round(LIVE_FALLBACK * day_share(end.astimezone(LOCAL).date())))
        window = [ev for ev in batch if ev.at > end - timedelta(seconds=batch_seconds)]
        yield window or batch[-fallback:]
