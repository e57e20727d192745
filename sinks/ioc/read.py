"""Reading the sector KPIs the IOC dashboards show (see :mod:`sinks.ioc.kpis`).

Each reader adds a dataset's ``SHARDS`` ``sum`` hashes (one pipeline round trip)
and joins what the definitions join (classes, students, teachers to the school's
commune; encounters to the facility's commune). Overdue feedback is counted
against ``now`` at reading time.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

import redis
import redis.exceptions as rex

from schemas.catalog import DATASETS
from sinks.ioc.codec import ceil_epoch_ms, sink_error, text
from sinks.ioc.entities import SHARDS, shard_of, sum_key, zset_key

__all__ = [
    "CommuneEducation",
    "CommuneHealth",
    "FeedbackKpis",
    "StationAqi",
    "read_commune_education",
    "read_commune_health",
    "read_feedback_kpis",
    "read_station_aqi",
    "read_sums",
]


@dataclass(frozen=True, slots=True)
class CommuneEducation:
    commune_code: str
    schools: int
    classes: int
    students: int
    teachers: int


@dataclass(frozen=True, slots=True)
class CommuneHealth:
    commune_code: str
    encounters: int
    disease_cases: int


@dataclass(frozen=True, slots=True)
class StationAqi:
    station_id: str
    reading_time_ms: int
    aqi: int


@dataclass(frozen=True, slots=True)
class FeedbackKpis:
    unit_code: str
    open: int
    overdue: int


def read_sums(redis_client: redis.Redis, dataset_ids: Iterable[str]) -> dict[str, Counter[str]]:
    """Every counter of the datasets, added over their shards."""
    ids = list(dataset_ids)
    try:
        pipe = redis_client.pipeline(transaction=False)
        for dataset_id in ids:
            for shard in range(SHARDS):
                pipe.hgetall(sum_key(dataset_id, shard))
        rows: list[dict[bytes | str, bytes | str]] = pipe.execute()
    except rex.RedisError as exc:
        raise sink_error(exc, "read sums") from exc
    out: dict[str, Counter[str]] = {d: Counter() for d in ids}
    for i, row in enumerate(rows):
        acc = out[ids[i // SHARDS]]
        for k, v in row.items():
            acc[text(k)] += int(v)
    return out


def _join(sums: Counter[str], prefix: str) -> dict[str, str]:
    """``prefix|ID|COMMUNE`` counters -> {ID: COMMUNE}."""
    out = {}
    for name, n in sums.items():
        if n and name.startswith(prefix + "|"):
            _, ident, commune = name.split("|", 2)
            out[ident] = commune
    return out


def _by(sums: Counter[str], prefix: str) -> Iterable[tuple[list[str], int]]:
    for name, n in sums.items():
        if name.startswith(prefix + "|"):
            yield name.split("|")[1:], n


def read_commune_education(
    redis_client: redis.Redis, school_year: str | None = None
) -> dict[str, CommuneEducation]:
    """Schools, classes, students and teachers per commune.

    Classes and students are those of ``school_year`` (default: the latest year
    any class record has); records of schools not (yet) known count under
    ``unknown``.
    """
    sums = read_sums(
        redis_client, ("education.schools", "education.class_stats", "education.teachers")
    )
    schools, classes, teachers = (
        sums["education.schools"],
        sums["education.class_stats"],
        sums["education.teachers"],
    )
    commune_of = _join(schools, "school")
    if school_year is None:
        years = {parts[0] for parts, _ in _by(classes, "classes")}
        school_year = max(years) if years else ""
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for (commune,), n in _by(schools, "schools"):
        acc[commune][0] += n
    for measure, i in (("classes", 1), ("students", 2)):
        for (year, school_id), n in _by(classes, measure):
            if year == school_year:
                acc[commune_of.get(school_id, "unknown")][i] += n
    for (school_id,), n in _by(teachers, "teachers"):
        acc[commune_of.get(school_id, "unknown")][3] += n
    return {c: CommuneEducation(c, *a) for c, a in sorted(acc.items()) if any(a)}


def read_commune_health(redis_client: redis.Redis) -> dict[str, CommuneHealth]:
    """Encounters (by their facility's commune) and disease cases per commune."""
    sums = read_sums(
        redis_client, ("health.facilities", "health.encounters", "health.disease_cases")
    )
    commune_of = _join(sums["health.facilities"], "facility")
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (facility,), n in _by(sums["health.encounters"], "encounters"):
        acc[commune_of.get(facility, "unknown")][0] += n
    for (commune,), n in _by(sums["health.disease_cases"], "cases"):
        acc[commune][1] += n
    return {c: CommuneHealth(c, *a) for c, a in sorted(acc.items()) if any(a)}


def read_station_aqi(redis_client: redis.Redis) -> dict[str, StationAqi]:
    """The latest AQI of every station that reported one."""
    dataset_id = "environment.station_readings"
    sums = read_sums(redis_client, (dataset_id,))[dataset_id]
    stations = sorted({parts[0] for parts, n in _by(sums, "readings") if n})
    try:
        pipe = redis_client.pipeline(transaction=False)
        for station in stations:
            shard = shard_of(dataset_id, station)
            pipe.zrevrange(zset_key(dataset_id, shard, f"aqi:{station}"), 0, 0)
        rows: list[list[bytes | str]] = pipe.execute()
    except rex.RedisError as exc:
        raise sink_error(exc, "read station aqi") from exc
    out = {}
    for station, row in zip(stations, rows, strict=True):
        if row:
            at, aqi = text(row[0]).split("|")
            out[station] = StationAqi(station, int(at), int(float(aqi)))
    return out


def read_feedback_kpis(redis_client: redis.Redis, now: datetime) -> dict[str, FeedbackKpis]:
    """Open and overdue (open, response deadline before ``now``) reports per unit."""
    dataset_id = "feedback.reports"
    assert dataset_id in DATASETS
    sums = read_sums(redis_client, (dataset_id,))[dataset_id]
    bound = f"({ceil_epoch_ms(now)}"
    try:
        pipe = redis_client.pipeline(transaction=False)
        for shard in range(SHARDS):
            pipe.zrangebyscore(zset_key(dataset_id, shard, "due"), "-inf", bound)
        rows: list[list[bytes | str]] = pipe.execute()
    except rex.RedisError as exc:
        raise sink_error(exc, "read feedback kpis") from exc
    acc: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for (unit,), n in _by(sums, "open"):
        acc[unit][0] += n
    for row in rows:
        for member in row:
            acc[text(member).rsplit("|", 1)[0]][1] += 1
    return {u: FeedbackKpis(u, *a) for u, a in sorted(acc.items()) if any(a)}
