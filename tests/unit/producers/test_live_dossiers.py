"""The live dossier feed is never empty: nights, weekends and holidays send fewer
dossier events, never none (a `make run` on a Sunday night keeps moving)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from producers.simulators import DossierSpec, generate_dossiers, live_dossiers
from schemas.domain.reference import load_reference

SPEC = DossierSpec(days=30, dossiers_per_unit_per_day=3.0, seed=7)


@pytest.mark.parametrize(
    "at",
    [
        "2026-12-06T19:20:00+00:00",  # Monday 02:20 in Viet Nam, after a Sunday
        "2026-12-06T05:00:00+00:00",  # Sunday noon
        "2026-12-05T16:30:00+00:00",  # Saturday 23:30
        "2027-02-06T03:00:00+00:00",  # Tết holidays (lunar new year's eve week)
        "2026-12-07T03:00:00+00:00",  # Monday 10:00, a working morning
    ],
)
def test_every_batch_has_dossier_events_whatever_the_hour(at: str) -> None:
    now = datetime.fromisoformat(at)
    feed = live_dossiers(SPEC, load_reference(), now=lambda: now)
    for _ in range(2):
        batch = next(feed)
        assert batch, f"an empty live batch at {at}"
        assert len({ev.event_id for ev in batch}) == len(batch)
        assert all(ev.at <= now for ev in batch)


def test_live_dossiers_are_new_dossiers_not_updates_of_the_history() -> None:
    """Each batch's dossiers are new entities (version 1 of an id nobody used), never
    a second "version 1" of a history dossier or of an earlier batch's: those would be
    dead-lettered as version conflicts."""
    ref = load_reference()
    history = generate_dossiers(SPEC, ref)
    times = iter(datetime(2026, 12, 7, 3, 0, s, tzinfo=UTC) for s in (0, 10, 20))
    feed = live_dossiers(SPEC, ref, now=lambda: next(times))
    seen = {ev.dossier.dossier_id for ev in history}
    for _ in range(3):
        batch = next(feed)
        ids = {ev.dossier.dossier_id for ev in batch}
        assert ids and not ids & seen
        seen |= ids
