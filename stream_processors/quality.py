"""Data quality per dataset and owner unit: accurate, complete, clean, live.

Three shares in [0, 1] (None when nothing was seen to score) and a freshness:

- **completeness**: fields present / fields checked over the valid events' records.
  *Required* fields are those the raw Avro record declares non-nullable; *expected*
  fields are nullable ones the province expects filled, listed per dataset in
  ``quality_expectations.toml`` (default: every nullable field), optionally depending
  on a field's value (a status). A blank string, or an empty array or map, is absent.
- **validity**: valid / (received − duplicates − conflicts − stale), the share of the
  events judged on their content that passed standardization (the same whether the
  batch loop counts conflicts inside ``dead_lettered`` or apart from it);
- **uniqueness**: 1 − (duplicates + conflicts) / received;
- **freshness**: seconds since the newest delivery, and ``live`` against the catalog's
  update obligation (``schemas.domain.freshness``).

``overall`` is a weighted mean of the known ones (``OVERALL_WEIGHTS``; live counts 1
when live, else 0).

The processor's hot loop calls ``field_presence`` per event and sums the counts into a
``UnitStats`` per batch; a Faust agent folds each batch into a small JSON-able state
(``apply_stats``: hour buckets over a rolling window) and publishes ``scores`` to
``quality.v1`` (``quality_record``) and as metrics (``publish_quality_metrics``).

The window is the ``window_hours`` hours up to the newest delivery, not up to now: a
silent dataset keeps its last scores and shows as not live, rather than losing them.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

from bus.errors import ConfigError
from bus.metrics import Metrics
from schemas.catalog import (
    DATASETS,
    QUALITY_SCHEMA,
    QUALITY_TOPIC,
    Dataset,
    read_schema,
)
from schemas.domain.freshness import is_live
from schemas.headers import QUALITY_SOURCE, cloudevent, derived_id
from stream_processors.batch_stats import UnitStats

__all__ = [
    "DIMENSIONS",
    "EXPECTATIONS_FILE",
    "OVERALL_WEIGHTS",
    "QUALITY_SCHEMA",
    "QUALITY_TOPIC",
    "Expectation",
    "FieldSpec",
    "QualityScores",
    "apply_stats",
    "check_expectations",
    "count_dropped",
    "field_presence",
    "field_spec",
    "load_expectations",
    "new_state",
    "publish_quality_metrics",
    "quality_headers",
    "quality_record",
    "scores",
]

EXPECTATIONS_FILE: Traversable = resources.files("stream_processors").joinpath(
    "quality_expectations.toml"
)
DIMENSIONS = ("completeness", "validity", "uniqueness")
# Validity and liveness weigh most: an invalid event never reaches anyone and a
# silent source leaves every dashboard stale; a missing optional field or a replayed
# duplicate (dropped anyway) hurts less.
OVERALL_WEIGHTS: Mapping[str, float] = {
    "validity": 0.35,
    "completeness": 0.25,
    "uniqueness": 0.10,
    "live": 0.30,
}
_HOUR_MS = 3_600_000
# str.strip() with these characters: every Unicode whitespace character plus the
# zero-width ones portals paste in (docs/domain.md), so "\u00a0" or "\u200b" alone is blank.
_ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
_BLANK = "".join(chr(c) for c in range(0x3001) if chr(c).isspace()) + _ZERO_WIDTH
_BLANK_START = frozenset(_BLANK)
# The order of the counts in a state's hour bucket.
_COUNTS = (
    "received",
    "valid",
    "dead_lettered",
    "duplicates",
    "conflicts",
    "stale",
    "required_present",
    "required_checked",
    "expected_present",
    "expected_checked",
)


# ---- what to check per dataset ---------------------------------------------------


@dataclass(frozen=True)
class Expectation:
    """A dataset's entry in ``quality_expectations.toml``."""

    expected: tuple[str, ...]
    by: str | None = None
    when: Mapping[str, tuple[str, ...]] | None = None


def _read_expectations(source: Path | Traversable) -> dict[str, Expectation]:
    name = str(source)
    try:
        document = tomllib.loads(source.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{name}: cannot read the quality expectations: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{name}: not valid TOML: {exc}") from exc

    def names(value: object, where: str) -> tuple[str, ...]:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: {where}: must be a list of field names")
        return tuple(value)

    found: dict[str, Expectation] = {}
    for dataset_id, table in document.items():
        if not isinstance(table, dict):
            raise ConfigError(f"{name}: {dataset_id}: must be a table")
        unknown = set(table) - {"expected", "by", "when"}
        if unknown:
            raise ConfigError(f"{name}: {dataset_id}: unknown keys {sorted(unknown)}")
        if "expected" not in table:
            raise ConfigError(f"{name}: {dataset_id}: 'expected' is required ([] for none)")
        by = table.get("by")
        when = table.get("when")
        if by is not None and not isinstance(by, str):
            raise ConfigError(f"{name}: {dataset_id}: 'by' must be a field name")
        if (by is None) != (when is None):
            raise ConfigError(f"{name}: {dataset_id}: 'by' and 'when' go together")
        cases: dict[str, tuple[str, ...]] | None = None
        if when is not None:
            if not isinstance(when, dict):
                raise ConfigError(f"{name}: {dataset_id}: 'when' must be a table")
            cases = {
                str(value): names(fields, f"{dataset_id}.when.{value}")
                for value, fields in when.items()
            }
        found[dataset_id] = Expectation(
            expected=names(table["expected"], f"{dataset_id}.expected"), by=by, when=cases
        )
    return found


@cache
def _default_expectations() -> dict[str, Expectation]:
    return _read_expectations(EXPECTATIONS_FILE)


def load_expectations(path: Path | Traversable | None = None) -> dict[str, Expectation]:
    """The expectations of a file by dataset id (default: the packaged one, read once).

    Checks the file's shape only; ``check_expectations`` checks it against the schemas.
    """
    if path is None:
        return dict(_default_expectations())
    return _read_expectations(path)


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """The fields ``field_presence`` checks for one dataset, precomputed."""

    required: tuple[str, ...]
    expected: tuple[str, ...]  # checked when `by` is unset or its value is not in `when`
    by: str | None = None
    when: Mapping[str, tuple[str, ...]] | None = None  # by's value -> the expected fields


def _record_fields(schema_text: str) -> list[dict[str, Any]]:
    """The fields of the record inside the envelope (the non-null branch of ``before``)."""
    document = json.loads(schema_text)
    for field in document["fields"]:
        if field["name"] == "before":
            branches = [b for b in field["type"] if b != "null"]
            record: dict[str, Any] = branches[0]
            return list(record["fields"])
    raise ConfigError(f"schema {document.get('name')!r} is not an envelope: no 'before'")


def _nullable(avro_type: object) -> bool:
    return avro_type == "null" or (isinstance(avro_type, list) and "null" in avro_type)


def field_spec(
    dataset: Dataset,
    expectations: Mapping[str, Expectation] | None = None,
    *,
    schema_root: Path | Traversable | None = None,
) -> FieldSpec:
    """Required and expected fields of ``dataset``'s raw record (ConfigError if the
    expectations name a field the record lacks or does not declare nullable)."""
    fields = _record_fields(read_schema(dataset.raw_schema, schema_root))
    required = tuple(f["name"] for f in fields if not _nullable(f["type"]))
    nullable = tuple(f["name"] for f in fields if _nullable(f["type"]))
    table = _default_expectations() if expectations is None else expectations
    entry = table.get(dataset.id)
    if entry is None:
        return FieldSpec(required=required, expected=nullable)

    def checked(names: tuple[str, ...], where: str) -> tuple[str, ...]:
        wrong = [n for n in names if n not in nullable]
        if wrong:
            raise ConfigError(
                f"quality expectations: {dataset.id}.{where}: {', '.join(wrong)} "
                f"not nullable field(s) of {dataset.raw_schema}"
            )
        return names

    expected = checked(entry.expected, "expected")
    if entry.by is None or entry.when is None:
        return FieldSpec(required=required, expected=expected)
    if entry.by not in {f["name"] for f in fields}:
        raise ConfigError(
            f"quality expectations: {dataset.id}.by: {entry.by} is not a field of "
            f"{dataset.raw_schema}"
        )
    # The whole tuple per value, so the hot loop makes no new tuple per record.
    when = {
        value: expected + tuple(n for n in checked(extra, f"when.{value}") if n not in expected)
        for value, extra in entry.when.items()
    }
    return FieldSpec(required=required, expected=expected, by=entry.by, when=when)


def check_expectations(
    path: Path | Traversable | None = None, datasets: Mapping[str, Dataset] | None = None
) -> list[str]:
    """Every problem of an expectations file against a catalog (empty: all good)."""
    try:
        table = load_expectations(path)
    except ConfigError as exc:
        return [str(exc)]
    catalog = DATASETS if datasets is None else datasets
    problems = [
        f"quality expectations: {dataset_id}: not a catalog dataset"
        for dataset_id in table
        if dataset_id not in catalog
    ]
    for dataset in catalog.values():
        try:
            field_spec(dataset, table)
        except (ConfigError, OSError, ValueError, KeyError) as exc:
            problems.append(str(exc))
    return problems


# Built on first use per (dataset id, raw schema): keyed on two strings rather than the
# Dataset, whose dataclass hash would walk every field on every event.
_SPECS: dict[tuple[str, str], FieldSpec] = {}


def field_presence(dataset: Dataset, record: Mapping[str, Any]) -> tuple[int, int, int, int]:
    """(required present, required checked, expected present, expected checked) of one
    record image (the ``after`` or ``before`` dict as the Avro decoder returns it)."""
    key = (dataset.id, dataset.raw_schema)
    spec = _SPECS.get(key)
    if spec is None:
        spec = _SPECS[key] = field_spec(dataset)
    get = record.get
    required_present = 0
    for name in spec.required:
        value = get(name)
        if value is None:
            continue
        if isinstance(value, str):
            # Most values start with a letter: one set lookup, no strip.
            if not value or (value[0] in _BLANK_START and not value.strip(_BLANK)):
                continue
        elif isinstance(value, (list, dict)) and not value:
            continue
        required_present += 1
    expected = spec.expected
    if spec.when is not None and spec.by is not None:
        by_value = get(spec.by)
        if isinstance(by_value, str):
            expected = spec.when.get(by_value, expected)
    expected_present = 0
    for name in expected:
        value = get(name)
        if value is None:
            continue
        if isinstance(value, str):
            # Most values start with a letter: one set lookup, no strip.
            if not value or (value[0] in _BLANK_START and not value.strip(_BLANK)):
                continue
        elif isinstance(value, (list, dict)) and not value:
            continue
        expected_present += 1
    return required_present, len(spec.required), expected_present, len(expected)


# ---- rolling state: hour buckets of counts -----------------------------------------


def new_state(window_hours: int = 24) -> dict[str, Any]:
    return {"window_hours": window_hours, "hours": {}, "last_event_ms": 0, "last_seen_ms": 0}


def apply_stats(
    state: dict[str, Any] | None, stats: UnitStats, window_hours: int = 24
) -> dict[str, Any]:
    """``state`` with one batch's ``stats`` added (a new dict; ``state`` is not changed).

    Counts go to the hour of ``stats.last_seen_ms`` (when the processor took the
    batch); hours older than ``window_hours`` before the newest delivery are dropped,
    so the state holds at most ``window_hours`` buckets. Folding the same batches in
    any order gives the same state. A batch with counts but no ``last_seen_ms`` goes
    to the newest hour already held, or nowhere when the state is empty.
    """
    if window_hours < 1:
        raise ValueError("window_hours must be at least 1")
    base = state if state is not None else new_state(window_hours)
    last_seen = max(int(base["last_seen_ms"]), stats.last_seen_ms)
    last_event = max(int(base["last_event_ms"]), stats.last_event_ms)
    hours: dict[str, list[int]] = {k: list(v) for k, v in base["hours"].items()}
    counts = [getattr(stats, name) for name in _COUNTS]
    at = stats.last_seen_ms or int(base["last_seen_ms"])
    if at > 0 and any(counts):
        bucket = hours.setdefault(str(at // _HOUR_MS), [0] * len(_COUNTS))
        for i, n in enumerate(counts):
            bucket[i] += n
    oldest = last_seen // _HOUR_MS - window_hours + 1
    return {
        "window_hours": window_hours,
        "hours": {k: v for k, v in hours.items() if int(k) >= oldest},
        "last_event_ms": last_event,
        "last_seen_ms": last_seen,
    }


# ---- scores --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class QualityScores:
    """The quality of one dataset from one unit over the window, at ``now_ms``."""

    completeness: float | None
    completeness_required: float | None
    completeness_expected: float | None
    validity: float | None
    uniqueness: float | None
    overall: float | None
    freshness_seconds: float | None  # None: nothing was ever received
    live: bool
    obligation: str
    last_event_ms: int  # 0: none
    last_seen_ms: int  # 0: none
    window_hours: int
    window_start_ms: int
    window_end_ms: int
    now_ms: int
    received: int = 0
    valid: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    conflicts: int = 0
    stale: int = 0
    required_present: int = 0
    required_checked: int = 0
    expected_present: int = 0
    expected_checked: int = 0

    def dimension(self, name: str) -> float | None:
        """One of ``DIMENSIONS`` by name."""
        value: float | None = getattr(self, name)
        return value


def _share(part: int, whole: int) -> float | None:
    if whole <= 0:
        return None
    return min(1.0, max(0.0, part / whole))


def _overall(dims: Mapping[str, float | None], live: bool) -> float | None:
    known = {k: v for k, v in dims.items() if v is not None}
    if not known:
        return None
    known["live"] = 1.0 if live else 0.0
    weight = sum(OVERALL_WEIGHTS[k] for k in known)
    return sum(OVERALL_WEIGHTS[k] * v for k, v in known.items()) / weight


def scores(dataset: Dataset, state: dict[str, Any] | None, now_ms: int) -> QualityScores:
    """The scores of a state (``apply_stats``) at ``now_ms``; an empty or None state
    gives None shares and not live."""
    base = state if state is not None else new_state()
    window_hours = int(base["window_hours"])
    last_seen = int(base["last_seen_ms"])
    totals = dict.fromkeys(_COUNTS, 0)
    for bucket in base["hours"].values():
        for name, n in zip(_COUNTS, bucket, strict=True):
            totals[name] += int(n)
    t = totals
    judged = t["received"] - t["duplicates"] - t["conflicts"] - t["stale"]
    dims: dict[str, float | None] = {
        "completeness": _share(
            t["required_present"] + t["expected_present"],
            t["required_checked"] + t["expected_checked"],
        ),
        "validity": _share(t["valid"], judged),
        "uniqueness": _share(t["received"] - t["duplicates"] - t["conflicts"], t["received"]),
    }
    live = is_live(dataset.update, last_seen, now_ms)
    end = last_seen if last_seen > 0 else now_ms
    return QualityScores(
        completeness=dims["completeness"],
        completeness_required=_share(t["required_present"], t["required_checked"]),
        completeness_expected=_share(t["expected_present"], t["expected_checked"]),
        validity=dims["validity"],
        uniqueness=dims["uniqueness"],
        overall=_overall(dims, live),
        freshness_seconds=max(0, now_ms - last_seen) / 1000 if last_seen > 0 else None,
        live=live,
        obligation=dataset.update.describe(),
        last_event_ms=int(base["last_event_ms"]),
        last_seen_ms=last_seen,
        window_hours=window_hours,
        window_start_ms=(end // _HOUR_MS - window_hours + 1) * _HOUR_MS,
        window_end_ms=end,
        now_ms=now_ms,
        **totals,
    )


# ---- outputs ---------------------------------------------------------------------------


def _ts(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 6)


def quality_record(
    dataset: Dataset, unit: str, scores: QualityScores, now_ms: int
) -> dict[str, Any]:
    """The ``quality.v1`` record (schema ``QUALITY_SCHEMA``); key it ``stats_key``."""
    return {
        "dataset": dataset.id,
        "unit_code": unit,
        "completeness": _rounded(scores.completeness),
        "completeness_required": _rounded(scores.completeness_required),
        "completeness_expected": _rounded(scores.completeness_expected),
        "validity": _rounded(scores.validity),
        "uniqueness": _rounded(scores.uniqueness),
        "overall": _rounded(scores.overall),
        "live": scores.live,
        "freshness_seconds": scores.freshness_seconds,
        "obligation": scores.obligation,
        "last_event_ts": _ts(scores.last_event_ms) if scores.last_event_ms > 0 else None,
        "last_seen_ts": _ts(scores.last_seen_ms) if scores.last_seen_ms > 0 else None,
        "window_hours": scores.window_hours,
        "window_start": _ts(scores.window_start_ms),
        "window_end": _ts(scores.window_end_ms),
        **{name: getattr(scores, name) for name in _COUNTS},
        "ts_ms": _ts(now_ms),
    }


def quality_headers(
    dataset_id: str, unit: str, now_ms: int, schema: str
) -> list[tuple[str, bytes]]:
    """The CloudEvents headers of a ``quality.v1`` record: one id per dataset, unit and
    scoring time; subject ``<dataset>|<unit>`` (the record's key)."""
    subject = f"{dataset_id}|{unit}"
    return cloudevent(
        id=derived_id(QUALITY_SOURCE, subject, str(now_ms)),
        source=QUALITY_SOURCE,
        type="vn.gov.databus.quality.scores",
        time_ms=now_ms,
        subject=subject,
        schema=schema,
    )


def publish_quality_metrics(
    metrics: Metrics, dataset_id: str, unit: str, scores: QualityScores
) -> None:
    """Set the quality gauges of one dataset and unit; an unknown share (None) removes
    its series rather than reporting a made-up 0."""
    for dimension in DIMENSIONS:
        value = scores.dimension(dimension)
        if value is None:
            metrics.quality_score.remove(dataset_id, unit, dimension)
        else:
            metrics.quality_score.labels(dataset_id, unit, dimension).set(value)
    if scores.freshness_seconds is None:
        metrics.dataset_freshness.remove(dataset_id, unit)
    else:
        metrics.dataset_freshness.labels(dataset_id, unit).set(scores.freshness_seconds)
    metrics.dataset_live.labels(dataset_id, unit).set(1 if scores.live else 0)


def count_dropped(metrics: Metrics, stats: UnitStats) -> None:
    """Count one batch's dropped duplicates and stale events (call once per batch, not
    per state update, or a replay of the stats topic counts them twice)."""
    if stats.duplicates:
        metrics.events_dropped.labels(stats.dataset, "duplicate").inc(stats.duplicates)
    if stats.stale:
        metrics.events_dropped.labels(stats.dataset, "stale").inc(stats.stale)
