"""Nothing lost while the broker is away: the Publisher's durable spool, end to end.

Each test starts its OWN embedded broker (it stops and restarts it); the schema
registry is the session's, which keeps its schemas in the session broker.
Tansu keeps topics in memory, so a restarted broker is empty: what the first
incarnation received is consumed before it stops.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from bus.errors import ConfigError, SpoolFullError
from bus.metrics import Metrics
from bus.settings import Settings, load_settings
from bus.topic_admin import TopicSpec, ensure_topics
from databus.local_stack import ManagedProcess, start_broker
from producers.publisher import Publisher
from producers.simulators import DossierEvent, DossierSpec, generate_dossiers
from producers.spool import Spool
from schemas.catalog import DOSSIERS
from schemas.domain.reference import load_reference

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
TOPIC = DOSSIERS.raw_topic
PARTITIONS = 4
N = 200
HALF = 100
MESSAGE_TIMEOUT_MS = 1500  # failures surface quickly while the broker is away
FAST_FAIL: dict[str, Any] = {"message.timeout.ms": MESSAGE_TIMEOUT_MS}
SIM = {
    "days": 6,
    "units": 6,
    "dossiers_per_unit_per_day": 4,
    "bad_share": 0,
    "seed": 11,
    "end": "2025-08-15T10:00:00+00:00",
}


def sim_events(sim: dict[str, Any]) -> list[DossierEvent]:
    config = DossierSpec(**{**sim, "end": datetime.fromisoformat(sim["end"])})
    return generate_dossiers(config, load_reference())[:N]


# The publishing process: reads commands on stdin, answers one line per command.
PUBLISHER_SCRIPT = """
import json, sys
from datetime import datetime
from bus.settings import load_settings
from producers.simulators import DossierSpec, generate_dossiers
from producers.publisher import Publisher
from schemas.catalog import DOSSIERS
from schemas.domain.reference import load_reference

sim = json.loads(sys.argv[1])
spec = DossierSpec(**{**sim, "end": datetime.fromisoformat(sim["end"])})
events = generate_dossiers(spec, load_reference())
pub = Publisher(load_settings(), source_system="spool-test",
                **{"message.timeout.ms": int(sys.argv[2])})
print("ready", pub.spooled, flush=True)
for line in sys.stdin:
    cmd, *args = line.split()
    if cmd == "publish":
        start, stop = int(args[0]), int(args[1])
        for ev in events[start:stop]:
            pub.publish(DOSSIERS, ev.dossier, version=ev.version, op=ev.op,
                        changed_at=ev.at, event_id=ev.event_id)
        print("accepted", stop, pub.spooled, flush=True)
    elif cmd == "flush":
        pub.flush(float(args[0]))
        print("flushed", pub.spooled, flush=True)
    elif cmd == "close":
        pub.close(float(args[0]))
        print("closed", flush=True)
        break
"""


class PublisherProcess:
    """A publisher in its own process, driven line by line."""

    def __init__(self, env: dict[str, str], log_path: Path) -> None:
        self._log: IO[bytes] = log_path.open("ab")
        self.popen = subprocess.Popen(
            [sys.executable, "-c", PUBLISHER_SCRIPT, json.dumps(SIM), str(MESSAGE_TIMEOUT_MS)],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.log_path = log_path
        # A reader thread, so that waiting for an answer has a deadline.
        self._lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self._lines.put(line)
        self._lines.put("(exited)")

    def ask(self, command: str | None, expect: str, timeout: float = 60.0) -> list[str]:
        """Send ``command`` and return the answer's words; fail after ``timeout``."""
        assert self.popen.stdin is not None
        if command is not None:
            self.popen.stdin.write(command + "\n")
            self.popen.stdin.flush()
        try:
            line = self._lines.get(timeout=timeout)
        except queue.Empty:
            line = "(no answer in time)"
        words = line.split()
        if not words or words[0] != expect:
            self.kill()
            pytest.fail(
                f"publisher answered {line!r} to {command!r}; its log ends with:\n"
                + "\n".join(self.log_path.read_text(errors="replace").splitlines()[-20:])
            )
        return words[1:]

    def kill(self) -> None:
        if self.popen.poll() is None:
            os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(10)
        for stream in (self.popen.stdin, self.popen.stdout):
            if stream is not None:
                stream.close()
        self._log.close()


def consume_ids(
    bootstrap: str, want: set[str], timeout: float = 30.0, idle_s: float = 0.5
) -> list[Message]:
    """Every record of the topic from the start, until ``want`` was seen and it went quiet."""
    consumer = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"spooltest-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 10,
        }
    )
    consumer.assign([TopicPartition(TOPIC, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    records: list[Message] = []
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    last = time.monotonic()
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(0.1)
            if msg is None:
                if want <= seen and time.monotonic() - last > idle_s:
                    return records
                continue
            assert msg.error() is None, msg.error()
            records.append(msg)
            seen.add(ce_id(msg))
            last = time.monotonic()
    finally:
        consumer.close()
    pytest.fail(f"{len(want - seen)} of {len(want)} events not consumed within {timeout:.0f} s")


def ce_id(msg: Message) -> str:
    value = dict(msg.headers() or [])["ce_id"]
    assert isinstance(value, bytes)
    return value.decode()


def broker_settings(bootstrap: str, registry_url: str, **more: Any) -> Settings:
    return load_settings(
        kafka={"bootstrap_servers": bootstrap, "partitions": PARTITIONS},
        schema_registry={"url": registry_url},
        **more,
    )


def create_topic(bootstrap: str, registry_url: str) -> None:
    ensure_topics(broker_settings(bootstrap, registry_url), [TopicSpec(TOPIC, PARTITIONS)])


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[list[ManagedProcess]]:
    """Brokers this test starts; whatever is still running is stopped at the end."""
    procs: list[ManagedProcess] = []
    yield procs
    for proc in procs:
        proc.stop()


def test_nothing_lost_across_broker_outage_and_publisher_kill(
    tmp_path: Path, registry_url: str, own_broker: list[ManagedProcess]
) -> None:
    events = sim_events(SIM)
    assert len(events) == N
    spool_path = tmp_path / "spool" / "publisher.db"
    broker, bootstrap = start_broker(tmp_path / "broker-1")
    own_broker.append(broker)
    port = int(bootstrap.rsplit(":", 1)[1])
    create_topic(bootstrap, registry_url)
    env = {
        **os.environ,
        "DATABUS_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
        "DATABUS_SCHEMA_REGISTRY__URL": registry_url,
        "DATABUS_SPOOL__PATH": str(spool_path),
        "DATABUS_SPOOL__MAX_BYTES": str(10 * 1024 * 1024),
    }

    # 1. Broker up: the first half is delivered and leaves the spool.
    first = PublisherProcess(env, tmp_path / "publisher-1.log")
    try:
        assert first.ask(None, "ready") == ["0"]
        first.ask(f"publish 0 {HALF}", "accepted")
        assert first.ask("flush 30", "flushed") == ["0"]
        # Memory storage: read what this broker got before it goes away.
        phase1 = consume_ids(bootstrap, {ev.event_id for ev in events[:HALF]})

        # 2. Broker gone: publishing goes on, into the spool; then the publisher dies.
        broker.stop()
        assert first.ask(f"publish {HALF} {N}", "accepted") == [str(N), str(N - HALF)]
    finally:
        first.kill()  # SIGKILL: no close(), no flush
    assert first.popen.returncode == -signal.SIGKILL

    spool = Spool(spool_path, 10 * 1024 * 1024)  # what survived the kill
    assert [r.event_id for r in spool.peek(N)] == [ev.event_id for ev in events[HALF:]]
    spool.close()

    # 3. Broker back (empty, same address), a new publisher on the same spool drains it.
    broker2, bootstrap2 = start_broker(tmp_path / "broker-2", port=port)
    own_broker.append(broker2)
    assert bootstrap2 == bootstrap
    create_topic(bootstrap, registry_url)
    second = PublisherProcess(env, tmp_path / "publisher-2.log")
    try:
        assert second.ask(None, "ready") == [str(N - HALF)]
        assert second.ask("flush 30", "flushed") == ["0"]
        second.ask("close 10", "closed")
        assert second.popen.wait(10) == 0
    finally:
        second.kill()
    phase2 = consume_ids(bootstrap, {ev.event_id for ev in events[HALF:]})

    # Every event at least once; after dedup by ce_id exactly the N, in per-key order.
    received = [*phase1, *phase2]
    ids = [ce_id(m) for m in received]
    assert set(ids) == {ev.event_id for ev in events}
    duplicates = len(ids) - len(set(ids))
    print(f"{len(ids)} records consumed, {duplicates} duplicates")
    assert duplicates <= len(events) - HALF  # only what was in flight can repeat
    version_of = {ev.event_id: (ev.dossier.dossier_id, ev.version) for ev in events}
    versions: dict[str, list[int]] = defaultdict(list)
    first_seen: set[str] = set()
    for m in received:
        event_id = ce_id(m)
        if event_id in first_seen:
            continue
        first_seen.add(event_id)
        key, version = version_of[event_id]
        assert m.key() == key.encode()
        versions[key].append(version)
    for key, got in versions.items():
        assert got == sorted(got), f"{key} arrived out of order: {got}"
    expected: dict[str, list[int]] = defaultdict(list)
    for ev in events:
        expected[ev.dossier.dossier_id].append(ev.version)
    assert versions == expected
    assert not Spool(spool_path, 10 * 1024 * 1024)  # drained


def test_live_publisher_rides_out_a_broker_restart(
    tmp_path: Path, registry_url: str, own_broker: list[ManagedProcess]
) -> None:
    """One process throughout: failed deliveries are re-sent once the broker is back."""
    events = sim_events(SIM)[:60]
    broker, bootstrap = start_broker(tmp_path / "broker-1")
    own_broker.append(broker)
    port = int(bootstrap.rsplit(":", 1)[1])
    create_topic(bootstrap, registry_url)
    settings = broker_settings(
        bootstrap, registry_url, spool={"path": tmp_path / "spool.db", "max_bytes": 1 << 22}
    )
    metrics = Metrics()
    pub = Publisher(settings, source_system="spool-test", metrics=metrics, **FAST_FAIL)

    def failures() -> float:
        found = metrics.registry.get_sample_value(
            "databus_delivery_failures_total", {"dataset": DOSSIERS.id}
        )
        return found or 0.0

    try:
        broker.stop()
        for ev in events:
            pub.publish(DOSSIERS, ev.dossier, version=ev.version, op=ev.op, event_id=ev.event_id)
        assert pub.spooled == len(events)
        # Let deliveries fail at least once while the broker is away.
        deadline = time.monotonic() + 10 * MESSAGE_TIMEOUT_MS / 1000
        while not failures() and time.monotonic() < deadline:
            pub.poll(0.1)
        assert failures() > 0
        assert pub.spooled == len(events)  # a failed delivery keeps its row
        broker2, _ = start_broker(tmp_path / "broker-2", port=port)
        own_broker.append(broker2)
        create_topic(bootstrap, registry_url)
        pub.flush(timeout=30)
        assert pub.spooled == 0
    finally:
        pub.close(timeout=5)
    received = consume_ids(bootstrap, {ev.event_id for ev in events})
    ids = [ce_id(m) for m in received]
    assert set(ids) == {ev.event_id for ev in events}
    order: dict[bytes, list[int]] = defaultdict(list)
    version_of = {ev.event_id: ev.version for ev in events}
    done: set[str] = set()
    for m in received:
        if ce_id(m) not in done:
            done.add(ce_id(m))
            order[m.key() or b""].append(version_of[ce_id(m)])
    assert all(v == sorted(v) for v in order.values())


def test_full_spool_refuses_and_loses_nothing(tmp_path: Path, registry_url: str) -> None:
    """No broker at all: the spool fills to its bound, then the caller is told."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # bound, never listening: connections are refused
        port = int(sock.getsockname()[1])
        path = tmp_path / "spool.db"
        settings = broker_settings(
            f"127.0.0.1:{port}", registry_url, spool={"path": path, "max_bytes": 8000}
        )
        events = sim_events(SIM)
        pub = Publisher(settings, source_system="spool-test", **FAST_FAIL)
        accepted: list[str] = []
        with pytest.raises(SpoolFullError) as info:
            for ev in events:
                accepted.append(
                    pub.publish(
                        DOSSIERS, ev.dossier, version=ev.version, op=ev.op, event_id=ev.event_id
                    )
                )
        assert 0 < len(accepted) < len(events)
        err = info.value
        assert err.retriable and str(path) in str(err) and "DATABUS_SPOOL__MAX_BYTES" in str(err)
        assert pub.spooled == len(accepted)
        with pytest.raises(SpoolFullError):  # still full: nothing accepted past the bound
            pub.publish(DOSSIERS, events[-1].dossier, version=1)
        assert pub.spooled == len(accepted)
        started = time.monotonic()
        pub.close(timeout=1)  # cannot deliver: logs and keeps them, does not raise
        assert time.monotonic() - started < 10
    spool = Spool(path, 8000)
    assert [r.event_id for r in spool.peek(1000)] == accepted
    assert spool.size_bytes <= 8000
    spool.close()


def test_publisher_without_spool_setting_has_none(registry_url: str) -> None:
    settings = broker_settings("127.0.0.1:9", registry_url)
    assert settings.spool.path is None
    pub = Publisher(settings, source_system="spool-test")
    assert pub.spool_path is None and pub.spooled == 0
    pub.close(timeout=1)


def test_one_publisher_per_spool(tmp_path: Path, registry_url: str) -> None:
    settings = broker_settings(
        "127.0.0.1:9", registry_url, spool={"path": tmp_path / "s.db", "max_bytes": 1 << 20}
    )
    pub = Publisher(settings, source_system="spool-test")
    try:
        with pytest.raises(ConfigError, match="in use by another process"):
            Publisher(settings, source_system="spool-test")
    finally:
        pub.close(timeout=1)
    Publisher(settings, source_system="spool-test").close(timeout=1)  # free again
