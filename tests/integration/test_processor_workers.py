"""Two processor workers share the work; one is killed mid-stream and replaced.

A stack of its own. Two ``databus process`` workers join one group; half the
history is published, one worker is killed with SIGKILL (no clean shutdown, no
final commit), the rest is published and a replacement worker joins. Checked from
the topics, not from the processes' counters (a killed process takes its counters
with it): every valid event reaches the std topic (possibly twice: at-least-once),
every invalid one the DLQ, and the alert state survives — the designed-overdue
units are each raised once, nobody else, and nothing was resolved.
"""

from __future__ import annotations

import signal
from collections import Counter
from collections.abc import Iterator

import pytest
from bus_processes import Bus, own_bus, read_topic, wait_for
from registry_clients import registry_client

from producers.publisher import Publisher
from producers.simulators import DossierSpec, generate_dossiers, publish_records
from schemas.catalog import ALERTS_TOPIC, DOSSIERS
from schemas.codec import AvroDeserializer
from schemas.domain.reference import load_reference

pytestmark = pytest.mark.integration

OVERDUE_RULE = "dossier_overdue_rate"


@pytest.fixture
def bus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Bus]:
    with own_bus(tmp_path_factory.mktemp("workers")) as b:
        yield b


def ids_on(bus: Bus, topic: str) -> list[str]:
    """The source events' ids: a std event's origin (``ce_originid``), a letter's ``ce_id``."""
    found = [dict(m.headers()) for m in read_topic(bus.settings, topic)]
    return [(h.get("ce_originid") or h["ce_id"]).decode() for h in found]


def test_a_killed_worker_is_replaced_without_loss(bus: Bus) -> None:
    history = generate_dossiers(
        DossierSpec(days=21, units=8, dossiers_per_unit_per_day=2.0, seed=5), load_reference()
    )
    valid = {e.event_id for e in history if e.expect_reason is None}
    invalid = {e.event_id for e in history if e.expect_reason is not None}
    designed = {
        str(e.truth["receiving_unit_code"])
        for e in history
        if e.truth["overdue_unit"] and e.expect_reason is None
    }
    assert invalid and designed

    bus.start("worker-a", "process")
    bus.start("worker-b", "process")
    half = len(history) // 2
    with Publisher(bus.settings, source_system="workers-test") as pub:
        publish_records(pub, history[:half])
    wait_for(
        "both workers to standardize some of the first half",
        lambda: len(set(ids_on(bus, DOSSIERS.std_topic))) >= half // 3,
    )
    bus.procs["worker-a"].send_signal(signal.SIGKILL)
    bus.procs["worker-a"].wait(10)
    del bus.procs["worker-a"]
    with Publisher(bus.settings, source_system="workers-test") as pub:
        publish_records(pub, history[half:])
    bus.start("worker-c", "process")

    wait_for(
        "every valid event on the std topic",
        lambda: set(ids_on(bus, DOSSIERS.std_topic)) >= valid,
        timeout=240,
    )
    wait_for(
        "every invalid event in the DLQ",
        lambda: set(ids_on(bus, DOSSIERS.dlq_topic)) >= invalid,
        timeout=120,
    )
    assert set(ids_on(bus, DOSSIERS.std_topic)) == valid, "nothing else on the std topic"

    decode = AvroDeserializer(registry_client(bus.settings.schema_registry.client_config()))

    def overdue() -> list[dict[str, object]]:
        alerts = [decode(m.value()) for m in read_topic(bus.settings, ALERTS_TOPIC)]
        return [a for a in alerts if a["rule"] == OVERDUE_RULE]

    wait_for(
        "the designed-overdue units' alerts",
        lambda: {a["unit_code"] for a in overdue()} >= designed,
        timeout=120,
    )
    alerts = overdue()
    raised = Counter(a["unit_code"] for a in alerts if a["state"] == "RAISED")
    assert raised == Counter({unit: 1 for unit in designed}), "each raised once, nobody else"
    assert not [a for a in alerts if a["state"] == "RESOLVED"], "no state lost and re-raised"
