"""The live dossier feed is never empty: nights, weekends and holidays send fewer
dossier events, never none (a `make run` on a Sunday night keeps moving)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from producers.simulators import DossierSpec, live_dossiers
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


def test_successive_batches_are_new_events() -> None:
    now = datetime(2026, 12, 6, 19, 20, tzinfo=UTC)
    feed = live_dossiers(SPEC, load_reference(), now=lambda: now)
    first, second = next(feed), next(feed)
    assert not {ev.event_id for ev in first} & {ev.event_id for ev in second}
