"""Nothing silently dropped downstream (issue 15, point 5), through the real broker,
registry and processor loop: each hostile change lands on the DLQ with its reason, the
unknown procedure code reaches std with its flag, and every other change reaches std —
published = std + DLQ, nothing else.

The dossier dataset under a name of this module's own (private topics), standardized by
the catalog's dossier standardizer with the processor's clock, as ``databus process``
does.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
from bus_processes import read_topic
from confluent_kafka import Consumer, TopicPartition
from registry_clients import registry_client

from bus.metrics import Metrics
from bus.settings import Settings
from bus.topic_admin import TopicSpec, ensure_topics
from producers.publisher import Publisher
from producers.simulators import DossierSpec, generate_dossiers
from schemas.catalog import DOSSIERS as CATALOG_DOSSIERS
from schemas.codec import AvroDeserializer
from schemas.domain.reference import load_reference
from schemas.models.common import Op
from schemas.models.public_service import Dossier
from schemas.topics import changelog_topic, processor_topics
from stream_processors.alerts.facts import contributions
from stream_processors.batch_core import BatchCore
from stream_processors.batch_loop import BatchLoop
from stream_processors.pipeline import DatasetPipeline
from stream_processors.quality import field_presence
from stream_processors.standardizers import build_standardizer

pytestmark = pytest.mark.integration

DOSSIERS = replace(CATALOG_DOSSIERS, id=f"publicservice.dossiers_h4test{uuid.uuid4().hex[:6]}")


@pytest.fixture
def settings(stack_settings: Settings) -> Iterator[Settings]:
    s = stack_settings.model_copy(update={"processor_group": f"t-h4-{uuid.uuid4().hex[:8]}"})
    n = s.kafka.partitions
    ensure_topics(
        s,
        [
            *processor_topics(s),
            TopicSpec(changelog_topic(s.processor_group, DOSSIERS.id), n, compact=True),
            *(
                TopicSpec(t, n)
                for t in (DOSSIERS.raw_topic, DOSSIERS.std_topic, DOSSIERS.dlq_topic)
            ),
        ],
    )
    yield s


def _ends(settings: Settings, topic: str) -> dict[int, int]:
    last: dict[int, int] = {}
    for m in read_topic(settings, topic):
        last[m.partition()] = max(last.get(m.partition(), 0), m.offset() + 1)
    return last


def _start_group_at(settings: Settings, raw_start: dict[int, int]) -> None:
    probe = Consumer(
        {**settings.kafka.client_config(), "group.id": f"{settings.processor_group}-standardize"}
    )
    probe.commit(
        offsets=[
            TopicPartition(DOSSIERS.raw_topic, p, raw_start.get(p, 0))
            for p in range(settings.kafka.partitions)
        ],
        asynchronous=False,
    )
    probe.close()


def _wait(check: Callable[[], bool], thread: threading.Thread, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert thread.is_alive(), "the loop died"
        assert time.monotonic() < deadline, "timed out waiting for the loop"
        time.sleep(0.2)  # polling a condition with a deadline


def test_each_hostile_change_lands_where_it_should(settings: Settings) -> None:
    registry = registry_client(settings.schema_registry.client_config())
    std_start = _ends(settings, DOSSIERS.std_topic)
    dlq_start = _ends(settings, DOSSIERS.dlq_topic)
    _start_group_at(settings, _ends(settings, DOSSIERS.raw_topic))

    ref = load_reference()
    normal = generate_dossiers(
        DossierSpec(days=2, units=2, dossiers_per_unit_per_day=3.0, seed=41, bad_share=0.0), ref
    )
    template = normal[0].dossier
    assert template is not None
    now = datetime.now(UTC)
    tag = uuid.uuid4().hex[:8]

    def dossier(n: int, **changes: object) -> Dossier:
        return template.model_copy(update={"dossier_id": f"HS-H4-{tag}-{n}", **changes})

    pipeline = DatasetPipeline(
        DOSSIERS, registry, ref, standardizer=build_standardizer(CATALOG_DOSSIERS)
    )
    metrics = Metrics()
    core = BatchCore(
        {DOSSIERS.raw_topic: pipeline},
        frozenset(ref.receiving_units),
        contributions=contributions,
        presence=field_presence,
        event_id_window=settings.processor_event_id_window,
    )
    loop = BatchLoop(settings, metrics, core, {DOSSIERS.raw_topic: DOSSIERS}, batch_size=100)
    thread = threading.Thread(target=loop.run, daemon=True)
    thread.start()

    def outputs() -> int:
        return len(read_topic(settings, DOSSIERS.std_topic, std_start)) + len(
            read_topic(settings, DOSSIERS.dlq_topic, dlq_start)
        )

    reused_id = str(uuid.uuid4())
    try:
        with Publisher(settings, source_system="h4-test") as pub:
            for ev in normal:
                pub.publish(
                    DOSSIERS, ev.dossier, version=ev.version, op=ev.op, changed_at=ev.at,
                    event_id=ev.event_id,
                )  # fmt: skip
            # 1. an event id reused by another entity: the first user keeps it...
            pub.publish(DOSSIERS, dossier(1), version=1, changed_at=now, event_id=reused_id)
            pub.flush()
            _wait(lambda: outputs() >= len(normal) + 1, thread)
            # ...the second (another dossier, another partition) is refused
            pub.publish(DOSSIERS, dossier(2), version=1, changed_at=now, event_id=reused_id)
            # 2. an update whose before and after are different dossiers
            mismatch = pub.publish(
                DOSSIERS, dossier(4), before=dossier(3), version=2, op=Op.UPDATE, changed_at=now
            )
            # 3. an 1899 received date (Excel's day 0)
            zero_date = pub.publish(
                DOSSIERS, dossier(5, received_at="30/12/1899"), version=1, changed_at=now
            )
            # 4. a change time a month ahead of the processor's clock
            ahead = pub.publish(
                DOSSIERS, dossier(6), version=1, changed_at=now + timedelta(days=30)
            )
            # 5. a procedure code no list knows: kept, flagged
            flagged_id = pub.publish(
                DOSSIERS, dossier(7, procedure_code="9.999999"), version=1, changed_at=now
            )
            pub.flush()
        published = len(normal) + 6
        # Outputs are acknowledged before the offsets move on: wait for all of them.
        _wait(lambda: outputs() >= published, thread)
    finally:
        loop.stop_event.set()
        thread.join(60)
    expected_dlq = {
        reused_id: "event_id_reused",
        mismatch: "entity_mismatch",
        zero_date: "timestamp_before_earliest",
        ahead: "far_future_timestamp",
    }

    std = read_topic(settings, DOSSIERS.std_topic, std_start)
    dlq = read_topic(settings, DOSSIERS.dlq_topic, dlq_start)
    assert len(std) + len(dlq) == published, "each change exactly once: std or DLQ"

    letters = {dict(m.headers())["ce_id"].decode(): dict(m.headers()) for m in dlq}
    reasons = {k: h["databus.errors.reason"].decode() for k, h in letters.items()}
    assert reasons == expected_dlq
    assert letters[reused_id]["databus.errors.stage"] == b"dedup"
    assert {m.key() for m in dlq if dict(m.headers())["ce_id"].decode() == reused_id} == {
        f"HS-H4-{tag}-2".encode()
    }, "the second user of the id is the one refused"
    assert letters[ahead]["databus.errors.field"] == b"source.ts_ms"
    assert letters[zero_date]["databus.errors.field"] == b"after.received_at"
    assert letters[mismatch]["databus.errors.field"] == b"after.dossier_id"

    decode = AvroDeserializer(registry)
    by_id = {dict(m.headers())["ce_originid"].decode(): decode(m.value()) for m in std}
    assert set(by_id) == {e.event_id for e in normal} | {reused_id, flagged_id}
    assert by_id[reused_id]["after"]["dossier_id"] == f"HS-H4-{tag}-1"
    assert by_id[flagged_id]["after"]["procedure_code"] == "9.999999"
    flagged = [
        event_id
        for event_id, value in by_id.items()
        if "procedure_not_in_list" in (value["after"] or value["before"])["quality_flags"]
    ]
    assert flagged == [flagged_id], "the simulator's procedures are all in the sample list"
