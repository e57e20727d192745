"""The portal's dossier simulator: deterministic, ordered, and truthful about itself."""

from __future__ import annotations

import itertools
import unicodedata
from collections import defaultdict
from datetime import UTC, datetime, timedelta

import pytest

from producers.simulators import DossierEvent, DossierSpec, generate_dossiers, latest_truth
from producers.simulators.public_service import DOSSIER_DEFECTS
from schemas.domain.citizen_id import CitizenId, check_citizen_id
from schemas.domain.reference import ReferenceData, load_reference
from schemas.models.common import Op
from sinks.ioc.dossier_kpis import compute_unit_kpis

END = datetime(2025, 9, 15, 10, 0, 7, tzinfo=UTC)
CONFIG = DossierSpec(days=30, overdue_units=3, seed=11, end=END)


@pytest.fixture(scope="module")
def ref() -> ReferenceData:
    return load_reference()


@pytest.fixture(scope="module")
def events(ref: ReferenceData) -> list[DossierEvent]:
    out = generate_dossiers(CONFIG, ref)
    assert len(out) > 1000  # 21 units × ~21 working days × 2/day × several events
    return out


def by_dossier(events: list[DossierEvent]) -> dict[str, list[DossierEvent]]:
    out: dict[str, list[DossierEvent]] = defaultdict(list)
    for ev in events:
        out[ev.dossier.dossier_id].append(ev)
    return out


def test_deterministic_for_a_seed(ref: ReferenceData, events: list[DossierEvent]) -> None:
    again = generate_dossiers(CONFIG, ref)
    assert again == events
    assert [e.truth for e in again] == [e.truth for e in events]
    ids = [e.event_id for e in events]
    assert all(ids) and len(set(ids)) == len(ids)  # a re-run replays the same event ids
    other = generate_dossiers(DossierSpec(days=30, overdue_units=3, seed=12, end=END), ref)
    assert [e.dossier for e in other] != [e.dossier for e in events]


def test_events_are_in_time_order(events: list[DossierEvent]) -> None:
    times = [e.at for e in events]
    assert times == sorted(times)
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in times)


def test_versions_increase_per_dossier_from_one(events: list[DossierEvent]) -> None:
    for dossier_id, evs in by_dossier(events).items():
        assert [e.version for e in evs] == list(range(1, len(evs) + 1)), dossier_id
        assert [e.op for e in evs] == [Op.CREATE] + [Op.UPDATE] * (len(evs) - 1)
        ats = [e.at for e in evs]
        assert all(a < b for a, b in itertools.pairwise(ats)), dossier_id
        assert evs[0].dossier.status == "RECEIVED"
        assert all(e.truth["version"] == e.version for e in evs)


def test_no_event_after_end(events: list[DossierEvent]) -> None:
    assert max(e.at for e in events) <= END
    for ev in events:
        completed = ev.truth["completed_at"]
        assert completed is None or completed <= END  # type: ignore[operator]
    assert min(e.at for e in events) >= END - timedelta(days=CONFIG.days + 1)


def test_every_bad_dossier_is_marked_on_all_its_events(
    events: list[DossierEvent], ref: ReferenceData
) -> None:
    seen: set[str] = set()
    for dossier_id, evs in by_dossier(events).items():
        reasons = {e.expect_reason for e in evs}
        assert len(reasons) == 1, (dossier_id, reasons)
        reason = reasons.pop()
        if reason is None:
            continue
        assert reason in DOSSIER_DEFECTS
        seen.add(reason)
        d = evs[0].dossier
        # the defect is really there, so the processor has something to refuse
        if reason == "invalid_citizen_id":
            checked = check_citizen_id(d.applicant_citizen_id, ref.cccd_province_codes)
            assert not isinstance(checked, CitizenId)
        elif reason == "unknown_receiving_unit":
            assert d.receiving_unit_code not in ref.receiving_units
        else:
            assert d.admin_unit_code not in ref.crosswalk
    assert seen == set(DOSSIER_DEFECTS)


def test_good_dossiers_have_no_defect(events: list[DossierEvent], ref: ReferenceData) -> None:
    for ev in events:
        if ev.expect_reason is None:
            d = ev.dossier
            assert isinstance(
                check_citizen_id(d.applicant_citizen_id, ref.cccd_province_codes), CitizenId
            )
            assert d.receiving_unit_code in ref.receiving_units
            assert d.admin_unit_code in ref.crosswalk


def test_overdue_units_have_a_much_higher_true_overdue_rate(events: list[DossierEvent]) -> None:
    truth = latest_truth(events)
    kpis = compute_unit_kpis(truth, END)
    overdue_units = {str(t["receiving_unit_code"]) for t in truth if t["overdue_unit"]}
    assert len(overdue_units) == CONFIG.overdue_units
    bad = [kpis[u].overdue_rate for u in overdue_units]
    good = [k.overdue_rate for u, k in kpis.items() if u not in overdue_units]
    assert all(r is not None for r in bad + good)
    assert min(bad) > 0.35  # type: ignore[type-var, operator]
    assert max(good) < 0.2  # type: ignore[type-var, operator]
    assert sum(bad) / len(bad) > 5 * (sum(good) / len(good))  # type: ignore[arg-type]


def test_latest_truth_is_the_last_event_of_each_good_dossier(events: list[DossierEvent]) -> None:
    truth = {t["dossier_id"]: t for t in latest_truth(events)}
    groups = by_dossier(events)
    good = {d for d, evs in groups.items() if evs[0].expect_reason is None}
    assert set(truth) == good
    for dossier_id in good:
        assert truth[dossier_id] == groups[dossier_id][-1].truth


def test_messy_variants_exist(events: list[DossierEvent]) -> None:
    received = [e.dossier.received_at for e in events]
    naive = [r for r in received if "T" in r and "+" not in r and not r.endswith("Z")]
    ddmmyyyy = [r for r in received if r[2] == "/" and r[5] == "/"]
    aware = [r for r in received if r.endswith("+07:00")]
    assert naive and ddmmyyyy and aware
    names = [e.dossier.procedure_name for e in events] + [e.dossier.applicant_name for e in events]
    nfd = [n for n in names if not unicodedata.is_normalized("NFC", n)]
    assert nfd and all(unicodedata.normalize("NFC", n) != n for n in nfd)
    assert any(n != n.strip() for n in nfd)  # stray spaces come with them
    assert len(nfd) < len(names) / 2  # messy is the minority


def test_naive_times_are_local_time(events: list[DossierEvent]) -> None:
    for ev in events:
        r = ev.dossier.received_at
        if "T" in r and "+" not in r:
            naive = datetime.fromisoformat(r)
            received = ev.truth["received_at"]
            assert isinstance(received, datetime)
            assert naive - received.replace(tzinfo=None) == timedelta(hours=7)
            return
    pytest.fail("no naive timestamp")
