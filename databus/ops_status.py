"""What ``databus status`` shows, computed from what the broker and the IOC store return.

Pure functions; ``databus.ops_cli`` does the I/O. Four parts:

- **groups**: the consumer groups of the bus, each with its members (one per running
  process of that kind) and its lag per topic. A group with no member and no committed
  offset is left out: nothing runs under it and nothing was ever consumed (the
  ``databus-reconcile-*``-style readers that only assign partitions look like that).
- **lag**: per partition, the records after the committed offset. The embedded broker's
  high watermark is approximate (docs/architecture.md), so the records are *counted* by reading
  from the committed offset to the end; ``high - committed`` is only a lower bound used
  where the count could not finish in time (the figure is then marked ``exact=False``).
- **dead letters**: records on every ``<dataset>.dlq.v1`` and ``sink.<name>.dlq.v1``.
- **open alerts**: from the IOC store's open-alert hash, or else the latest transition
  of every ``alert_id`` on ``alerts.v1`` that is not ``RESOLVED``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from schemas.catalog import Dataset
from schemas.domain.delivery import epoch_ms

__all__ = [
    "READER_GROUP_PREFIXES",
    "DlqCount",
    "GroupStatus",
    "Member",
    "OpenAlert",
    "PartitionLag",
    "TopicLag",
    "dlq_counts",
    "is_reader_group",
    "lag_rows",
    "open_alerts_from_records",
    "open_alerts_from_store",
    "partition_lag",
    "shown_groups",
    "status_document",
    "topic_lags",
]

# Groups of short-lived readers (CLI commands, tests): never processes of the bus.
READER_GROUP_PREFIXES = (
    "databus-reconcile-",
    "databus-dlq-",
    "databus-status-",
    "databus-tail-",
    "reader-",
)
_STATE_RANK = {"RAISED": 0, "UPDATED": 1, "RESOLVED": 2}


@dataclass(frozen=True)
class Member:
    member_id: str
    client_id: str
    host: str
    partitions: int  # assigned partitions; 0 where the broker does not report them


@dataclass(frozen=True)
class PartitionLag:
    topic: str
    partition: int
    committed: int | None  # None: the group committed nothing for this partition
    lag: int
    exact: bool  # False: counting did not reach the end in time; ``lag`` is a lower bound


@dataclass(frozen=True)
class TopicLag:
    topic: str
    partitions: int
    lag: int
    exact: bool


@dataclass(frozen=True)
class GroupStatus:
    group: str
    state: str
    members: list[Member] = field(default_factory=list)
    topics: list[TopicLag] = field(default_factory=list)

    @property
    def lag(self) -> int:
        return sum(t.lag for t in self.topics)


@dataclass(frozen=True)
class DlqCount:
    topic: str
    source: str  # the dataset id, or ``sink:<name>`` for a sink's DLQ
    count: int


@dataclass(frozen=True)
class OpenAlert:
    alert_id: str
    rule: str
    state: str
    severity: str
    dataset: str
    subject: str
    value: float
    threshold: float
    since: datetime | None  # when the newest transition happened
    message: str


def is_reader_group(group: str) -> bool:
    return group.startswith(READER_GROUP_PREFIXES)


def shown_groups(
    groups: Iterable[str], members: Mapping[str, int], committed: Mapping[str, int]
) -> list[str]:
    """The groups worth showing, sorted: not a reader's, and with a member or a
    committed offset (``members`` / ``committed``: counts per group)."""
    return sorted(
        g
        for g in set(groups)
        if not is_reader_group(g) and (members.get(g, 0) > 0 or committed.get(g, 0) > 0)
    )


def partition_lag(
    topic: str,
    partition: int,
    *,
    committed: int | None,
    high: int | None,
    counted: int,
    complete: bool,
) -> PartitionLag:
    """The lag of one partition.

    ``counted``: records read after the committed offset (from the start when nothing
    was committed); ``complete``: the read reached the end. A complete count is the
    lag. Otherwise the lag is at least the count, and at least ``high - committed``
    (a high watermark may be behind the real end, never ahead of it).
    """
    if complete:
        return PartitionLag(topic, partition, committed, counted, True)
    bound = 0
    if high is not None and high >= 0:
        bound = high - (committed if committed is not None and committed >= 0 else 0)
    return PartitionLag(topic, partition, committed, max(counted, bound, 0), False)


def topic_lags(parts: Iterable[PartitionLag]) -> list[TopicLag]:
    """Partition lags summed per topic, sorted by topic."""
    by_topic: dict[str, list[PartitionLag]] = {}
    for p in parts:
        by_topic.setdefault(p.topic, []).append(p)
    return [
        TopicLag(t, len(ps), sum(p.lag for p in ps), all(p.exact for p in ps))
        for t, ps in sorted(by_topic.items())
    ]


def _dlq_source(topic: str, by_topic: Mapping[str, str]) -> str | None:
    if topic in by_topic:
        return by_topic[topic]
    parts = topic.split(".")
    if len(parts) == 4 and parts[0] == "sink" and parts[2:] == ["dlq", "v1"] and parts[1]:
        return f"sink:{parts[1]}"
    return None


def dlq_counts(
    datasets: Iterable[Dataset], topics: Iterable[str], counted: Mapping[str, int]
) -> list[DlqCount]:
    """One row per DLQ: every catalog dataset's (0 when absent or empty) and every
    ``sink.<name>.dlq.v1`` among ``topics``; datasets first (by id), then sinks."""
    by_topic = {ds.dlq_topic: ds.id for ds in datasets}
    rows = [DlqCount(t, s, int(counted.get(t, 0))) for t, s in by_topic.items()]
    sinks = sorted({t for t in topics if t not in by_topic and _dlq_source(t, by_topic)})
    rows.sort(key=lambda r: r.source)
    rows += [DlqCount(t, _dlq_source(t, by_topic) or t, int(counted.get(t, 0))) for t in sinks]
    return rows


def _text(value: object) -> str:
    return str(getattr(value, "value", value) or "")  # Avro enums may come as objects


def _float(value: object) -> float:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return 0.0


def _alert(rec: Mapping[str, Any]) -> OpenAlert:
    ts = epoch_ms(rec.get("ts_ms"))
    return OpenAlert(
        alert_id=_text(rec.get("alert_id")),
        rule=_text(rec.get("rule")),
        state=_text(rec.get("state")),
        severity=_text(rec.get("severity")),
        dataset=_text(rec.get("dataset")),
        subject=_text(rec.get("subject") or rec.get("unit_code")),
        value=_float(rec.get("value")),
        threshold=_float(rec.get("threshold")),
        since=datetime.fromtimestamp(ts / 1000, UTC) if ts else None,
        message=_text(rec.get("message_en") or rec.get("message")),
    )


def _order(alerts: Iterable[OpenAlert]) -> list[OpenAlert]:
    # Most severe first, then the oldest: what has been wrong longest leads.
    severity = {"CRITICAL": 0, "WARNING": 1, "INFO": 2}
    return sorted(
        alerts,
        key=lambda a: (
            severity.get(a.severity, 3),
            a.since or datetime.max.replace(tzinfo=UTC),
            a.alert_id,
        ),
    )


def open_alerts_from_records(records: Iterable[Mapping[str, Any]]) -> list[OpenAlert]:
    """Decoded ``alerts.v1`` records in topic order -> the alerts open now: the newest
    transition of each ``alert_id`` (by ``ts_ms``; on a tie RESOLVED outranks UPDATED
    outranks RAISED, as in the IOC store) unless it is ``RESOLVED``."""
    newest: dict[str, tuple[int, int, Mapping[str, Any]]] = {}
    for rec in records:
        alert_id = _text(rec.get("alert_id"))
        if not alert_id:
            continue
        rank = (epoch_ms(rec.get("ts_ms")), _STATE_RANK.get(_text(rec.get("state")), 0))
        held = newest.get(alert_id)
        if held is None or rank >= held[:2]:
            newest[alert_id] = (*rank, rec)
    return _order(_alert(rec) for *_, rec in newest.values() if _text(rec["state"]) != "RESOLVED")


def open_alerts_from_store(entries: Mapping[bytes | str, bytes | str]) -> list[OpenAlert]:
    """The IOC store's open-alert hash (alert_id -> JSON of its latest transition);
    entries that are not JSON objects are skipped."""
    found = []
    for raw in entries.values():
        try:
            rec = json.loads(raw)
        except ValueError:
            continue
        if isinstance(rec, dict):
            found.append(_alert(rec))
    return _order(found)


def status_document(
    groups: Iterable[GroupStatus],
    dlq: Iterable[DlqCount],
    alerts: Iterable[OpenAlert],
    *,
    alerts_from: str,
    at: datetime,
) -> dict[str, Any]:
    """The ``--json`` form of the status: plain JSON types only."""
    group_docs = []
    for g in groups:
        doc = asdict(g)
        doc["lag"] = g.lag
        group_docs.append(doc)
    alert_docs = []
    for a in alerts:
        doc = asdict(a)
        doc["since"] = a.since.isoformat() if a.since is not None else None
        alert_docs.append(doc)
    dlq_docs = [asdict(d) for d in dlq]
    return {
        "at": at.isoformat(),
        "groups": group_docs,
        "dlq": dlq_docs,
        "dlq_total": sum(d["count"] for d in dlq_docs),
        "alerts_from": alerts_from,
        "open_alerts": alert_docs,
    }


LagRow = tuple[str, str, str, str, str]  # group, state, processes, topic, lag


def lag_rows(groups: list[GroupStatus], every_topic: bool = False) -> list[LagRow]:
    """The rows of `databus status`'s lag table: per group, each topic it still has to
    read (lag above 0), then one row for the others ("17 more topics" at 0; "0+" when
    a count among them did not finish) unless ``every_topic``. A group reads up to
    ~20 topics: listed whole, most rows say 0 and the table is two screens on 80
    columns."""
    rows: list[LagRow] = []
    for g in groups:
        shown = [t for t in g.topics if every_topic or t.lag]
        done = [t for t in g.topics if t not in shown]
        cells = [(t.topic, f"{t.lag}{'' if t.exact else '+'}") for t in shown]
        if done:
            more = "more " if shown else ""
            exact = all(t.exact for t in done)
            cells.append(
                (
                    f"{len(done)} {more}topic{'s' if len(done) > 1 else ''}",
                    f"0{'' if exact else '+'}",
                )
            )
        for i, (topic, lag) in enumerate(cells or [("—", "—")]):
            if i == 0:
                rows.append((g.group, g.state, str(len(g.members)), topic, lag))
            else:
                rows.append(("", "", "", topic, lag))
    return rows
