"""What each sector dataset's latest state contributes to the IOC dashboards' KPIs.

Pure functions: a state in, a :class:`Contribution` out. The entity script stores
the contribution beside the state and, when a newer version arrives, removes the
old one and adds the new one atomically, so the sums are a function of the set of
latest states, whatever the delivery order or the number of replays.

Counters (field -> amount, summed into the shard's ``sum`` hash):

=========================== ========================================== ===========================
dataset                     counter field                              counted when
=========================== ========================================== ===========================
education.schools           ``school|SCHOOL|COMMUNE`` (the join)       always
                            ``schools|COMMUNE``                        status ACTIVE
education.class_stats       ``classes|YEAR|SCHOOL``,                   amounts = class_count,
                            ``students|YEAR|SCHOOL``                   student_count
education.teachers          ``teachers|SCHOOL``                        status ACTIVE or ON_LEAVE
health.facilities           ``facility|FACILITY|COMMUNE`` (the join)   always
health.encounters           ``encounters|FACILITY``                    always
health.disease_cases        ``cases|COMMUNE``                          always
feedback.reports            ``open|UNIT``                              status RECEIVED, ASSIGNED,
                                                                       IN_PROGRESS
environment.station_readings ``readings|STATION``                      always
publicservice.dossiers      ``received``, ``completed``,               ``dossier_kpis`` rules
                            ``completed_on_time``, ``completed_late``
                            (the unit's ``kpi`` hash)
=========================== ========================================== ===========================

Sorted-set members (named sets of the entity's shard):

- feedback.reports: ``due`` gets ``UNIT|REPORT`` scored by the response deadline
  (ms) while the report is open; overdue = open with deadline < now, counted when
  read, since a report becomes overdue while no one writes;
- environment.station_readings: ``aqi:STATION`` gets ``READING_MS|AQI`` scored by
  the reading time; the latest AQI of a station is the highest score;
- publicservice.dossiers: ``open`` gets the dossier id scored by its due time (ms)
  while the dossier is open (overdue is counted when read, as for feedback).

Tallies (counters of another named hash of the entity's slot):

- publicservice.dossiers: ``kpi:daily`` gets 1 on ``YYYY-MM-DD|measure`` for each
  local day a figure happened (:func:`sinks.ioc.dossier_kpis.daily_contribution`).

Classes, students and teachers are counted per school; the commune comes from
the school's own latest state (the ``school|…`` join counter) when read, so a
class record arriving before its school, or a school moving commune, needs no
rewrite. Encounters join facilities the same way. UNIT for feedback is
``handling_unit_code``, ``unassigned`` when empty; an unknown commune is
``unknown``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from schemas.catalog import DOSSIERS
from sinks.ioc import dossier_kpis
from sinks.ioc.codec import epoch_ms, field_text

__all__ = [
    "CONTRIBUTORS",
    "DAILY_KPIS",
    "FEEDBACK_OPEN_STATUSES",
    "NOTHING",
    "OPEN_DOSSIERS",
    "TEACHER_ON_STAFF",
    "Contribution",
    "Contributor",
    "Member",
    "Tally",
]

FEEDBACK_OPEN_STATUSES = frozenset({"RECEIVED", "ASSIGNED", "IN_PROGRESS"})
TEACHER_ON_STAFF = frozenset({"ACTIVE", "ON_LEAVE"})
UNKNOWN = "unknown"
UNASSIGNED = "unassigned"
# a unit's named keys beside its ``kpi`` sums (see :mod:`sinks.ioc.dossiers`)
OPEN_DOSSIERS = "open"
DAILY_KPIS = "kpi:daily"


@dataclass(frozen=True, slots=True)
class Member:
    """A member of one of the shard's named sorted sets."""

    zset: str
    member: str
    score: int


@dataclass(frozen=True, slots=True)
class Tally:
    """An amount added to a field of one of the slot's named hashes (not ``sum``)."""

    hash: str
    field: str
    amount: int


@dataclass(frozen=True, slots=True)
class Contribution:
    counters: Mapping[str, int] = field(default_factory=dict)
    members: tuple[Member, ...] = ()
    tallies: tuple[Tally, ...] = ()


NOTHING = Contribution()


def _code(value: Any, default: str = UNKNOWN) -> str:
    return default if value is None or value == "" else str(value)


def school(s: Mapping[str, Any]) -> Contribution:
    commune = _code(s.get("commune_code"))
    counters = {f"school|{s['school_id']}|{commune}": 1}
    if s["status"] == "ACTIVE":
        counters[f"schools|{commune}"] = 1
    return Contribution(counters)


def class_stat(c: Mapping[str, Any]) -> Contribution:
    year, school_id = c["school_year"], c["school_id"]
    counters = {
        f"classes|{year}|{school_id}": int(c["class_count"]),
        f"students|{year}|{school_id}": int(c["student_count"]),
    }
    return Contribution({k: v for k, v in counters.items() if v})


def teacher(t: Mapping[str, Any]) -> Contribution:
    if t["status"] not in TEACHER_ON_STAFF:
        return NOTHING
    return Contribution({f"teachers|{t['school_id']}": 1})


def facility(f: Mapping[str, Any]) -> Contribution:
    return Contribution({f"facility|{f['facility_code']}|{_code(f.get('commune_code'))}": 1})


def encounter(e: Mapping[str, Any]) -> Contribution:
    return Contribution({f"encounters|{e['facility_code']}": 1})


def disease_case(c: Mapping[str, Any]) -> Contribution:
    return Contribution({f"cases|{_code(c.get('commune_code'))}": 1})


def feedback_report(r: Mapping[str, Any]) -> Contribution:
    if r["status"] not in FEEDBACK_OPEN_STATUSES:
        return NOTHING
    unit = _code(r.get("handling_unit_code"), UNASSIGNED)
    deadline: datetime | None = r.get("response_deadline")
    members: tuple[Member, ...] = ()
    if deadline is not None:
        members = (Member("due", f"{unit}|{r['report_id']}", epoch_ms(deadline)),)
    return Contribution({f"open|{unit}": 1}, members)


def station_reading(r: Mapping[str, Any]) -> Contribution:
    station = r["station_id"]
    members: tuple[Member, ...] = ()
    if r.get("aqi") is not None:
        at = epoch_ms(r["reading_time"])
        members = (Member(f"aqi:{station}", f"{at}|{field_text(r['aqi'])}", at),)
    return Contribution({f"readings|{station}": 1}, members)


def dossier(d: Mapping[str, Any]) -> Contribution:
    c = dossier_kpis.contribution(d)
    counters = {
        "received": c.received,
        "completed": c.completed,
        "completed_on_time": c.completed_on_time,
        "completed_late": c.completed_late,
    }
    members: tuple[Member, ...] = ()
    if c.open_due_at is not None:
        members = (Member(OPEN_DOSSIERS, str(d["dossier_id"]), epoch_ms(c.open_due_at)),)
    days = tuple(Tally(DAILY_KPIS, day, 1) for day in dossier_kpis.daily_contribution(d))
    return Contribution({k: n for k, n in counters.items() if n}, members, days)


def _zsets_feedback(shard_input: str) -> tuple[str, ...]:
    return ("due",)


def _zsets_station(shard_input: str) -> tuple[str, ...]:
    return (f"aqi:{shard_input}",)


@dataclass(frozen=True, slots=True)
class Contributor:
    """How a dataset contributes: the function, and the sorted sets an entity may
    touch, named from its shard input alone, so the old contribution's sets are
    known (declared as script keys) before the script reads it."""

    contribute: Callable[[Mapping[str, Any]], Contribution]
    zsets: Callable[[str], tuple[str, ...]] = lambda _shard_input: ()
    hashes: Callable[[str], tuple[str, ...]] = lambda _shard_input: ()


CONTRIBUTORS: Mapping[str, Contributor] = {
    "education.schools": Contributor(school),
    "education.class_stats": Contributor(class_stat),
    "education.teachers": Contributor(teacher),
    "health.facilities": Contributor(facility),
    "health.encounters": Contributor(encounter),
    "health.disease_cases": Contributor(disease_case),
    "feedback.reports": Contributor(feedback_report, _zsets_feedback),
    "environment.station_readings": Contributor(station_reading, _zsets_station),
    DOSSIERS.id: Contributor(dossier, lambda _unit: (OPEN_DOSSIERS,), lambda _unit: (DAILY_KPIS,)),
}
