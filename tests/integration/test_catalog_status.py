"""`databus catalog status` against a stream with live, late and silent datasets.

The processor standardizes the stream and publishes its quality reports; the ledger
the CLI prints from them must equal the figures computed here straight from the
generated records: which datasets have valid events (delivering), whose newest event
lies within the catalog obligation (live), the rest late; and one declaration two
short of what arrived.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from bus_processes import Bus, own_bus, read_topic, wait_for

from producers.declarations import declare
from producers.publisher import Publisher
from producers.simulators import SimRecord, SimSpec, generate_dataset, publish_records
from schemas.catalog import DATASETS, QUALITY_TOPIC, Dataset
from schemas.domain.reference import load_reference

pytestmark = pytest.mark.integration

LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
LIVE = ("education.schools", "health.encounters", "land.parcels")  # daily, sent up to now
LATE = ("health.disease_cases", "documents.tasks", "transport.vehicle_registrations")  # 4 days old
DECLARED = "health.encounters"


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    env = {"DATABUS_ALERTS__EVALUATE_EVERY_S": "1"}
    with own_bus(tmp_path_factory.mktemp("ledger"), env=env) as b:
        b.start("processor", "process")
        yield b


def _live_by_oracle(ds: Dataset, newest: datetime, now: datetime) -> bool:
    """The obligation, written out independently of schemas.domain.freshness."""
    if ds.update.kind == "realtime":
        assert ds.update.within_minutes is not None
        return now - newest <= timedelta(minutes=ds.update.within_minutes)
    assert ds.update.by_local_time is not None
    hh, mm = (int(p) for p in ds.update.by_local_time.split(":"))
    local_now = now.astimezone(LOCAL)
    deadline = local_now.replace(hour=hh, minute=mm, second=0, microsecond=0)
    if deadline > local_now:
        deadline -= timedelta(days=1)
    return newest >= deadline - timedelta(days=1)


def test_catalog_status_matches_the_generated_stream(bus: Bus) -> None:
    ref = load_reference()
    now = datetime.now(UTC)
    records: list[SimRecord] = []
    # The live datasets get one day of records: their newest valid one is then ~2 h old
    # whatever the hour. Over two days, land.parcels' newest was 24.5 h old — before
    # yesterday's 17:00 deadline from 10:00 to 13:00 UTC, when the scenario broke.
    # A live dataset must have a valid record in that day: on a weekend or early in the
    # morning six a day can leave none (health.encounters gave one, invalid, on a Monday
    # at 09:30 local), so the rate doubles until one is valid.
    for ids, end, days in ((LIVE, now, 1), (LATE, now - timedelta(days=4), 2)):
        for dataset_id in ids:
            for per_day in (6, 12, 24, 48, 96):
                spec = SimSpec(days=days, per_day=per_day, seed=23, invalid_share=0.1, end=end)
                generated = generate_dataset(dataset_id, spec, ref)
                if any(r.expect_reason is None for r in generated):
                    break
            records += generated
    with Publisher(bus.settings, source_system="ledger-test") as pub:
        publish_records(pub, records)
    today = now.astimezone(LOCAL).date()
    declared_ds = DATASETS[DECLARED]
    arrived_today = sum(
        1 for r in records if r.dataset_id == DECLARED and r.at.astimezone(LOCAL).date() == today
    )
    declare(
        bus.settings,
        DECLARED,
        declared_ds.owner_unit,
        today,
        arrived_today + 2,
        source_system="ledger-test",
    )
    sent = {ds for ds in (*LIVE, *LATE)}
    wait_for(
        "a quality report of every dataset sent",
        lambda: (
            sent
            <= {
                (m.key() or b"").decode().split("|")[0]
                for m in read_topic(bus.settings, QUALITY_TOPIC)
            }
        ),
        timeout=120,
    )

    out = subprocess.run(
        [sys.executable, "-m", "databus", "catalog", "status", "--json", "--days", "1"],
        env=bus.env,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    doc = json.loads(out.stdout)
    checked = datetime.fromisoformat(doc["at"])

    # The oracle: straight from the generated records.
    newest: dict[str, datetime] = {}
    for r in records:
        if r.expect_reason is None:
            newest[r.dataset_id] = max(newest.get(r.dataset_id, r.at), r.at)
    expected: dict[str, dict[str, int]] = {}
    for ds in DATASETS.values():
        row = expected.setdefault(ds.owner_unit, {"assigned": 0, "delivering": 0, "live": 0})
        row["assigned"] += 1
        if ds.id in newest:
            row["delivering"] += 1
            row["live"] += _live_by_oracle(ds, newest[ds.id], checked)
    got = {u["unit"]: {k: u[k] for k in ("assigned", "delivering", "live")} for u in doc["units"]}
    assert got == expected
    assert {u["unit"]: u["late"] for u in doc["units"]} == {
        unit: row["delivering"] - row["live"] for unit, row in expected.items()
    }
    # The scenario holds what it claims: silent, live and late units all appear.
    assert sum(r["live"] for r in expected.values()) == len(LIVE)
    assert sum(r["delivering"] - r["live"] for r in expected.values()) == len(LATE)
    health = next(u for u in doc["units"] if u["unit"] == "DNA.SYT")
    assert health["name"] == "Sở Y tế"
    assert (health["declared"], health["missing"]) == (arrived_today + 2, 2)
    for u in doc["units"]:
        for d in u["datasets"]:
            assert (d["quality"] is not None) == d["delivering"], d["dataset"]
