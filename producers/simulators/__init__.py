"""Simulators for every dataset of the catalog.

Each simulator is a pure function ``(SimSpec, ReferenceData) -> list[SimRecord]``,
deterministic for ``SimSpec.seed``: realistic Vietnamese names and places, commune codes
of the crosswalk (a few pre-reform ones), units of ``receiving_units.csv``, CCCDs
consistent with birth date and sex, plausible measurements and lifecycles — and a share
``SimSpec.invalid_share`` of records that the pydantic model accepts but the domain
does not, each marked with ``expect_reason`` (the defect's short code) so tests and
benchmarks can check the processors dead-letter exactly those.

Records come in time order; ``version`` increases per key from 1 (op ``c``, then ``u``);
``at`` is the change's own time (the envelope's ``source.ts_ms``) and lies in
``[end - days, end]``.

    from producers.simulators import SimSpec, generate_dataset
    records = generate_dataset("health.encounters", SimSpec(days=3, per_day=50, seed=1))

The portal's dossiers, which ``databus simulate`` and ``databus up`` publish, have more
knobs than a ``SimSpec`` (a rate per receiving unit and working day, overdue units, messy
input, the truth behind each event, a live feed): ``DossierSpec``, ``generate_dossiers``
and ``live_dossiers`` give them; ``SIMULATORS`` has the same generator behind a
``SimSpec``. Every record, a dossier's too, is published with ``publish_records``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from producers.publisher import Publisher
from producers.simulators._common import SimRecord, SimSpec
from producers.simulators.documents import simulate_official_documents, simulate_tasks
from producers.simulators.education import (
    simulate_class_stats,
    simulate_exam_results,
    simulate_schools,
    simulate_teachers,
)
from producers.simulators.environment import simulate_station_readings
from producers.simulators.feedback import simulate_reports
from producers.simulators.health import (
    simulate_disease_cases,
    simulate_encounters,
    simulate_facilities,
)
from producers.simulators.land import simulate_construction_permits, simulate_parcels
from producers.simulators.public_service import (
    DOSSIERS_DATASET,
    HOLIDAY_SHARE,
    WEEKEND_SHARE,
    DossierEvent,
    DossierSpec,
    day_share,
    dossiers_per_unit_on,
    generate_dossiers,
    latest_truth,
    live_dossiers,
    simulate_dossier_steps,
    simulate_dossiers,
)
from producers.simulators.transport import (
    simulate_bus_positions,
    simulate_vehicle_registrations,
)
from schemas.catalog import get_dataset
from schemas.domain.reference import ReferenceData, load_reference

__all__ = [
    "DOSSIERS_DATASET",
    "HOLIDAY_SHARE",
    "SIMULATORS",
    "WEEKEND_SHARE",
    "DossierEvent",
    "DossierSpec",
    "SimRecord",
    "SimSpec",
    "Simulator",
    "day_share",
    "dossiers_per_unit_on",
    "generate_dataset",
    "generate_dossiers",
    "latest_truth",
    "live_dossiers",
    "publish_records",
]

Simulator = Callable[[SimSpec, ReferenceData], list[SimRecord]]

SIMULATORS: dict[str, Simulator] = {
    DOSSIERS_DATASET: simulate_dossiers,
    "publicservice.dossier_steps": simulate_dossier_steps,
    "education.schools": simulate_schools,
    "education.class_stats": simulate_class_stats,
    "education.teachers": simulate_teachers,
    "education.exam_results": simulate_exam_results,
    "health.facilities": simulate_facilities,
    "health.encounters": simulate_encounters,
    "health.disease_cases": simulate_disease_cases,
    "documents.official_documents": simulate_official_documents,
    "documents.tasks": simulate_tasks,
    "feedback.reports": simulate_reports,
    "environment.station_readings": simulate_station_readings,
    "transport.vehicle_registrations": simulate_vehicle_registrations,
    "transport.bus_positions": simulate_bus_positions,
    "land.parcels": simulate_parcels,
    "land.construction_permits": simulate_construction_permits,
}


def generate_dataset(
    dataset_id: str, spec: SimSpec | None = None, ref: ReferenceData | None = None
) -> list[SimRecord]:
    """The simulated records of one dataset (reference data: the packaged files)."""
    try:
        simulator = SIMULATORS[dataset_id]
    except KeyError:
        known = ", ".join(sorted(SIMULATORS))
        raise KeyError(f"no simulator for {dataset_id!r}; there are: {known}") from None
    return simulator(spec or SimSpec(), ref if ref is not None else load_reference())


def publish_records(
    publisher: Publisher,
    records: Iterable[SimRecord],
    *,
    rate: float | None = None,
    stop: Callable[[], bool] = lambda: False,
) -> int:
    """Publish simulated records in order, at most ``rate`` a second; returns the count.

    The event id, version, op and change time are the simulated ones, so a second run
    of the same spec replays the same events (consumers deduplicate on the event id).
    """
    started = time.monotonic()
    sent = 0
    for rec in records:
        if stop():
            break
        publisher.publish(
            get_dataset(rec.dataset_id),
            rec.record,
            version=rec.version,
            op=rec.op,
            changed_at=rec.at,
            event_id=rec.event_id,
        )
        sent += 1
        if rate:
            ahead = sent / rate - (time.monotonic() - started)
            if ahead > 0:
                time.sleep(ahead)  # pacing a simulated source, not synchronisation
    publisher.flush()
    return sent
