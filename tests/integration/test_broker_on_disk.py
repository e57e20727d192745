"""The embedded broker's records on disk: the object-store stand-in over HTTP, a broker
restarted on its data, and retention enforced (issue 15, point 6)."""

from __future__ import annotations

import hashlib
import stat
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from bus_processes import wait_for
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from databus.local_stack import ManagedProcess, start_broker, start_object_store
from databus.standins.object_store import ObjectFiles, sweep

S3 = "{http://s3.amazonaws.com/doc/2006-03-01/}"


@pytest.fixture
def store(tmp_path: Path) -> Iterator[str]:
    proc, url = start_object_store(tmp_path)
    try:
        yield url
    finally:
        proc.stop()


def _keys(xml: str) -> tuple[list[str], list[str], str | None]:
    root = ET.fromstring(xml)
    keys = [e.text or "" for e in root.iter(f"{S3}Key")]
    prefixes = [e.text or "" for e in root.iter(f"{S3}Prefix") if e is not root.find(f"{S3}Prefix")]
    token = root.findtext(f"{S3}NextContinuationToken")
    return keys, prefixes, token


def test_object_store_speaks_the_s3_calls_the_broker_makes(store: str, tmp_path: Path) -> None:
    with httpx.Client(base_url=store) as http:
        put = http.put("/tansu/a/watermark.json", content=b"v1", headers={"If-None-Match": "*"})
        assert put.status_code == 200
        assert put.headers["ETag"] == f'"{hashlib.md5(b"v1").hexdigest()}"'
        # create-only twice: refused; replace with a stale ETag: refused; with the right one: done
        again = http.put("/tansu/a/watermark.json", content=b"v0", headers={"If-None-Match": "*"})
        assert again.status_code == 412 and b"PreconditionFailed" in again.content
        stale = http.put("/tansu/a/watermark.json", content=b"v2", headers={"If-Match": '"nope"'})
        assert stale.status_code == 412
        ok = http.put(
            "/tansu/a/watermark.json", content=b"v2", headers={"If-Match": put.headers["ETag"]}
        )
        assert ok.status_code == 200
        got = http.get("/tansu/a/watermark.json")
        assert got.content == b"v2" and got.headers["ETag"] == ok.headers["ETag"]
        assert http.head("/tansu/a/watermark.json").headers["Content-Length"] == "2"

        for i in range(5):
            http.put(f"/tansu/a/records/{i:020}.batch", content=b"x" * i)
        page1 = http.get(
            "/tansu", params={"list-type": "2", "prefix": "a/records/", "max-keys": "2"}
        )
        keys, _, token = _keys(page1.text)
        assert keys == [f"a/records/{i:020}.batch" for i in (0, 1)] and token
        rest = http.get(
            "/tansu", params={"list-type": "2", "prefix": "a/records/", "continuation-token": token}
        )
        assert _keys(rest.text)[0] == [f"a/records/{i:020}.batch" for i in (2, 3, 4)]
        folders = http.get("/tansu", params={"list-type": "2", "prefix": "a/", "delimiter": "/"})
        keys, prefixes, _ = _keys(folders.text)
        assert keys == ["a/watermark.json"] and prefixes == ["a/records/"]

        assert http.delete("/tansu/a/records/00000000000000000000.batch").status_code == 204
        listed = http.get("/tansu", params={"list-type": "2", "prefix": "a/records/"})
        assert _keys(listed.text)[0] == [f"a/records/{i:020}.batch" for i in (1, 2, 3, 4)]
        # a GET with the ETag the caller holds: not modified
        held = http.get("/tansu/a/watermark.json", headers={"If-None-Match": ok.headers["ETag"]})
        assert held.status_code == 304
        missing = http.get("/tansu/a/records/00000000000000000000.batch")
        assert missing.status_code == 404 and b"NoSuchKey" in missing.content
        # no way out of the store's directory
        assert http.get("/tansu/a/../../../etc/passwd").status_code == 404
    # personal data at rest: owner-only files and directories
    stored = tmp_path / "broker" / "tansu" / "a" / "watermark.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert stat.S_IMODE(stored.parent.stat().st_mode) == 0o700


def _produce(bootstrap: str, topic: str, values: list[bytes], partition: int = 0) -> None:
    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 5})
    for value in values:
        producer.produce(topic, value=value, partition=partition)
    assert producer.flush(30) == 0


def _read(
    bootstrap: str, topic: str, count: int, start: int = OFFSET_BEGINNING
) -> list[tuple[int, bytes]]:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"read-{time.monotonic_ns()}"})
    consumer.assign([TopicPartition(topic, 0, start)])
    got: list[tuple[int, bytes]] = []
    deadline = time.monotonic() + 60
    try:
        while len(got) < count and time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is not None and msg.error() is None:
                got.append((msg.offset() or 0, msg.value() or b""))
    finally:
        consumer.close()
    return got


def _create(bootstrap: str, *topics: NewTopic) -> None:
    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics(list(topics)).values():
        future.result(30)


def _commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group})
    try:
        consumer.commit(offsets=[TopicPartition(topic, 0, offset)], asynchronous=False)
    finally:
        consumer.close()


def test_a_broker_restarted_on_its_data_has_its_records_and_offsets(tmp_path: Path) -> None:
    broker, bootstrap = start_broker(tmp_path, storage="disk")
    try:
        _create(bootstrap, NewTopic("orders", 1, 1))
        _produce(bootstrap, "orders", [f"o{i}".encode() for i in range(300)])
        _commit(bootstrap, "billing", "orders", 120)
    finally:
        broker.stop()
    broker, bootstrap = start_broker(tmp_path, storage="disk")
    try:
        assert [v for _, v in _read(bootstrap, "orders", 300)] == [
            f"o{i}".encode() for i in range(300)
        ]
        consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "billing"})
        try:
            [tp] = consumer.committed([TopicPartition("orders", 0)], timeout=30)
        finally:
            consumer.close()
        assert tp.offset == 120
        _produce(bootstrap, "orders", [b"after"])  # offsets go on from where they were
        assert _read(bootstrap, "orders", 1, start=300) == [(300, b"after")]
    finally:
        broker.stop()


def test_retention_trims_old_batches_and_readers_start_at_the_first_kept(tmp_path: Path) -> None:
    broker, bootstrap = start_broker(tmp_path, storage="disk", sweep_s=3600)  # swept by hand
    files = ObjectFiles(tmp_path / "broker")
    try:
        _create(
            bootstrap,
            NewTopic("dead-letters", 1, 1, config={"retention.ms": "1000"}),
            NewTopic("events", 1, 1, config={"retention.ms": "-1"}),
        )
        for i in range(5):  # five flushes: five batches per topic
            _produce(bootstrap, "dead-letters", [f"d{i}-{j}".encode() for j in range(50)])
            _produce(bootstrap, "events", [f"e{i}-{j}".encode() for j in range(50)])
        _produce(bootstrap, "dead-letters", [b"fresh"])
        _commit(bootstrap, "sink", "events", 150)  # the one group reading events is at 150

        # swept as if 5 s had passed: every dead letter is past its 1 s retention, but the
        # newest batch stays; every undelivered byte of events is over a 1-byte budget
        result = sweep(files, budget_bytes=1, now_ms=int(time.time() * 1000) + 5000)
        assert result.deleted == 8  # 5 expired dead-letter batches; 3 delivered event ones
        assert result.over_budget  # what is left of events is not delivered yet: it stays

        assert _read(bootstrap, "dead-letters", 1) == [(250, b"fresh")]
        events = _read(bootstrap, "events", 100)
        assert [o for o, _ in events] == list(range(150, 250))
        # nothing the group still has to read went
        assert events[0][1] == b"e3-0"
    finally:
        broker.stop()


def test_the_sweep_runs_by_itself_and_the_broker_log_stays_clean(tmp_path: Path) -> None:
    broker, bootstrap = start_broker(tmp_path, storage="disk", sweep_s=0.5)
    records = tmp_path / "broker" / "tansu" / "clusters"
    try:
        _create(bootstrap, NewTopic("ticks", 1, 1, config={"retention.ms": "500"}))
        for i in range(4):
            _produce(bootstrap, "ticks", [f"t{i}".encode()])
        wait_for(
            "the expired batches to be trimmed",
            lambda: len(list(records.glob("*/topics/ticks/partitions/*/records/*.batch"))) == 1,
            timeout=30,
        )
        assert _read(bootstrap, "ticks", 1) == [(3, b"t3")]
    finally:
        broker.stop()
    assert _storage_log(broker).count("retention: trimmed") >= 1
    assert "panicked" not in broker.log_path.read_text()


def test_small_batches_are_merged_and_every_record_stays_readable(tmp_path: Path) -> None:
    """A partition written one record per produce request gets a file per record; the
    broker lists the folder on every fetch, and past a couple of thousand files reads
    stall. The sweep merges the older small batches: the same records at the same
    offsets, read from the beginning (the earliest offset stays 0) and from the middle."""
    broker, bootstrap = start_broker(tmp_path, storage="disk", sweep_s=0.5)
    folder = tmp_path / "broker" / "tansu" / "clusters"

    def files() -> list[Path]:
        return list(folder.glob("*/topics/feed/partitions/*/records/*.batch"))

    try:
        _create(bootstrap, NewTopic("feed", 1, 1))
        producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 0})
        for i in range(300):
            producer.produce("feed", value=b"r%d" % i, key=b"k%d" % (i % 7), partition=0)
            producer.flush(30)  # a batch each
        wait_for("the small batches to be merged", lambda: len(files()) <= 10, timeout=60)
        assert _read(bootstrap, "feed", 300) == [(i, b"r%d" % i) for i in range(300)]
        assert _read(bootstrap, "feed", 50, start=250) == [(i, b"r%d" % i) for i in range(250, 300)]
        _produce(bootstrap, "feed", [b"after"])  # the broker goes on writing after them
        assert _read(bootstrap, "feed", 301)[-1] == (300, b"after")
    finally:
        broker.stop()
    assert "small record batches merged" in _storage_log(broker)
    assert "panicked" not in broker.log_path.read_text()


def _storage_log(broker: ManagedProcess) -> str:
    assert broker.companion is not None
    return broker.companion.log_path.read_text()
