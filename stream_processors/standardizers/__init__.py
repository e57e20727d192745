"""Standardizers for every dataset of the catalog: raw event dict -> std event or Rejected.

``STANDARDIZERS[dataset_id](raw, ref, now)`` takes the envelope exactly as
``schemas.codec.AvroDeserializer`` returns it and returns ``Standardized`` (an event for
the dataset's ``.std.v1`` schema, plus its quality flags) or ``Rejected`` (a reason code
for the DLQ, bilingual messages without personal data). It never raises on bad data.

``now`` bounds "far future" times; ``None`` uses the event's own ``ts_ms`` (its emit
time), so replays are deterministic.

Each standardizer is bound to its catalog entry (``build_standardizer``): the dataset's
``earliest`` plausible day bounds every time in the event, and its ``key`` is what
``before`` and ``after`` of one event must share.

Every dataset is a declaration (``RULES``) run by one engine (``engine.run``) against the
reference data, the code lists of ``schemas/data/codes_*.csv`` and the province area.
What one dataset's contract needs beyond the engine's rules is declared in its module,
as options of the rules or as a rule subclass overriding a documented hook
(``read``, ``too_far``); see ``standardizers.public_service`` for the dossiers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from functools import partial
from types import MappingProxyType
from typing import Any

from schemas.catalog import DATASETS, Dataset
from schemas.domain.reference import ReferenceData
from stream_processors.standardizers.compiled import compile_rules
from stream_processors.standardizers.config import context_for
from stream_processors.standardizers.documents import OFFICIAL_DOCUMENTS, TASKS
from stream_processors.standardizers.education import (
    CLASS_STATS,
    EXAM_RESULTS,
    SCHOOLS,
    TEACHERS,
)
from stream_processors.standardizers.engine import (
    QUALITY_FLAGS,
    REASONS,
    DatasetRules,
    ImageFunction,
    run,
    run_with,
)
from stream_processors.standardizers.environment import STATION_READINGS
from stream_processors.standardizers.feedback import REPORTS
from stream_processors.standardizers.health import DISEASE_CASES, ENCOUNTERS, FACILITIES
from stream_processors.standardizers.land import CONSTRUCTION_PERMITS, PARCELS
from stream_processors.standardizers.public_service import DOSSIER_STEPS, DOSSIERS
from stream_processors.standardizers.result import Rejected, Standardized
from stream_processors.standardizers.transport import BUS_POSITIONS, VEHICLE_REGISTRATIONS

__all__ = [
    "QUALITY_FLAGS",
    "REASONS",
    "RULES",
    "STANDARDIZERS",
    "Rejected",
    "Standardized",
    "Standardizer",
    "build_standardizer",
    "standardize",
]

Standardizer = Callable[
    [Mapping[str, Any], ReferenceData, datetime | None], Standardized | Rejected
]

RULES: Mapping[str, DatasetRules] = MappingProxyType(
    {
        rules.dataset_id: rules
        for rules in (
            DOSSIERS,
            DOSSIER_STEPS,
            SCHOOLS,
            CLASS_STATS,
            TEACHERS,
            EXAM_RESULTS,
            FACILITIES,
            ENCOUNTERS,
            DISEASE_CASES,
            OFFICIAL_DOCUMENTS,
            TASKS,
            REPORTS,
            STATION_READINGS,
            VEHICLE_REGISTRATIONS,
            BUS_POSITIONS,
            PARCELS,
            CONSTRUCTION_PERMITS,
        )
    }
)


def _rules_standardizer(
    rules: DatasetRules,
    image: ImageFunction,
    earliest: date,
    key_fields: tuple[str, ...],
    raw: Mapping[str, Any],
    ref: ReferenceData,
    now: datetime | None,
) -> Standardized | Rejected:
    return run_with(rules, image, raw, context_for(ref), now, earliest, key_fields)


def _interpreted_standardizer(
    rules: DatasetRules,
    earliest: date,
    key_fields: tuple[str, ...],
    raw: Mapping[str, Any],
    ref: ReferenceData,
    now: datetime | None,
) -> Standardized | Rejected:
    return run(rules, raw, context_for(ref), now, earliest=earliest, key_fields=key_fields)


def build_standardizer(dataset: Dataset, *, interpreted: bool = False) -> Standardizer | None:
    """The standardizer of ``dataset.id`` bound to this catalog entry's ``earliest``
    and key; None for a dataset without one. Its declaration runs compiled
    (``standardizers.compiled``); ``interpreted``: through the reference engine instead."""
    rules = RULES.get(dataset.id)
    if rules is None:
        return None
    if interpreted:
        return partial(_interpreted_standardizer, rules, dataset.earliest, dataset.key_fields)
    image = _COMPILED.get(dataset.id) or compile_rules(rules).image
    return partial(_rules_standardizer, rules, image, dataset.earliest, dataset.key_fields)


# Each packaged declaration is compiled once per process.
_COMPILED: Mapping[str, ImageFunction] = MappingProxyType(
    {dataset_id: compile_rules(rules).image for dataset_id, rules in RULES.items()}
)


def _packaged() -> dict[str, Standardizer]:
    found: dict[str, Standardizer] = {}
    for dataset_id in RULES:
        built = build_standardizer(DATASETS[dataset_id])
        assert built is not None
        found[dataset_id] = built
    return found


STANDARDIZERS: Mapping[str, Standardizer] = MappingProxyType(_packaged())


def standardize(
    dataset_id: str, raw: Mapping[str, Any], ref: ReferenceData, now: datetime | None = None
) -> Standardized | Rejected:
    """``STANDARDIZERS[dataset_id](raw, ref, now)``; KeyError for an unknown dataset."""
    return STANDARDIZERS[dataset_id](raw, ref, now)
