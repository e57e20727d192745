"""``databus status``'s computations: lag, groups shown, dead-letter rows, open alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from databus.ops_status import (
    DlqCount,
    GroupStatus,
    Member,
    TopicLag,
    dlq_counts,
    is_reader_group,
    lag_rows,
    open_alerts_from_records,
    open_alerts_from_store,
    partition_lag,
    shown_groups,
    status_document,
    topic_lags,
)
from schemas.catalog import DATASETS

T0 = datetime(2025, 10, 1, 8, 0, tzinfo=UTC)
T0_MS = int(T0.timestamp() * 1000)


def test_a_complete_count_is_the_lag_whatever_the_watermark_says() -> None:
    # Tansu's high watermark lags the real end: the count wins.
    lag = partition_lag("t", 0, committed=10, high=11, counted=25, complete=True)
    assert (lag.lag, lag.exact, lag.committed) == (25, True, 10)


def test_an_unfinished_count_is_a_lower_bound() -> None:
    assert partition_lag("t", 0, committed=10, high=100, counted=5, complete=False).lag == 90
    assert partition_lag("t", 0, committed=10, high=12, counted=50, complete=False).lag == 50
    # Nothing committed: everything from the start is lag.
    assert partition_lag("t", 0, committed=None, high=40, counted=3, complete=False).lag == 40
    assert partition_lag("t", 0, committed=None, high=None, counted=3, complete=False).lag == 3
    assert not partition_lag("t", 0, committed=5, high=1, counted=0, complete=False).exact
    assert partition_lag("t", 0, committed=5, high=1, counted=0, complete=False).lag == 0


def test_topic_lags_sum_partitions_and_stay_exact_only_if_all_are() -> None:
    parts = [
        partition_lag("b", 0, committed=0, high=None, counted=2, complete=True),
        partition_lag("a", 1, committed=0, high=None, counted=3, complete=True),
        partition_lag("a", 0, committed=0, high=9, counted=1, complete=False),
    ]
    lags = topic_lags(parts)
    assert [(t.topic, t.partitions, t.lag, t.exact) for t in lags] == [
        ("a", 2, 12, False),
        ("b", 1, 2, True),
    ]


def test_groups_without_process_or_commit_and_readers_are_not_shown() -> None:
    groups = [
        "databus-processor",
        "databus-processor-standardize",
        "databus-sink-ioc",
        "databus-reconcile-1234",
        "reader-abc",
        "gone",
    ]
    members = {"databus-processor": 1, "databus-reconcile-1234": 1}
    committed = {"databus-processor-standardize": 4, "databus-sink-ioc": 2, "reader-abc": 1}
    assert shown_groups(groups, members, committed) == [
        "databus-processor",
        "databus-processor-standardize",
        "databus-sink-ioc",
    ]
    assert is_reader_group("databus-status-ff") and not is_reader_group("databus-share")


def test_dlq_rows_cover_every_dataset_and_the_sinks_present() -> None:
    ds = DATASETS["publicservice.dossiers"]
    topics = ["sink.ioc.dlq.v1", "sink.sql.dlq.v1", "not.a.dlq.v1", "sink.x.raw.v1", ds.raw_topic]
    rows = dlq_counts(DATASETS.values(), topics, {ds.dlq_topic: 3, "sink.ioc.dlq.v1": 2})
    assert len(rows) == len(DATASETS) + 2
    assert [r.source for r in rows[: len(DATASETS)]] == sorted(DATASETS)
    assert rows[-2:] == [
        DlqCount("sink.ioc.dlq.v1", "sink:ioc", 2),
        DlqCount("sink.sql.dlq.v1", "sink:sql", 0),
    ]
    assert next(r for r in rows if r.source == ds.id) == DlqCount(ds.dlq_topic, ds.id, 3)
    assert sum(r.count for r in rows) == 5


def alert(
    alert_id: str, state: str, ts: int, severity: str = "WARNING", **more: object
) -> dict[str, object]:
    return {
        "alert_id": alert_id,
        "rule": "dossier_overdue_rate",
        "state": state,
        "severity": severity,
        "dataset": "publicservice.dossiers",
        "unit_code": "DNA.STP",
        "value": 0.4,
        "threshold": 0.3,
        "message": "vi / en",
        "ts_ms": datetime.fromtimestamp((T0_MS + ts) / 1000, UTC),
        **more,
    }


def test_open_alerts_are_the_newest_transition_unless_resolved() -> None:
    records = [
        alert("a", "RAISED", 0),
        alert("b", "RAISED", 0),
        alert("a", "UPDATED", 1000, severity="CRITICAL"),
        alert("b", "RESOLVED", 2000),
        alert("c", "RAISED", 500),
        alert("c", "RESOLVED", 500),  # a tie: the resolution outranks the raise
        alert("d", "RESOLVED", 100),
        alert("d", "UPDATED", 50),  # late and older: does not reopen it
        alert("e", "RAISED", 3000, subject="DNA.SYT", message_en="overdue"),
    ]
    found = open_alerts_from_records(records)
    assert [(a.alert_id, a.state, a.severity) for a in found] == [
        ("a", "UPDATED", "CRITICAL"),  # most severe first
        ("e", "RAISED", "WARNING"),
    ]
    assert found[1].subject == "DNA.SYT" and found[1].message == "overdue"
    assert found[0].subject == "DNA.STP"  # revision-1 records: the unit code
    assert found[0].since == datetime.fromtimestamp((T0_MS + 1000) / 1000, UTC)


def test_open_alerts_from_the_ioc_store_hash() -> None:
    stored: dict[bytes | str, bytes | str] = {
        b"x": json.dumps({**alert("x", "RAISED", 0), "ts_ms": T0_MS}).encode(),
        b"y": json.dumps({**alert("y", "UPDATED", 0, severity="CRITICAL"), "ts_ms": T0_MS}),
        b"broken": b"not json",
    }
    found = open_alerts_from_store(stored)
    assert [a.alert_id for a in found] == ["y", "x"]
    assert found[1].since == T0 and found[1].value == 0.4


def test_the_status_document_is_plain_json() -> None:
    group = GroupStatus(
        "databus-processor-standardize",
        "stable",
        [Member("m-1", "c", "/127.0.0.1", 4)],
        topic_lags([partition_lag("t", 0, committed=1, high=None, counted=7, complete=True)]),
    )
    doc = status_document(
        [group],
        [DlqCount("x.dlq.v1", "x", 2)],
        open_alerts_from_records([alert("a", "RAISED", 0)]),
        alerts_from="alerts.v1",
        at=T0,
    )
    again = json.loads(json.dumps(doc))
    assert again["groups"][0]["lag"] == 7
    assert again["groups"][0]["members"][0]["member_id"] == "m-1"
    assert again["groups"][0]["topics"] == [
        {"topic": "t", "partitions": 1, "lag": 7, "exact": True}
    ]
    assert again["dlq_total"] == 2
    assert again["open_alerts"][0]["since"] == T0.isoformat()
    assert again["alerts_from"] == "alerts.v1"


def test_the_lag_table_lists_what_is_left_and_folds_the_topics_at_zero() -> None:
    topics = [TopicLag("a.raw", 4, 0, True), TopicLag("b.raw", 4, 12, True)]
    topics += [TopicLag("c.raw", 4, 3, False), TopicLag("d.raw", 4, 0, True)]
    busy = GroupStatus("loop", "stable", [], topics)
    idle = GroupStatus("sink", "stable", [], [TopicLag("a.std", 4, 0, True)] * 3)
    unsure = GroupStatus(
        "other", "stable", [], [TopicLag("x", 1, 0, True), TopicLag("y", 1, 0, False)]
    )
    empty = GroupStatus("new", "empty", [], [])
    assert lag_rows([busy, idle, unsure, empty]) == [
        ("loop", "stable", "0", "b.raw", "12"),
        ("", "", "", "c.raw", "3+"),  # a count that did not finish: at least 3
        ("", "", "", "2 more topics", "0"),
        ("sink", "stable", "0", "3 topics", "0"),
        ("other", "stable", "0", "2 topics", "0+"),  # one of them not counted to the end
        ("new", "empty", "0", "—", "—"),
    ]
    every = lag_rows([busy], every_topic=True)
    assert [r[3] for r in every] == ["a.raw", "b.raw", "c.raw", "d.raw"]
