"""The chaos suite's checker: pure functions from what was published and what the sinks
hold to the counts that must be zero.

What the test published is the truth: every event's id, dataset, entity key, source
version and whether the processor must dead-letter it (the simulator's
``expect_reason``). From it follow, per entity, the newest valid (version, event id),
and per invalid event the DLQ topic and reason it must land on. Each sink is read into
``Stored`` copies (one per entity copy the sink holds), the processor's DLQs into
``Letter`` items; the functions here compare, nothing else:

- **lost**: an entity some valid event made that the sink does not hold (for the SQL
  history, a valid event id without its row);
- **duplicated**: copies of one entity beyond the first (a second FHIR resource for one
  identifier, a second history row for one event id);
- **regressed**: the sink holds the entity at an older (version, event id) than the
  newest valid one published;
- **unexpected**: the sink holds an entity, or a newer state of it, that no valid event
  made (an invalid event that got through);
- **drift** (IOC store only): KPI counters that differ from the sum of the
  contributions the entities record — a contribution applied twice or lost.

The DLQ check is exact in content: every invalid event on its dataset's DLQ topic with
its reason, nothing else there, and the sinks' own DLQs empty. Letters repeated for one
event (a worker killed before committing a batch it had dead-lettered) are counted and
reported, not failed: the processor's delivery is at-least-once, on the DLQ as on std.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "DlqCheck",
    "Letter",
    "Published",
    "SinkCheck",
    "Stored",
    "check_dlq",
    "check_events",
    "check_sink",
    "contribution_drift",
    "expected_letters",
    "expected_state",
    "report_row",
]

Order = tuple[int, str]  # (source version, event id): the order every sink guards on
Entity = tuple[str, str]  # (dataset id, entity key)

SAMPLE = 5  # how many example ids a report names per count


@dataclass(frozen=True, slots=True)
class Published:
    """One event the test handed to the Publisher."""

    event_id: str
    dataset: str
    key: str
    version: int
    op: str = "c"
    expect_reason: str | None = None  # None: valid, must reach the sinks

    @property
    def valid(self) -> bool:
        return self.expect_reason is None

    @property
    def order(self) -> Order:
        return (self.version, self.event_id)


@dataclass(frozen=True, slots=True)
class Stored:
    """One copy of an entity as a sink holds it; ``version`` None: a copy without the
    source order (e.g. an identifier-only FHIR stub)."""

    dataset: str
    key: str
    version: int | None
    event_id: str = ""


@dataclass(frozen=True, slots=True)
class Letter:
    """One dead letter: the topic it is on, the event id (``ce_id``) and the reason."""

    topic: str
    event_id: str
    reason: str


@dataclass(frozen=True)
class SinkCheck:
    sink: str
    expected: int
    lost: int
    duplicated: int
    regressed: int
    unexpected: int = 0
    drift: int = 0
    examples: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.regressed or self.unexpected or self.drift)


@dataclass(frozen=True)
class DlqCheck:
    expected: int
    missing: int  # invalid events on no DLQ
    unexpected: int  # letters for events that are valid or were never published
    wrong_reason: int
    wrong_topic: int
    # letters beyond the first for one event: at-least-once, like the std topic, when
    # a worker dies between producing a batch's letters and committing its offsets;
    # reported, not failed (the content — which events, where, why — must be exact)
    duplicated: int
    sink_letters: int  # letters on the sinks' own DLQs (nothing should be refused)
    examples: Mapping[str, list[str]] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not (
            self.missing
            or self.unexpected
            or self.wrong_reason
            or self.wrong_topic
            or self.sink_letters
        )


def expected_state(
    published: Iterable[Published], datasets: Iterable[str] | None = None
) -> dict[Entity, Order]:
    """The newest valid (version, event id) of every entity of ``datasets`` (all: None)."""
    wanted = None if datasets is None else set(datasets)
    newest: dict[Entity, Order] = {}
    for ev in published:
        if not ev.valid or (wanted is not None and ev.dataset not in wanted):
            continue
        entity = (ev.dataset, ev.key)
        if entity not in newest or ev.order > newest[entity]:
            newest[entity] = ev.order
    return newest


def _sample(items: Iterable[Any]) -> list[str]:
    return [str(i) for i in sorted(items, key=str)[:SAMPLE]]


def check_sink(
    sink: str,
    published: Iterable[Published],
    stored: Iterable[Stored],
    *,
    datasets: Iterable[str] | None = None,
    drift: int = 0,
) -> SinkCheck:
    """Lost, duplicated, regressed and unexpected entities of one sink.

    ``datasets``: the ones this sink receives (None: every published one); copies of
    other datasets' entities are ignored. A stored copy without a version counts as
    older than any published one (it holds no state of its own).
    """
    wanted = None if datasets is None else set(datasets)
    expected = expected_state(published, wanted)
    copies: dict[Entity, list[Stored]] = defaultdict(list)
    for s in stored:
        if wanted is None or s.dataset in wanted:
            copies[(s.dataset, s.key)].append(s)
    lost, duplicated, regressed, unexpected = [], 0, [], []
    dup_examples = []
    for entity, order in expected.items():
        held = copies.get(entity, [])
        if not held:
            lost.append(entity)
            continue
        if len(held) > 1:
            duplicated += len(held) - 1
            dup_examples.append(entity)
        best = max((-1, "") if s.version is None else (s.version, s.event_id) for s in held)
        if best < order:
            regressed.append(entity)
        elif best > order:
            unexpected.append(entity)
    for entity, held in copies.items():
        if entity not in expected and any(s.version is not None for s in held):
            unexpected.append(entity)
    return SinkCheck(
        sink=sink,
        expected=len(expected),
        lost=len(lost),
        duplicated=duplicated,
        regressed=len(regressed),
        unexpected=len(unexpected),
        drift=drift,
        examples={
            k: _sample(v)
            for k, v in (
                ("lost", lost),
                ("duplicated", dup_examples),
                ("regressed", regressed),
                ("unexpected", unexpected),
            )
            if v
        },
    )


def check_events(
    sink: str,
    published: Iterable[Published],
    rows: Mapping[str, int],
    *,
    datasets: Iterable[str] | None = None,
) -> SinkCheck:
    """An append-only sink keyed by event id (the SQL history): every valid event of
    ``datasets`` once. ``rows``: event id -> how many rows hold it."""
    wanted = None if datasets is None else set(datasets)
    valid = {
        ev.event_id for ev in published if ev.valid and (wanted is None or ev.dataset in wanted)
    }
    lost = [e for e in valid if rows.get(e, 0) == 0]
    dups = {e: n - 1 for e, n in rows.items() if n > 1}
    unexpected = [e for e, n in rows.items() if n > 0 and e not in valid]
    return SinkCheck(
        sink=sink,
        expected=len(valid),
        lost=len(lost),
        duplicated=sum(dups.values()),
        regressed=0,
        unexpected=len(unexpected),
        examples={
            k: _sample(v)
            for k, v in (("lost", lost), ("duplicated", dups), ("unexpected", unexpected))
            if v
        },
    )


def expected_letters(
    published: Iterable[Published], dlq_topic: Callable[[str], str]
) -> dict[str, tuple[str, str]]:
    """event id -> (DLQ topic, reason) of every invalid event."""
    out: dict[str, tuple[str, str]] = {}
    for ev in published:
        if ev.expect_reason is not None:
            out[ev.event_id] = (dlq_topic(ev.dataset), ev.expect_reason)
    return out


def check_dlq(
    published: Iterable[Published],
    letters: Iterable[Letter],
    dlq_topic: Callable[[str], str],
    *,
    sink_letters: Iterable[Letter] = (),
) -> DlqCheck:
    """Every invalid event once on its DLQ with its reason; nothing else; sinks' DLQs empty."""
    expected = expected_letters(published, dlq_topic)
    seen: Counter[str] = Counter()
    missing, unexpected, wrong_reason, wrong_topic = [], [], [], []
    for letter in letters:
        seen[letter.event_id] += 1
        if seen[letter.event_id] > 1:
            continue
        want = expected.get(letter.event_id)
        if want is None:
            unexpected.append(letter.event_id)
            continue
        if letter.topic != want[0]:
            wrong_topic.append(letter.event_id)
        if letter.reason != want[1]:
            wrong_reason.append(letter.event_id)
    missing = [e for e in expected if seen[e] == 0]
    dups = {e: n - 1 for e, n in seen.items() if n > 1}
    on_sinks = list(sink_letters)
    return DlqCheck(
        expected=len(expected),
        missing=len(missing),
        unexpected=len(unexpected),
        wrong_reason=len(wrong_reason),
        wrong_topic=len(wrong_topic),
        duplicated=sum(dups.values()),
        sink_letters=len(on_sinks),
        examples={
            k: _sample(v)
            for k, v in (
                ("missing", missing),
                ("unexpected", unexpected),
                ("wrong_reason", wrong_reason),
                ("wrong_topic", wrong_topic),
                ("duplicated", dups),
                ("sink_letters", [f"{x.topic}:{x.reason}" for x in on_sinks]),
            )
            if v
        },
    )


def contribution_drift(
    contributions: Mapping[str, Iterable[str]], sums: Mapping[str, Mapping[str, int]]
) -> int:
    """Counter fields of the IOC store's ``sum`` hashes that differ from the sum of the
    contributions their entities record (``_c``: lines ``h<TAB>field<TAB>amount``; ``z``
    lines are sorted-set members, not counters). Both maps are by ``sum`` key; a field
    absent counts as 0."""
    off = 0
    for sum_key in set(contributions) | set(sums):
        want: Counter[str] = Counter()
        for c in contributions.get(sum_key, ()):
            for line in c.split("\n"):
                parts = line.split("\t")
                if parts[0] == "h" and len(parts) == 3:
                    want[parts[1]] += int(parts[2])
        got = sums.get(sum_key, {})
        for name in set(want) | set(got):
            if want.get(name, 0) != int(got.get(name, 0)):
                off += 1
    return off


def report_row(check: SinkCheck) -> dict[str, Any]:
    """One line of the run's table (JSON-ready)."""
    return {
        "sink": check.sink,
        "expected": check.expected,
        "lost": check.lost,
        "duplicated": check.duplicated,
        "regressed": check.regressed,
        "unexpected": check.unexpected,
        "drift": check.drift,
        "examples": dict(check.examples),
    }
