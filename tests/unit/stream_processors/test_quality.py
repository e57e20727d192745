"""Data-quality scores as pure functions: field presence, rolling state, scores, record."""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import fastavro
import pytest

from bus.errors import ConfigError
from producers.simulators import (
    SIMULATORS,
    DossierSpec,
    SimSpec,
    generate_dataset,
    generate_dossiers,
)
from schemas.catalog import DOSSIERS, QUALITY_SCHEMA, QUALITY_TOPIC, get_dataset, load_schema
from schemas.domain.reference import load_reference
from stream_processors.batch_stats import UnitStats
from stream_processors.quality import (
    OVERALL_WEIGHTS,
    Expectation,
    apply_stats,
    check_expectations,
    field_presence,
    field_spec,
    load_expectations,
    quality_record,
    scores,
)

HOUR = 3_600_000
MINUTE = 60_000
LOCAL = ZoneInfo("Asia/Ho_Chi_Minh")
T0 = int(datetime(2025, 8, 4, 3, 0, tzinfo=UTC).timestamp() * 1000)  # 10:00 local
END = datetime(2025, 8, 4, 10, 0, tzinfo=UTC)
SCHOOLS = get_dataset("education.schools")  # daily by 17:00


def _inner_schema(dataset_id: str) -> Any:
    """The record inside the envelope, as fastavro parses it."""
    document = json.loads(load_schema(get_dataset(dataset_id).raw_schema))
    before = next(f for f in document["fields"] if f["name"] == "before")
    record = next(b for b in before["type"] if b != "null")
    return fastavro.parse_schema(record)


def _decoded(schema: Any, record: dict[str, Any]) -> dict[str, Any]:
    """``record`` written and read back with Avro: the image the processor sees."""
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    buf.seek(0)
    image = fastavro.schemaless_reader(buf, schema, schema)
    assert isinstance(image, dict)
    return image


def _dossier() -> dict[str, Any]:
    events = generate_dossiers(
        DossierSpec(days=3, units=2, bad_share=0, seed=3, end=END), load_reference()
    )
    return events[0].dossier.model_dump(mode="python")


# ---- expectations and field specs ----------------------------------------------------


def test_shipped_expectations_agree_with_catalog_and_schemas() -> None:
    assert check_expectations() == []


def test_required_are_the_non_nullable_fields_and_expected_follow_the_file() -> None:
    spec = field_spec(DOSSIERS)
    assert "dossier_id" in spec.required and "received_at" in spec.required
    assert "applicant_birth_date" not in spec.required
    assert spec.expected == ("applicant_birth_date", "applicant_sex")
    assert spec.by == "status" and spec.when is not None
    assert spec.when["COMPLETED"] == ("applicant_birth_date", "applicant_sex", "completed_at")


def test_a_dataset_missing_from_the_file_expects_every_nullable_field() -> None:
    spec = field_spec(DOSSIERS, {})
    assert spec.expected == ("applicant_birth_date", "applicant_sex", "completed_at")
    assert spec.when is None


@pytest.mark.parametrize(
    ("expectation", "message"),
    [
        (Expectation(expected=("dossier_id",)), "not nullable"),
        (Expectation(expected=("no_such_field",)), "not nullable"),
        (Expectation(expected=(), by="nope", when={"X": ()}), "not a field"),
        (Expectation(expected=(), by="status", when={"X": ("status",)}), "when.X"),
    ],
)
def test_expectations_naming_wrong_fields_are_refused(
    expectation: Expectation, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        field_spec(DOSSIERS, {DOSSIERS.id: expectation})


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('["publicservice.dossiers"]\nexpected = ["x"]\nbogus = 1\n', "unknown keys"),
        ('["publicservice.dossiers"]\nby = "status"\n', "'expected' is required"),
        ('["publicservice.dossiers"]\nexpected = []\nby = "status"\n', "go together"),
        ('["publicservice.dossiers"]\nexpected = "x"\n', "list of field names"),
        ("not toml [", "not valid TOML"),
    ],
)
def test_malformed_expectation_files_are_refused(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "expectations.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_expectations(path)


def test_check_reports_datasets_not_in_the_catalog(tmp_path: Path) -> None:
    path = tmp_path / "expectations.toml"
    path.write_text('["health.nothing"]\nexpected = []\n', encoding="utf-8")
    assert check_expectations(path) == [
        "quality expectations: health.nothing: not a catalog dataset"
    ]


# ---- field presence --------------------------------------------------------------------


@pytest.mark.parametrize("dataset_id", sorted(SIMULATORS))
def test_presence_on_simulated_records(dataset_id: str) -> None:
    dataset = get_dataset(dataset_id)
    spec = field_spec(dataset)
    schema = _inner_schema(dataset_id)
    records = generate_dataset(dataset_id, SimSpec(days=2, per_day=15, seed=5, end=END))
    totals = [0, 0, 0, 0]
    for rec in records:
        image = _decoded(schema, rec.record.model_dump(mode="python"))
        rp, rc, ep, ec = field_presence(dataset, image)
        assert rc == len(spec.required)
        assert 0 <= rp <= rc and 0 <= ep <= ec
        by = image.get(spec.by) if spec.by else None
        want = spec.when.get(by, spec.expected) if spec.when and by else spec.expected
        assert ec == len(want)
        for i, n in enumerate((rp, rc, ep, ec)):
            totals[i] += n
    # The simulators fill every required field; the expectations file leaves out the
    # fields a normal record may lack, so most expected fields are there too.
    assert totals[0] == totals[1] > 0
    if totals[3]:
        assert totals[2] / totals[3] > 0.8


def test_presence_on_simulated_dossier_events() -> None:
    schema = _inner_schema(DOSSIERS.id)
    events = generate_dossiers(DossierSpec(days=5, units=3, seed=11, end=END), load_reference())
    required = len(field_spec(DOSSIERS).required)
    seen_completed = False
    for event in events:
        image = _decoded(schema, event.dossier.model_dump(mode="python"))
        rp, rc, ep, ec = field_presence(DOSSIERS, image)
        assert (rp, rc) == (required, required)
        if image["status"] == "COMPLETED":
            seen_completed = True
            assert (ep, ec) == (3, 3)  # completed_at expected once completed
        else:
            assert ec == 2
    assert seen_completed


def test_blank_strings_and_empty_collections_count_as_absent() -> None:
    image = _dossier()
    rp, rc, ep, ec = field_presence(DOSSIERS, image)
    assert rp == rc
    blank = {
        **image,
        "procedure_name": "   ",
        "applicant_name": "\u200b",  # zero-width space only
        "dossier_code": "",
        "applicant_birth_date": "\u00a0\t",  # non-breaking space and a tab
        "applicant_sex": None,
    }
    assert field_presence(DOSSIERS, blank) == (rp - 3, rc, ep - 2, ec)
    # A value with text around the blanks is present.
    padded = {**image, "procedure_name": "  Cấp giấy phép\u00a0"}
    assert field_presence(DOSSIERS, padded) == (rp, rc, ep, ec)
    encounters = get_dataset("health.encounters")
    record = generate_dataset(encounters.id, SimSpec(days=1, per_day=3, seed=2, end=END))[0]
    full = record.record.model_dump(mode="python")
    rp, rc, _, _ = field_presence(encounters, full)
    assert field_presence(encounters, {**full, "diagnosis_codes": []})[0] == rp - 1


def test_a_missing_key_is_absent_and_an_unknown_status_keeps_the_base_expectations() -> None:
    image = _dossier()
    del image["dossier_id"]
    rp, rc, _, ec = field_presence(DOSSIERS, image)
    assert rp == rc - 1
    assert field_presence(DOSSIERS, {**image, "status": "SOMETHING_ELSE"})[3] == 2
    assert ec in (2, 3)


def test_station_readings_expect_the_parameters_of_their_station_type() -> None:
    dataset = get_dataset("environment.station_readings")
    readings = generate_dataset(dataset.id, SimSpec(days=1, per_day=10, seed=1, end=END))
    kinds = {}
    for rec in readings:
        image = rec.record.model_dump(mode="python")
        kinds[str(image["station_type"])] = field_presence(dataset, image)[3]
    assert kinds == {"AIR": 7, "WATER": 5}


# ---- rolling state ------------------------------------------------------------------------


def _stats(seen_ms: int, **counts: int) -> UnitStats:
    return UnitStats(
        dataset=DOSSIERS.id, unit="DNA.VPUB", last_seen_ms=seen_ms, last_event_ms=seen_ms, **counts
    )


def test_state_is_json_and_the_input_is_not_changed() -> None:
    state = apply_stats(None, _stats(T0, received=3, valid=3))
    frozen = json.dumps(state, sort_keys=True)
    after = apply_stats(state, _stats(T0 + MINUTE, received=2, valid=1, dead_lettered=1))
    assert json.dumps(state, sort_keys=True) == frozen
    assert json.loads(json.dumps(after)) == after
    assert after["hours"] == {str(T0 // HOUR): [5, 4, 1, 0, 0, 0, 0, 0, 0, 0]}


def test_hours_past_the_window_are_pruned_by_the_newest_delivery() -> None:
    state = apply_stats(None, _stats(T0, received=1, valid=1), window_hours=24)
    state = apply_stats(state, _stats(T0 + 10 * HOUR, received=2, valid=2), window_hours=24)
    assert len(state["hours"]) == 2
    state = apply_stats(state, _stats(T0 + 24 * HOUR, received=4, valid=4), window_hours=24)
    assert sorted(int(k) - T0 // HOUR for k in state["hours"]) == [10, 24]
    assert scores(DOSSIERS, state, T0 + 24 * HOUR).received == 6
    # A late batch from before the window adds nothing but keeps the newest times.
    late = apply_stats(state, _stats(T0 - HOUR, received=9, valid=9), window_hours=24)
    assert late == state


def test_the_state_stays_bounded() -> None:
    state: dict[str, Any] | None = None
    for hour in range(200):
        state = apply_stats(state, _stats(T0 + hour * HOUR, received=1, valid=1), window_hours=6)
    assert state is not None and len(state["hours"]) == 6
    assert scores(DOSSIERS, state, T0 + 200 * HOUR).received == 6


def test_a_batch_without_a_time_goes_to_the_newest_hour() -> None:
    state = apply_stats(None, _stats(0, received=1))
    assert state["hours"] == {}
    state = apply_stats(state, _stats(T0, received=1, valid=1))
    state = apply_stats(state, _stats(0, received=2, valid=2))
    assert state["hours"] == {str(T0 // HOUR): [3, 3, 0, 0, 0, 0, 0, 0, 0, 0]}


def _random_batches(seed: int, n: int = 60) -> list[UnitStats]:
    rng = random.Random(seed)
    batches = []
    for _ in range(n):
        received = rng.randint(0, 50)
        dup = rng.randint(0, received // 5)
        stale = rng.randint(0, received // 10)
        dead = rng.randint(0, received - dup - stale)
        checked = (received - dup - stale - dead) * 13
        batches.append(
            _stats(
                T0 + rng.randint(0, 40 * HOUR),
                received=received,
                valid=received - dup - stale - dead,
                dead_lettered=dead,
                duplicates=dup,
                conflicts=rng.randint(0, dead),
                stale=stale,
                required_present=checked - rng.randint(0, 3),
                required_checked=checked,
                expected_present=rng.randint(0, 10),
                expected_checked=10,
            )
        )
    return batches


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_folding_in_any_order_gives_the_same_scores(seed: int) -> None:
    batches = _random_batches(seed)
    now = T0 + 41 * HOUR
    results = []
    for order in range(5):
        shuffled = list(batches)
        random.Random(order).shuffle(shuffled)
        state: dict[str, Any] | None = None
        for batch in shuffled:
            state = apply_stats(state, batch)
        results.append((state, scores(DOSSIERS, state, now)))
    assert all(r == results[0] for r in results)


def test_one_merged_batch_scores_like_its_parts() -> None:
    parts = [_stats(T0 + i * MINUTE, received=10, valid=8, dead_lettered=2) for i in range(5)]
    merged = _stats(T0)
    for part in parts:
        merged.merge(part)
    state: dict[str, Any] | None = None
    for part in parts:
        state = apply_stats(state, part)
    now = T0 + HOUR
    assert scores(DOSSIERS, state, now) == scores(DOSSIERS, apply_stats(None, merged), now)


# ---- scores ------------------------------------------------------------------------------


def test_the_shares_follow_their_definitions() -> None:
    stats = _stats(
        T0,
        received=100,
        valid=80,
        dead_lettered=10,  # 2 of them conflicts
        duplicates=5,
        conflicts=2,
        stale=3,
        required_present=1030,
        required_checked=1040,
        expected_present=100,
        expected_checked=160,
    )
    got = scores(DOSSIERS, apply_stats(None, stats), T0 + MINUTE)
    assert got.validity == pytest.approx(80 / 90)
    assert got.uniqueness == pytest.approx(93 / 100)
    assert got.completeness == pytest.approx(1130 / 1200)
    assert got.completeness_required == pytest.approx(1030 / 1040)
    assert got.completeness_expected == pytest.approx(100 / 160)
    assert got.live and got.freshness_seconds == 60
    dims = {"validity": 80 / 90, "uniqueness": 0.93, "completeness": 1130 / 1200, "live": 1.0}
    assert got.overall == pytest.approx(sum(OVERALL_WEIGHTS[k] * v for k, v in dims.items()))
    assert (got.window_start_ms, got.window_end_ms) == (T0 - 23 * HOUR, T0)


def test_nothing_seen_gives_no_shares_and_not_live() -> None:
    for state in (None, apply_stats(None, _stats(0))):
        got = scores(DOSSIERS, state, T0)
        assert got.completeness is got.validity is got.uniqueness is got.overall is None
        assert got.freshness_seconds is None and not got.live
        assert got.received == 0


def test_overall_weights_sum_to_one_and_a_silent_perfect_source_loses_liveness() -> None:
    assert sum(OVERALL_WEIGHTS.values()) == pytest.approx(1.0)
    state = apply_stats(
        None, _stats(T0, received=4, valid=4, required_present=4, required_checked=4)
    )
    assert scores(DOSSIERS, state, T0).overall == pytest.approx(1.0)
    silent = scores(DOSSIERS, state, T0 + 2 * HOUR)
    assert not silent.live and silent.overall == pytest.approx(1 - OVERALL_WEIGHTS["live"])
    assert silent.validity == 1.0  # the window ends at the newest delivery, not now


def test_realtime_freshness_around_the_deadline() -> None:
    assert DOSSIERS.update.kind == "realtime" and DOSSIERS.update.within_minutes == 15
    state = apply_stats(None, _stats(T0, received=1, valid=1))
    on_time = scores(DOSSIERS, state, T0 + 15 * MINUTE)
    assert on_time.live and on_time.freshness_seconds == 900
    assert not scores(DOSSIERS, state, T0 + 15 * MINUTE + 1).live


def _local_ms(day: int, hour: int, minute: int = 0) -> int:
    return int(datetime(2025, 8, day, hour, minute, tzinfo=LOCAL).timestamp() * 1000)


@pytest.mark.parametrize(
    ("delivered", "now", "live"),
    [
        ((4, 16, 0), (5, 16, 59), True),  # yesterday's delivery counts until today's 17:00
        ((4, 16, 0), (5, 17, 0), False),  # today's deadline passed without a delivery
        ((4, 17, 30), (5, 17, 1), True),  # delivered after yesterday's deadline: in time
        ((5, 16, 59), (5, 17, 1), True),
        ((3, 16, 0), (5, 9, 0), False),  # missed yesterday's deadline
    ],
)
def test_daily_freshness_around_the_deadline(
    delivered: tuple[int, int, int], now: tuple[int, int, int], live: bool
) -> None:
    assert SCHOOLS.update.kind == "daily" and SCHOOLS.update.by_local_time == "17:00"
    seen = _local_ms(*delivered)
    stats = UnitStats(SCHOOLS.id, "DNA.SGDDT", received=1, valid=1, last_seen_ms=seen)
    got = scores(SCHOOLS, apply_stats(None, stats), _local_ms(*now))
    assert got.live is live
    assert got.freshness_seconds == (_local_ms(*now) - seen) / 1000


# ---- the quality.v1 record -------------------------------------------------------------------


def test_topic_and_schema_names() -> None:
    assert QUALITY_TOPIC == "quality.v1"
    document = json.loads(load_schema(QUALITY_SCHEMA))
    assert document["namespace"] == "vn.gov.databus.quality"
    assert all(field.get("doc") for field in document["fields"])


def _roundtrip(record: dict[str, Any]) -> dict[str, Any]:
    schema = fastavro.parse_schema(json.loads(load_schema(QUALITY_SCHEMA)))
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, record)
    buf.seek(0)
    back = fastavro.schemaless_reader(buf, schema, schema)
    assert isinstance(back, dict)
    return back


def test_the_record_encodes_against_the_schema() -> None:
    state: dict[str, Any] | None = None
    for batch in _random_batches(7):
        state = apply_stats(state, batch)
    now = T0 + 41 * HOUR
    got = scores(DOSSIERS, state, now)
    record = quality_record(DOSSIERS, "DNA.VPUB", got, now)
    back = _roundtrip(record)
    assert back["dataset"] == DOSSIERS.id and back["unit_code"] == "DNA.VPUB"
    assert back["received"] == got.received and back["live"] is got.live
    assert back["validity"] == pytest.approx(got.validity, abs=1e-6)
    assert back["ts_ms"] == datetime.fromtimestamp(now / 1000, UTC)
    assert back["obligation"] == "real time, within 15 min"


def test_the_record_of_an_unseen_dataset_encodes_with_nulls() -> None:
    got = scores(SCHOOLS, None, T0)
    back = _roundtrip(quality_record(SCHOOLS, "unknown", got, T0))
    assert back["completeness"] is None and back["freshness_seconds"] is None
    assert back["last_seen_ts"] is None and back["live"] is False
    assert back["window_end"] - back["window_start"] < timedelta(hours=24)
