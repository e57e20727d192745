"""The health axis sink against the loopback FHIR receiver, over real sockets: outages,
stalls, replays, refusals, token expiry, TLS, rate limits."""

from __future__ import annotations

import random
import ssl
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterator, Sequence
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import trustme

from bus.errors import SinkError
from bus.settings import HealthAxisSettings
from databus.standins.health_receiver import HealthReceiver
from sinks.base import Rejected, SinkRecord
from sinks.fhir import LOCAL_SYSTEMS as SYSTEMS
from sinks.fhir import bundle, entity_key, map_event, pseudonym, stored_order
from sinks.health_axis import HealthAxisSink

sys.path.insert(0, str(Path(__file__).parents[1]))
from std_samples import sink_records, std_events

pytestmark = pytest.mark.integration

SECRET = "loopback-test-secret"
PSEUDONYM_KEY = "pseudonym-key-for-integration-tests"
DATASETS = ("health.facilities", "health.encounters", "health.disease_cases")
DEADLINE_S = 30.0


@cache
def _records() -> tuple[SinkRecord, ...]:
    out: list[SinkRecord] = []
    for dataset_id in DATASETS:
        out += sink_records(dataset_id, std_events(dataset_id), first_offset=len(out))
    return tuple(out)


@pytest.fixture
def records() -> list[SinkRecord]:
    return list(_records())


@pytest.fixture
def receiver() -> Iterator[HealthReceiver]:
    with HealthReceiver(client_secret=SECRET) as axis:
        yield axis


def make_sink(axis: HealthReceiver, **overrides: Any) -> HealthAxisSink:
    settings: dict[str, Any] = {
        "url": axis.url,
        "client_secret": SECRET,
        "pseudonym_key": PSEUDONYM_KEY,
        "rate_per_s": 1000,
        "timeout_s": 5,
    }
    sink = HealthAxisSink(HealthAxisSettings(**(settings | overrides)))
    sink.setup()
    return sink


@pytest.fixture
def sink(receiver: HealthReceiver) -> Iterator[HealthAxisSink]:
    axis_sink = make_sink(receiver)
    yield axis_sink
    axis_sink.close()


def write_like_runner(
    sink: HealthAxisSink, batch: Sequence[SinkRecord], deadline_s: float = DEADLINE_S
) -> tuple[list[Rejected], int]:
    """Write as the runner does: a retriable failure is retried (with a short backoff)
    until the write succeeds; returns the rejections and how many attempts failed."""
    deadline = time.monotonic() + deadline_s
    failures, backoff = 0, 0.02
    while True:
        try:
            return list(sink.write(batch)), failures
        except SinkError as exc:
            assert exc.retriable, exc
            failures += 1
            assert time.monotonic() < deadline, f"still failing after {deadline_s}s: {exc}"
            time.sleep(backoff)  # the runner's backoff between attempts, not a synchronization
            backoff = min(backoff * 2, 0.5)


def wait_for(condition: Callable[[], bool], deadline_s: float = DEADLINE_S) -> None:
    deadline = time.monotonic() + deadline_s
    while not condition():
        assert time.monotonic() < deadline, "condition not met before the deadline"
        time.sleep(0.02)


def _newest(batch: Sequence[SinkRecord]) -> dict[tuple[str, str], int]:
    newest: dict[tuple[str, str], int] = {}
    for rec in batch:
        key = entity_key(rec.value)
        newest[key] = max(newest.get(key, 0), int(rec.value["source"]["version"]))
    return newest


def _version(resource: dict[str, Any]) -> int:
    order = stored_order(resource)
    assert order is not None, resource.get("resourceType")
    return order[0]


def assert_each_once(
    axis: HealthReceiver,
    batch: Sequence[SinkRecord],
    *,
    missing: Collection[tuple[str, str]] = frozenset(),
) -> None:
    """Every entity of ``batch`` is stored exactly once, at its newest version; so is
    every patient and facility they reference; nothing else was created."""
    newest = _newest(batch)
    for key, version in newest.items():
        rtype, ident = key
        system, _, value = ident.partition("|")
        found = axis.find(rtype, system, value)
        if key in missing:
            assert found == [], key
            continue
        assert len(found) == 1, (key, len(found))
        assert _version(found[0]) == version, key
    patients = {
        pseudonym(PSEUDONYM_KEY.encode(), rec.value["after"]["patient_citizen_id"])
        for rec in batch
        if rec.value["after"].get("patient_citizen_id") and entity_key(rec.value) not in missing
    }
    for value in patients:
        assert len(axis.find("Patient", SYSTEMS["patient_pseudonym"], value)) == 1
    for org in axis.resources("Organization"):
        codes = [i["value"] for i in org["identifier"] if i["system"] == SYSTEMS["facility"]]
        assert len(axis.find("Organization", SYSTEMS["facility"], codes[0])) == 1
    stats = axis.stats()
    assert stats["created"] == stats["resources"], stats  # no resource created twice


def test_events_arrive_once_with_resolved_references(
    receiver: HealthReceiver, sink: HealthAxisSink, records: list[SinkRecord]
) -> None:
    rejected, failures = write_like_runner(sink, records)
    assert rejected == [] and failures == 0
    assert_each_once(receiver, records)
    ids = {f"{r['resourceType']}/{r['id']}" for r in receiver.resources()}
    for enc in receiver.resources("Encounter"):
        assert enc["subject"]["reference"] in ids
        assert enc["serviceProvider"]["reference"] in ids
    for cond in receiver.resources("Condition"):
        assert cond["subject"]["reference"] in ids
    stats = receiver.stats()
    assert stats["tokens_issued"] == 1
    assert stats["largest_bundle"] <= 100


def test_500_for_a_while_then_recovers(
    receiver: HealthReceiver, sink: HealthAxisSink, records: list[SinkRecord]
) -> None:
    receiver.fail(500, count=5)
    rejected, failures = write_like_runner(sink, records)
    assert rejected == [] and failures == 5
    assert_each_once(receiver, records)


def test_500_mid_batch_then_recovers(receiver: HealthReceiver, records: list[SinkRecord]) -> None:
    # small bundles: the first bundles of the batch are taken before the axis fails
    sink = make_sink(receiver, bundle_max_entries=30)
    try:
        sink.write(records[:40])
        receiver.fail(503, for_s=0.5)
        rejected, failures = write_like_runner(sink, records)
        assert rejected == [] and failures >= 1
        assert_each_once(receiver, records)
    finally:
        sink.close()


def _stall_then_recover(
    axis: HealthReceiver, batch: list[SinkRecord], *, stall_s: float, timeout_s: float, for_s: float
) -> None:
    sink = make_sink(axis, timeout_s=timeout_s)
    try:
        axis.stall(stall_s, for_s=for_s)
        with pytest.raises(SinkError, match="timed out") as raised:
            sink.write(batch)
        assert raised.value.retriable
        rejected, _ = write_like_runner(sink, batch, deadline_s=for_s + 30)
        assert rejected == []
        # stalled requests the sink gave up on are still processed, late: they must
        # not create anything twice either
        wait_for(lambda: axis.stats().get("in_flight", 0) == 0, deadline_s=stall_s + 10)
        assert_each_once(axis, batch)
        assert axis.stats()["stalled"] >= 1
    finally:
        sink.close()


def test_stall_longer_than_timeout_then_recovers(
    receiver: HealthReceiver, records: list[SinkRecord]
) -> None:
    _stall_then_recover(receiver, records, stall_s=1.0, timeout_s=0.3, for_s=1.0)


@pytest.mark.slow
def test_axis_stalls_for_a_minute_then_recovers(
    receiver: HealthReceiver, records: list[SinkRecord]
) -> None:
    _stall_then_recover(receiver, records, stall_s=60.0, timeout_s=5.0, for_s=60.0)


def test_replayed_twice_out_of_order_no_duplicates(
    receiver: HealthReceiver, sink: HealthAxisSink, records: list[SinkRecord]
) -> None:
    rng = random.Random(5)
    stream = records * 2
    rng.shuffle(stream)
    start = 0
    while start < len(stream):
        size = rng.randint(1, 120)
        rejected, _ = write_like_runner(sink, stream[start : start + size])
        assert rejected == []
        start += size
    assert_each_once(receiver, records)
    assert sink.stale > 0  # replays were read as held already and not sent


def test_older_version_never_overwrites_newer(
    receiver: HealthReceiver, sink: HealthAxisSink, records: list[SinkRecord]
) -> None:
    by_entity: dict[tuple[str, str], list[SinkRecord]] = defaultdict(list)
    for rec in records:
        by_entity[entity_key(rec.value)].append(rec)
    updated = [recs for recs in by_entity.values() if len(recs) > 1]
    assert updated
    newest_first = [
        rec
        for recs in updated
        for rec in sorted(recs, key=lambda r: -int(r.value["source"]["version"]))
    ]
    for rec in newest_first:  # one by one: each older event arrives after the newer
        assert write_like_runner(sink, [rec])[0] == []
    assert_each_once(receiver, newest_first)
    # the read found each newer version held: no older event was even sent
    assert receiver.stats().get("updated", 0) == 0
    assert sink.stale == len(newest_first) - len(updated)


def _entity_value(rec: SinkRecord) -> str:
    return entity_key(rec.value)[1].partition("|")[2]


@pytest.mark.parametrize("locate", [True, False], ids=["entries-named", "bisected"])
def test_refused_entries_are_rejected_exactly(
    receiver: HealthReceiver, sink: HealthAxisSink, records: list[SinkRecord], locate: bool
) -> None:
    encounters = [r for r in records if r.topic == "health.encounters.std.v1"]
    cases = [r for r in records if r.topic == "health.disease_cases.std.v1"]
    refused = {_entity_value(encounters[3]), _entity_value(encounters[70]), _entity_value(cases[9])}
    receiver.reject(refused, status=422, locate=locate)
    rejected, failures = write_like_runner(sink, records)
    assert failures == 0
    expected = [r for r in records if _entity_value(r) in refused]
    assert sorted(r.record.offset for r in rejected) == sorted(r.offset for r in expected)
    for rej in rejected:
        assert rej.reason == "http_4xx"
        assert rej.message.startswith("HTTP 422: ")
        assert "OperationOutcome" in rej.message and "refused by the axis" in rej.message
        citizen_id = rej.record.value["after"].get("patient_citizen_id")
        assert not citizen_id or citizen_id not in rej.message
    missing = {entity_key(r.value) for r in expected}
    assert_each_once(receiver, [r for r in records if entity_key(r.value) not in missing])
    for key in missing:
        system, _, value = key[1].partition("|")
        assert receiver.find(key[0], system, value) == []


def test_refused_facility_rejects_the_events_that_reference_it(
    receiver: HealthReceiver, sink: HealthAxisSink, records: list[SinkRecord]
) -> None:
    code = records[0].value["after"]["facility_code"]

    def uses(rec: SinkRecord) -> bool:
        after = rec.value["after"]
        return code in (after.get("facility_code"), after.get("reporting_facility_code"))

    receiver.reject({code}, status=400)
    rejected, _ = write_like_runner(sink, records)
    expected = {r.offset for r in records if uses(r)}
    assert len(expected) > 1
    assert {r.record.offset for r in rejected} == expected
    assert receiver.find("Organization", SYSTEMS["facility"], code) == []


def test_token_expiry_mid_stream_refreshes_and_loses_nothing(
    records: list[SinkRecord],
) -> None:
    with HealthReceiver(client_secret=SECRET, token_ttl_s=1.0) as axis:
        sink = make_sink(axis, bundle_max_entries=30)
        try:
            start, written = 0, 0
            deadline = time.monotonic() + DEADLINE_S
            # small batches until tokens expired twice under the stream
            while sink.tokens_fetched < 3 or start < len(records):
                assert time.monotonic() < deadline
                batch = records[start : start + 20] or records[:20]
                rejected, failures = write_like_runner(sink, batch)
                assert rejected == [] and failures == 0
                start += 20
                written += len(batch)
            # a server that forgets its tokens: a 401, one refresh, the request again
            axis.set_token_ttl(300)
            axis.revoke_tokens()
            assert write_like_runner(sink, records[:50]) == ([], 0)
            assert axis.stats()["unauthorized"] >= 1
            assert_each_once(axis, records)
            assert sink.tokens_fetched == axis.stats()["tokens_issued"] >= 4
        finally:
            sink.close()


def test_bad_client_secret_stops_the_sink(
    receiver: HealthReceiver, records: list[SinkRecord]
) -> None:
    sink = make_sink(receiver, client_secret="not-the-secret")
    try:
        with pytest.raises(SinkError, match="refused the client credentials") as raised:
            sink.write(records[:5])
        assert not raised.value.retriable
        assert receiver.stats()["token_refused"] == 1
        assert "not-the-secret" not in str(raised.value)
    finally:
        sink.close()


def test_429_is_retriable_and_retry_after_is_honoured(
    receiver: HealthReceiver, sink: HealthAxisSink, records: list[SinkRecord]
) -> None:
    receiver.rate_limit(retry_after_s=1, count=1)
    with pytest.raises(SinkError, match="429") as raised:
        sink.write(records[:10])
    assert raised.value.retriable
    started = time.monotonic()
    assert sink.write(records[:10]) == []
    assert time.monotonic() - started >= 0.9
    assert_each_once(receiver, records[:10])


def test_request_rate_is_limited(receiver: HealthReceiver, records: list[SinkRecord]) -> None:
    sink = make_sink(receiver, rate_per_s=20, bundle_max_entries=3)
    try:
        batch = records[:11]  # facilities: one entry each, so 4 bundles
        started = time.monotonic()
        assert sink.write(batch) == []
        elapsed = time.monotonic() - started
        assert sink.requests == 8  # each bundle: its read, then its transaction
        assert receiver.stats()["largest_bundle"] <= 3
        assert elapsed >= 7 * 0.05 * 0.9
        more = records[11:41]
        started = time.monotonic()
        assert sink.write(more) == []
        assert sink.requests == 28
        assert time.monotonic() - started >= 20 * 0.05 * 0.9
    finally:
        sink.close()


@pytest.fixture(scope="module")
def tls(tmp_path_factory: pytest.TempPathFactory) -> tuple[ssl.SSLContext, Path]:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "localhost").configure_cert(server_ctx)
    ca_file = tmp_path_factory.mktemp("tls") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return server_ctx, ca_file


def test_tls_with_the_configured_ca(
    tls: tuple[ssl.SSLContext, Path], records: list[SinkRecord]
) -> None:
    server_ctx, ca_file = tls
    with HealthReceiver(client_secret=SECRET, ssl_context=server_ctx) as axis:
        assert axis.url.startswith("https://")
        sink = make_sink(axis, ca_bundle=ca_file)
        try:
            assert write_like_runner(sink, records[:60]) == ([], 0)
            assert_each_once(axis, records[:60])
        finally:
            sink.close()


def test_untrusted_certificate_fails_clearly(
    tls: tuple[ssl.SSLContext, Path], records: list[SinkRecord]
) -> None:
    server_ctx, _ = tls
    with HealthReceiver(client_secret=SECRET, ssl_context=server_ctx) as axis:
        sink = make_sink(axis)  # the system CAs do not know the test CA
        try:
            with pytest.raises(SinkError, match="TLS certificate not trusted") as raised:
                sink.write(records[:5])
            assert not raised.value.retriable
            assert "CA_BUNDLE" in str(raised.value)
        finally:
            sink.close()
        assert axis.stats().get("requests", 0) == 0


def test_an_entry_the_axis_finds_too_large_is_rejected_alone(
    receiver: HealthReceiver, sink: HealthAxisSink, records: list[SinkRecord]
) -> None:
    # 413 for the transaction holding it, the entry not named: halved down to it
    encounters = [r for r in records if r.topic == "health.encounters.std.v1"]
    refused = {_entity_value(encounters[5])}
    receiver.reject(refused, status=413, locate=False)
    rejected, failures = write_like_runner(sink, records)
    assert failures == 0
    expected = [r for r in records if _entity_value(r) in refused]
    assert sorted(r.record.offset for r in rejected) == sorted(r.offset for r in expected)
    assert all(r.reason == "http_4xx" and r.message.startswith("HTTP 413") for r in rejected)
    missing = {entity_key(r.value) for r in expected}
    assert_each_once(receiver, [r for r in records if entity_key(r.value) not in missing])


# --------------------------------------------------------------- concurrent senders
# The receiver enforces nothing beyond standard FHIR (If-Match, ifNoneExist; a plain
# PUT is last-write-wins), so these prove what a real server would keep.


def _versions_of_one_entity(records: Sequence[SinkRecord]) -> list[SinkRecord]:
    by_entity: dict[tuple[str, str], list[SinkRecord]] = defaultdict(list)
    for rec in records:
        if rec.topic == "health.encounters.std.v1":
            by_entity[entity_key(rec.value)].append(rec)
    recs = next(r for r in by_entity.values() if len(r) >= 2)
    return sorted(recs, key=lambda r: int(r.value["source"]["version"]))


def _other_sender_writes(axis: HealthReceiver, rec: SinkRecord, version: int) -> Callable[[], None]:
    """Another sender's unconditioned write of ``rec`` stamped ``version``: a plain
    conditional PUT, last-write-wins, as a sender not using If-Match would do."""

    def write() -> None:
        value = {**rec.value, "source": {**rec.value["source"], "version": version}}
        mapped = map_event(value, PSEUDONYM_KEY.encode())
        key = mapped.main.key
        main = mapped.main.as_json()
        main["request"] = {"method": "PUT", "url": f"{key[0]}?identifier={key[1]}"}
        doc = bundle([*mapped.helpers])
        doc["entry"].insert(0, main)
        status, _ = axis.apply(doc)
        assert status == 200

    return write


def _stored_version(axis: HealthReceiver, rec: SinkRecord) -> int:
    rtype, ident = entity_key(rec.value)
    system, _, value = ident.partition("|")
    (found,) = axis.find(rtype, system, value)
    return _version(found)


def test_a_newer_write_between_read_and_update_wins(
    receiver: HealthReceiver, sink: HealthAxisSink, records: list[SinkRecord]
) -> None:
    older, newer = _versions_of_one_entity(records)[:2]
    assert write_like_runner(sink, [older])[0] == []
    v_newer = int(newer.value["source"]["version"])
    receiver.interleave(_other_sender_writes(receiver, newer, v_newer + 5))
    # the sink read version 1, its If-Match update gets 412, it reads again: newer held
    assert write_like_runner(sink, [newer])[0] == []
    assert receiver.stats()["conflicts"] == 1 and sink.conflicts == 1
    assert _stored_version(receiver, newer) == v_newer + 5
    assert sink.stale == 1


def test_an_older_write_between_read_and_update_is_overwritten(
    receiver: HealthReceiver, sink: HealthAxisSink, records: list[SinkRecord]
) -> None:
    older, newer = _versions_of_one_entity(records)[:2]
    assert write_like_runner(sink, [older])[0] == []
    receiver.interleave(_other_sender_writes(receiver, older, 0))
    assert write_like_runner(sink, [newer])[0] == []
    assert receiver.stats()["conflicts"] == 1 and sink.conflicts == 1
    assert _stored_version(receiver, newer) == int(newer.value["source"]["version"])


def test_a_create_raced_by_a_newer_sender_is_read_again(
    receiver: HealthReceiver, sink: HealthAxisSink, records: list[SinkRecord]
) -> None:
    older, newer = _versions_of_one_entity(records)[:2]
    v_newer = int(newer.value["source"]["version"])
    receiver.interleave(_other_sender_writes(receiver, newer, v_newer))
    # absent when read: a conditional create, answered 200 (it exists by then)
    assert write_like_runner(sink, [older])[0] == []
    assert sink.conflicts == 1 and sink.stale == 1
    assert _stored_version(receiver, older) == v_newer


def test_an_unconditioned_put_is_last_write_wins_on_the_receiver(
    receiver: HealthReceiver, records: list[SinkRecord]
) -> None:
    # what the sink protects against: the server itself keeps no order
    older, newer = _versions_of_one_entity(records)[:2]
    _other_sender_writes(receiver, newer, 9)()
    _other_sender_writes(receiver, older, 1)()
    assert _stored_version(receiver, older) == 1


def test_duplicates_on_the_axis_refuse_the_event(
    receiver: HealthReceiver, sink: HealthAxisSink, records: list[SinkRecord]
) -> None:
    rec = _versions_of_one_entity(records)[0]
    mapped = map_event(rec.value, PSEUDONYM_KEY.encode())
    for _ in range(2):  # plain creates: another sender made two of one encounter
        main = mapped.main.as_json()
        main["request"] = {"method": "POST", "url": mapped.main.key[0]}
        doc = bundle([*mapped.helpers])
        doc["entry"].insert(0, main)
        assert receiver.apply(doc)[0] == 200
    rejected, _ = write_like_runner(sink, [rec])
    assert [r.reason for r in rejected] == ["ambiguous"]
    assert "must be merged" in rejected[0].message
