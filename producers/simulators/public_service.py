"""The public-service portal: dossiers (``publicservice.dossiers``) and their
processing steps (``publicservice.dossier_steps``).

Dossiers. ``generate_dossiers`` drives the portal with its own knobs (``DossierSpec``):
many receiving units over simulated days at a rate per unit and working day (a
quarter of it on weekends, a tenth on public holidays: the counters close, the online
portal does not), realistic lifecycles (received → in progress → maybe supplement
requested → completed / returned / cancelled, or still open), a few units overdue on
purpose, and a small share of deliberately bad input. Each event carries the truth the
tests need to check the bus independently: the true UTC times, and the DLQ reason when
the dossier must be refused. ``live_dossiers`` keeps new dossiers coming at wall-clock
time. ``simulate_dossiers`` is the same generator seen through the framework's
``SimSpec``, like every other dataset.

Bad input, by design:
- dead-lettered (whole dossier): a malformed citizen id, an unknown receiving
  unit, an unknown commune/ward code;
- standardized, not refused: naive local timestamps, dd/mm/yyyy dates,
  NFD (decomposed) Vietnamese text, stray spaces, pre-reform commune codes.

Dossier steps. Each dossier goes through the one-stop-shop workflow — reception,
appraisal, approval, return of results — each step handled by a unit, moving WAITING →
IN_PROGRESS → COMPLETED in office hours (a few are returned). Times are ISO 8601 with
the +07:00 offset, as the portal sends them. Defects: an unknown handling unit; a step
finished before it started.
"""

from __future__ import annotations

import dataclasses
import random
import unicodedata
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import cast

from producers.simulators._common import (
    LOCAL,
    UNKNOWN_COMMUNE,
    UNKNOWN_UNIT,
    History,
    Sim,
    SimRecord,
    SimSpec,
    State,
    emit,
    is_public_holiday,
    local_compact,
    local_iso,
    local_time,
    op_of,
    working_days_after,
)
from schemas.domain.citizen_id import make_citizen_id
from schemas.domain.reference import ReferenceData
from schemas.models.common import Sex
from schemas.models.public_service import Channel, Dossier, DossierStatus, DossierStep, StepStatus

__all__ = [
    "DATASET",
    "DOSSIERS_DATASET",
    "DOSSIER_DEFECTS",
    "HOLIDAY_SHARE",
    "WEEKEND_SHARE",
    "DossierEvent",
    "DossierSpec",
    "day_share",
    "dossiers_per_unit_on",
    "generate_dossiers",
    "latest_truth",
    "live_dossiers",
    "simulate_dossier_steps",
    "simulate_dossiers",
]

# ---------------------------------------------------------------- dossiers

DOSSIERS_DATASET = "publicservice.dossiers"
DOSSIER_DEFECTS = ("invalid_citizen_id", "unknown_receiving_unit", "unknown_admin_unit")

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

# The one-stop counters close on weekends and public holidays, but the online portal
# (and a weekend counter in some wards) keeps taking dossiers: fewer, never none.
WEEKEND_SHARE = 0.25
HOLIDAY_SHARE = 0.10
LIVE_RATE = 0.3  # dossiers per unit and working day in the live feed
LIVE_FALLBACK = 5  # events a live batch repeats on a working day when its window is empty
LIVE_LOOKBACK_DAYS = 7  # how far back a live batch looks when today has no dossier yet


@dataclass(frozen=True)
class DossierSpec:
    """The portal's knobs: ``dossiers_per_unit_per_day`` on a working day for each of
    ``units`` receiving units (None: all), over the ``days`` calendar days before
    ``end`` (None: now) and ``end``'s own day; ``bad_share`` of the dossiers defective,
    ``messy_share`` of the events in a messy but acceptable form. Deterministic for
    ``seed``."""

    days: int = 30
    dossiers_per_unit_per_day: float = 2.0
    units: int | None = None  # None: every receiving unit of the reference data
    overdue_units: int = 3
    bad_share: float = 0.04
    messy_share: float = 0.15
    seed: int = 7
    end: datetime | None = None  # None: now
    # The serial of the first dossier (its id is HS-<unit>-<serial>): a live batch
    # starts past every serial used before it, so its dossiers are new, not updates.
    first_serial: int = 1


@dataclass(frozen=True)
class DossierEvent(SimRecord):
    """A simulated dossier change, with the truth about it for independent checks."""

    truth: dict[str, object] = field(default_factory=dict, repr=False)

    @property
    def dossier(self) -> Dossier:
        return cast(Dossier, self.record)


def day_share(day: date) -> float:
    """The share of a working day's dossiers received on ``day`` (a local calendar day):
    1 on working days, ``WEEKEND_SHARE`` on Saturdays and Sundays, ``HOLIDAY_SHARE`` on
    public holidays (Tết included), whichever day of the week they fall on."""
    if is_public_holiday(day):
        return HOLIDAY_SHARE
    if day.weekday() >= 5:
        return WEEKEND_SHARE
    return 1.0


def dossiers_per_unit_on(day: date, per_working_day: float) -> float:
    """Expected dossiers a receiving unit gets on ``day``, given its working-day rate."""
    return per_working_day * day_share(day)


def _at_minute(day: date, hour: float) -> datetime:
    """``hour`` on a local day, cut to the whole minute (the portal's reception time)."""
    return local_time(day, int(hour) + int(hour % 1 * 60) / 60)


def _portal_time(at: datetime, style: str) -> str:
    if style == "naive":
        return at.astimezone(LOCAL).replace(tzinfo=None).isoformat(timespec="seconds")
    if style == "ddmmyyyy":
        return local_compact(at, "%d/%m/%Y %H:%M:%S")
    return local_iso(at)


def _messy(text: str) -> str:
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
    due_day = working_days_after(received.astimezone(LOCAL).date(), rng.choice([3, 5, 7, 10]))
    due = local_time(due_day, 17.0)
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
        unit = UNKNOWN_UNIT
    elif bad == "unknown_admin_unit":
        commune = UNKNOWN_COMMUNE
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


def generate_dossiers(spec: DossierSpec, ref: ReferenceData) -> list[DossierEvent]:
    """Every dossier event of the simulated period, in time order."""
    rng = random.Random(spec.seed)
    end = (spec.end or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    units = sorted(ref.receiving_units)[: spec.units] if spec.units else sorted(ref.receiving_units)
    overdue = set(rng.sample(units, min(spec.overdue_units, len(units))))
    communes = sorted({e.new_code for e in ref.crosswalk.values()})
    old_communes = sorted(code for code, e in ref.crosswalk.items() if e.new_code != code)
    out: list[DossierEvent] = []
    n = spec.first_serial - 1
    start_day = end.astimezone(LOCAL).date() - timedelta(days=spec.days)
    for offset in range(spec.days + 1):
        day = start_day + timedelta(days=offset)
        rate = dossiers_per_unit_on(day, spec.dossiers_per_unit_per_day)
        for unit in units:
            count = int(rate) + (rng.random() < rate % 1)
            for _ in range(count):
                received = _at_minute(day, rng.uniform(7.5, 16.5))
                if received > end:
                    continue
                n += 1
                bad = rng.choice(DOSSIER_DEFECTS) if rng.random() < spec.bad_share else None
                plan = _plan_dossier(
                    rng, n, unit, unit in overdue, received, end, ref, communes, old_communes, bad
                )
                out.extend(_events_of(plan, rng, spec.messy_share))
    out.sort(key=lambda e: (e.at, e.dossier.dossier_id, e.version))
    return out


def _events_of(plan: _Dossier, rng: random.Random, messy_share: float) -> Iterator[DossierEvent]:
    for version, (at, status, completed) in enumerate(plan.events, start=1):
        style = rng.choices(
            ["iso", "naive", "ddmmyyyy"], [1 - messy_share, messy_share * 0.7, messy_share * 0.3]
        )[0]
        fields = dict(plan.fields)
        if rng.random() < messy_share:
            fields["procedure_name"] = _messy(str(fields["procedure_name"]))
            fields["applicant_name"] = _messy(str(fields["applicant_name"]))
        received = cast(datetime, plan.truth["received_at"])
        due = cast(datetime, plan.truth["due_at"])
        dossier = Dossier.model_validate(
            {
                **fields,
                "status": DossierStatus(status),
                "received_at": _portal_time(received, style),
                "due_at": _portal_time(due, style),
                "completed_at": _portal_time(completed, style) if completed else None,
            }
        )
        truth = {**plan.truth, "status": status, "completed_at": completed, "version": version}
        yield DossierEvent(
            dataset_id=DOSSIERS_DATASET,
            record=dossier,
            version=version,
            op=op_of(version),
            at=at,
            event_id=str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            expect_reason=plan.bad,
            truth=truth,
        )


def latest_truth(events: Sequence[DossierEvent]) -> list[dict[str, object]]:
    """The true latest state of every dossier that must pass standardization."""
    latest: dict[str, dict[str, object]] = {}
    for ev in events:
        if ev.expect_reason is None:
            latest[ev.dossier.dossier_id] = ev.truth
    return list(latest.values())


def live_dossiers(
    spec: DossierSpec,
    ref: ReferenceData,
    batch_seconds: float = 10.0,
    *,
    now: Callable[[], datetime] = lambda: datetime.now(UTC),
) -> Iterator[list[DossierEvent]]:
    """After the history: new dossiers keep arriving at wall-clock time, forever.

    Each batch is today's dossiers at ``LIVE_RATE`` (a new seed each time) received in
    the last ``batch_seconds``. A window with none (night, a weekend, or no dossier just
    now) sends the latest few dossier events of the last days instead, fewer on weekends
    and holidays: the feed is never empty, whatever the hour or the day."""
    seed = spec.seed
    while True:
        seed += 1
        end = now()
        window: list[DossierEvent] = []
        batch: list[DossierEvent] = []
        # Today first; before today's first dossier (the small hours, a quiet Sunday)
        # the days before it, up to a week back.
        for days in range(LIVE_LOOKBACK_DAYS + 1):
            batch = generate_dossiers(
                dataclasses.replace(
                    spec,
                    days=days,
                    dossiers_per_unit_per_day=LIVE_RATE,
                    seed=seed,
                    end=end,
                    first_serial=_live_serial(end),
                ),
                ref,
            )
            if batch:
                break
        window = [ev for ev in batch if ev.at > end - timedelta(seconds=batch_seconds)]
        fallback = max(1, round(LIVE_FALLBACK * day_share(end.astimezone(LOCAL).date())))
        yield window or batch[-fallback:]


def _live_serial(end: datetime) -> int:
    """The first serial of a live batch made at ``end``: from the clock, so batches (and
    a restarted simulator) never reuse the history's serials or each other's — the
    history counts from 1, a live batch from the epoch second × 1,000 (a batch holds far
    fewer than 1,000 dossiers per second between batches)."""
    return int(end.timestamp()) * 1000


def simulate_dossiers(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    """The dossiers as the framework asks for them: about ``spec.per_day`` a working day
    over all receiving units, ``spec.invalid_share`` of them defective, every event in
    ``[end - days, end]`` (a dossier received before the window is left out whole, so
    versions still start at 1)."""
    end = (spec.end or datetime.now(UTC)).astimezone(UTC).replace(microsecond=0)
    events = generate_dossiers(
        DossierSpec(
            days=spec.days,
            dossiers_per_unit_per_day=spec.per_day / max(1, len(ref.receiving_units)),
            bad_share=spec.invalid_share,
            seed=spec.seed,
            end=end,
        ),
        ref,
    )
    start = end - timedelta(days=spec.days)
    early = {ev.dossier.dossier_id for ev in events if ev.at < start}
    return [ev for ev in events if ev.dossier.dossier_id not in early]


# ---------------------------------------------------------------- dossier steps

DATASET = "publicservice.dossier_steps"
DEFECTS = ("unknown_receiving_unit", "finished_before_started")

WORKFLOW = [
    ("TIEP_NHAN", "Tiếp nhận hồ sơ", 0),
    ("THAM_DINH", "Thẩm định hồ sơ", 3),
    ("PHE_DUYET", "Phê duyệt kết quả", 1),
    ("TRA_KET_QUA", "Trả kết quả cho công dân", 1),
]
NOTES = [
    None,
    None,
    "Hồ sơ đầy đủ, hợp lệ",
    "Đã chuyển phòng chuyên môn thẩm định",
    "Đề nghị bổ sung bản sao giấy chứng nhận quyền sử dụng đất",
    "Trình lãnh đạo ký duyệt",
]


def simulate_dossier_steps(spec: SimSpec, ref: ReferenceData) -> list[SimRecord]:
    sim = Sim(DATASET, spec, ref)
    n_steps = sim.count
    dossiers = max(1, n_steps // len(WORKFLOW))
    defects = sim.defects(dossiers * len(WORKFLOW), DEFECTS, weight=1.3)
    units = [u for u in sim.units if u != "DNA.VPUB"]
    histories: list[History] = []
    for d in range(dossiers):
        received = sim.moment(working_hours=True)
        dossier_id = f"HS-{received.astimezone(LOCAL):%y%m%d}-{sim.serial():06d}"
        specialist = sim.pick(units)
        cursor = received
        for order, (code, name, work_days) in enumerate(WORKFLOW, start=1):
            reason = defects[d * len(WORKFLOW) + order - 1]
            unit = "DNA.TTPVHCC" if code in ("TIEP_NHAN", "TRA_KET_QUA") else specialist
            if reason == "unknown_receiving_unit":
                unit = UNKNOWN_UNIT
            officer = f"CB{sim.rng.randint(1, 9999):04d}"
            started = cursor + sim.minutes(5, 90)
            due_day = working_days_after(started.astimezone(LOCAL).date(), max(work_days, 1))
            due = local_time(due_day, 17.0)
            finished = started + sim.hours(0.3, 20 * max(work_days, 1))
            if sim.rng.random() < 0.08:
                finished = due + sim.hours(2, 48)  # late on purpose
            returned = code == "THAM_DINH" and sim.rng.random() < 0.05
            step_id = f"{dossier_id}-B{order}"

            def step(
                status: StepStatus,
                fin: str | None,
                *,
                step_id: str = step_id,
                dossier_id: str = dossier_id,
                order: int = order,
                code: str = code,
                name: str = name,
                unit: str = unit,
                officer: str = officer,
                started_at: str = local_iso(started),
                due_at: str = local_iso(due),
            ) -> DossierStep:
                return DossierStep(
                    step_id=step_id,
                    dossier_id=dossier_id,
                    step_order=order,
                    step_code=code,
                    step_name=name,
                    handling_unit_code=unit,
                    handler_officer_id=officer if status is not StepStatus.WAITING else None,
                    status=status,
                    started_at=started_at,
                    due_at=due_at,
                    finished_at=fin,
                    note=sim.pick(NOTES),
                )

            history = History(reason=reason)
            final = StepStatus.RETURNED if returned else StepStatus.COMPLETED
            if reason == "finished_before_started":
                # One change carrying the whole step, with an impossible finish time.
                fin_text = local_iso(started - timedelta(days=sim.rng.randint(1, 5)))
                history.states.append(State(started, step(final, fin_text)))
            else:
                history.states.append(State(started, step(StepStatus.WAITING, None)))
                history.states.append(
                    State(
                        started + sim.minutes(1, 15),
                        step(StepStatus.IN_PROGRESS, None),
                    )
                )
                history.states.append(State(finished, step(final, local_iso(finished))))
            histories.append(history)
            cursor = finished
            if returned:
                break
    return emit(sim, histories)
