"""The real processor isolates a record it cannot write, and exits when it cannot work.

A stack of its own and one ``databus process`` worker. A schema-valid raw dossier of
~1.5 MB (one long text field; sent by a producer allowed larger records than the
bus's 1,000,000-byte default, as another client could) is standardized into a std
record over the limit: it is dead-lettered as ``record_too_large`` — without its bytes,
which are over the limit too, but with its coordinates, size and SHA-256 — while the
records of other datasets before and after it reach their std topics. Sent again, it
is dead-lettered again: it never entered the entity state.

Then a worker whose batch loop cannot work (its entity changelog has fewer partitions
than its raw topics: restoring the state fails) fails ``/livez`` and exits non-zero.
"""

from __future__ import annotations

import contextlib
import hashlib
import subprocess
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from bus_processes import Bus, own_bus, read_topic, wait_for
from confluent_kafka import Producer
from registry_clients import registry_client

from bus.kafka_client import producer_config
from bus.topic_admin import TopicSpec, ensure_topics
from producers.publisher import Publisher
from producers.simulators import (
    DossierSpec,
    SimRecord,
    SimSpec,
    generate_dataset,
    generate_dossiers,
    publish_records,
)
from schemas.catalog import DOSSIERS, get_dataset, load_schema, value_subject
from schemas.codec import AvroSerializer
from schemas.dead_letters import ORIGINAL_SHA256_HEADER, ORIGINAL_SIZE_HEADER
from schemas.domain.reference import load_reference
from schemas.topics import changelog_topic

pytestmark = pytest.mark.integration

OTHERS = ("environment.station_readings", "transport.bus_positions")
BIG_TEXT_BYTES = 1_500_000


@pytest.fixture(scope="module")
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    with own_bus(tmp_path_factory.mktemp("isolation")) as b:
        b.start("processor", "process")
        yield b


def headers_of(msg: object) -> dict[str, bytes]:
    return {k: v or b"" for k, v in (msg.headers() or [])}  # type: ignore[attr-defined]


def ce_ids(bus: Bus, topic: str) -> set[str]:
    """The source events' ids on a std topic (a std event's own id is derived)."""
    return {headers_of(m).get("ce_originid", b"").decode() for m in read_topic(bus.settings, topic)}


def other_records() -> tuple[list[SimRecord], list[SimRecord], list[SimRecord]]:
    """Valid records of other datasets, in three parts of one history (separate
    histories could hold the same entity at the same version with other content)."""
    spec = SimSpec(days=1, per_day=18, seed=41, invalid_share=0.0)
    ref = load_reference()
    parts: tuple[list[SimRecord], list[SimRecord], list[SimRecord]] = ([], [], [])
    for ds in OTHERS:
        history = generate_dataset(ds, spec, ref)
        third = len(history) // 3
        for i, part in enumerate(parts):
            part.extend(history[i * third : (i + 1) * third if i < 2 else None])
    return parts


def big_dossier(bus: Bus) -> tuple[str, bytes, bytes]:
    """A schema-valid raw dossier event with a ~1.5 MB procedure name: (event id, key,
    framed value). The model caps the name at 500 characters; the raw schema does not."""
    event = next(
        e
        for e in generate_dossiers(
            DossierSpec(days=2, units=1, seed=3, bad_share=0.0), load_reference()
        )
        if e.expect_reason is None
    )
    after = event.dossier.model_dump(mode="python")
    after["procedure_name"] = "Đăng ký " + "x" * BIG_TEXT_BYTES
    event_id = str(uuid.uuid4())
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    envelope = {
        "event_id": event_id,
        "op": "c",
        "ts_ms": now_ms,
        "source": {
            "system": "isolation-test",
            "unit": after["receiving_unit_code"],
            "dataset": DOSSIERS.id,
            "ts_ms": now_ms,
            "version": 1,
        },
        "before": None,
        "after": after,
    }
    registry = registry_client(bus.settings.schema_registry.client_config())
    encode = AvroSerializer(
        registry, value_subject(DOSSIERS.raw_topic), load_schema(DOSSIERS.raw_schema)
    )
    return event_id, after["dossier_id"].encode(), encode(envelope)


def send_raw(bus: Bus, key: bytes, value: bytes, event_id: str) -> None:
    producer = Producer(producer_config(bus.settings, **{"message.max.bytes": 4_000_000}))
    producer.produce(DOSSIERS.raw_topic, value, key, headers=[("ce_id", event_id.encode())])
    assert producer.flush(30) == 0


def publish(bus: Bus, records: list[SimRecord]) -> None:
    with Publisher(bus.settings, source_system="isolation-test") as pub:
        publish_records(pub, records)


def letters_for(bus: Bus, event_id: str) -> list[object]:
    return [
        m
        for m in read_topic(bus.settings, DOSSIERS.dlq_topic)
        if headers_of(m).get("ce_id") == event_id.encode()
    ]


def test_an_oversized_record_is_dead_lettered_and_the_loop_goes_on(bus: Bus) -> None:
    event_id, key, value = big_dossier(bus)
    assert len(value) > BIG_TEXT_BYTES
    before, after, later = other_records()
    publish(bus, before)
    send_raw(bus, key, value, event_id)
    publish(bus, after)

    wait_for("the oversized record in the DLQ", lambda: len(letters_for(bus, event_id)) == 1)
    for ds_id in OTHERS:
        std = get_dataset(ds_id).std_topic
        wanted = {r.event_id for r in before + after if r.dataset_id == ds_id}
        wait_for(f"every {ds_id} record on std", lambda: ce_ids(bus, std) >= wanted)  # noqa: B023
    assert event_id not in ce_ids(bus, DOSSIERS.std_topic)

    (letter,) = letters_for(bus, event_id)
    h = headers_of(letter)
    assert h["databus.errors.reason"] == b"record_too_large"
    assert h["databus.errors.stage"] == b"produce"
    assert h["__connect.errors.topic"] == DOSSIERS.raw_topic.encode()
    # The dead letter with the original bytes is over the limit too: it carries the
    # original's coordinates, size and digest instead.
    assert letter.value() in (None, b"")  # type: ignore[attr-defined]
    assert h[ORIGINAL_SIZE_HEADER] == str(len(value)).encode()
    assert h[ORIGINAL_SHA256_HEADER] == hashlib.sha256(value).hexdigest().encode()
    raw = [
        m
        for m in read_topic(bus.settings, DOSSIERS.raw_topic)
        if headers_of(m).get("ce_id") == event_id.encode()
    ]
    assert [(str(m.partition()).encode(), str(m.offset()).encode()) for m in raw] == [
        (h["__connect.errors.partition"], h["__connect.errors.offset"])
    ]

    # Sent again: not a duplicate of anything (it never entered the entity state), so
    # dead-lettered again; and the loop still standardizes what follows.
    send_raw(bus, key, value, event_id)
    publish(bus, later)
    wait_for("the re-sent record dead-lettered again", lambda: len(letters_for(bus, event_id)) == 2)
    for ds_id in OTHERS:
        std = get_dataset(ds_id).std_topic
        wanted = {r.event_id for r in later if r.dataset_id == ds_id}
        wait_for(f"later {ds_id} records on std", lambda: ce_ids(bus, std) >= wanted)  # noqa: B023
    assert bus.procs["processor"].poll() is None, "the worker is still running"
    too_large = (
        f"databus_events_dead_lettered_total{{dataset={DOSSIERS.id},reason=record_too_large,"
        "stage=produce}"
    )
    # Counted once its batch is retired (state written, offsets committed).
    wait_for("both letters counted", lambda: bus.metric("processor", too_large) == 2)


def livez(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/livez", timeout=2) as resp:
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0  # not listening (yet, or any more)


def test_a_worker_whose_batch_loop_stops_fails_livez_and_exits(bus: Bus) -> None:
    group = f"broken-{uuid.uuid4().hex[:8]}"
    # One partition where the raw topics have several: writing the restore markers of
    # partitions 1.. fails, and the loop stops on it.
    ensure_topics(bus.settings, [TopicSpec(changelog_topic(group, DOSSIERS.id), 1, compact=True)])
    broken = Bus(bus.settings, {**bus.env, "DATABUS_PROCESSOR_GROUP": group}, bus.log_dir)
    broken.start("broken", "process")
    proc, port = broken.procs["broken"], broken.ports["broken"]
    seen: set[int] = set()
    try:

        def exited() -> bool:
            seen.add(livez(port))
            return proc.poll() is not None

        wait_for("the broken worker to exit", exited, timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(10)
    log = (bus.log_dir / "broken.log").read_text(errors="replace")
    assert proc.returncode != 0, log[-3000:]
    assert "the batch loop stopped on an error" in log
    assert 503 in seen, f"/livez answered {sorted(seen)} while the worker was exiting"
