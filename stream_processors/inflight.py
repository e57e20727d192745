"""The processor's work in flight: what may be written, and committed, next.

The batched loop (``stream_processors.batch_loop``) does not stop to wait for the
broker: it hands writes to librdkafka and goes on consuming and processing while they
are delivered. This ledger, fed by the delivery reports, says what may happen next.

Records are processed in small batches as they arrive, and each batch's **outputs**
(std records and dead letters) are written at once: that is the latency a consumer
sees. The batches are gathered into **groups** that share one **state** write —
entity changelog, rule deltas, unit stats — so the stateful stages receive a bounded
number of aggregates however small the batches get. A group is sealed when it is old
enough or (rarely: many batches' worth) big enough.

- A group's state goes out only once the group is sealed and every one of its outputs
  is acknowledged. A changelog entry for a record whose std record was lost would
  make the record's redelivery look processed, and the std record would never be
  re-sent.
- States go out in group order, so that the changelog's last record per entity is
  the newest state and the rule stage's per-offset filter sees offsets in order
  (librdkafka keeps the order of one partition).
- A group is retired — counted, its undo log forgotten, its offsets committed — once
  its state is acknowledged and every earlier group is retired.

After a failed write nothing in flight is trusted: the loop waits for every report,
undoes the entity state of every group not retired, and processes all their records
again (``recall``). Outputs may go out twice; every consumer of them is idempotent.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from stream_processors.batch_core import BatchOutput, RawRecord

__all__ = ["Group", "Groups", "Writes"]


@dataclass(eq=False, slots=True)
class Writes:
    """Writes handed to the producer, counted down by their delivery reports; a
    ``parent`` (a batch's writes counted in its group's too) sees the same."""

    outstanding: int = 0
    errors: list[str] = field(default_factory=list)
    parent: Writes | None = None

    def sent(self, n: int = 1) -> None:
        """``n`` more writes handed to the producer (counted after ``produce`` took
        them, before any delivery report can run)."""
        self.outstanding += n
        if self.parent is not None:
            self.parent.sent(n)

    def delivered(self, err: Any, _msg: Any) -> None:
        """librdkafka's delivery report for one of these writes."""
        self.outstanding -= 1
        if err is not None:
            self.errors.append(str(err))
        if self.parent is not None:
            self.parent.delivered(err, _msg)

    @property
    def acknowledged(self) -> bool:
        return self.outstanding == 0 and not self.errors


@dataclass(eq=False, slots=True)
class Group:
    """Batches that share one state write."""

    opened: float  # monotonic seconds
    out: BatchOutput = field(default_factory=BatchOutput)
    records: list[RawRecord] = field(default_factory=list)
    batches: int = 0  # BatchCore undo segments
    outputs: Writes = field(default_factory=Writes)
    state: Writes = field(default_factory=Writes)
    # Batches whose outputs are not all acknowledged yet: their writes (counted in
    # ``outputs`` too) and their records' (raw topic, Kafka timestamp ms), so that the
    # end-to-end latency is observed when each batch is written, not its whole group.
    pending: list[tuple[Writes, list[tuple[str, int]]]] = field(default_factory=list)
    std_sent: int = 0  # out.std[:std_sent] and out.dead[:dead_sent] are handed over
    dead_sent: int = 0
    sealed: bool = False
    state_sent: bool = False
    # The entity changelog's acknowledged offsets (newest per raw topic, partition) and
    # the changelog values written: what the local state store commits at retirement.
    changelog_offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    changelog_values: dict[tuple[str, int, bytes], bytes] = field(default_factory=dict)


class Groups:
    """Groups in flight, oldest first; the newest may still be open."""

    def __init__(self) -> None:
        self._groups: deque[Group] = deque()

    def __len__(self) -> int:
        return len(self._groups)

    def __iter__(self) -> Iterator[Group]:
        return iter(self._groups)

    def open_group(self, now: float) -> Group:
        """The group new batches join: the newest, or a new one if that is sealed."""
        if self._groups and not self._groups[-1].sealed:
            return self._groups[-1]
        group = Group(opened=now)
        self._groups.append(group)
        return group

    def errors(self) -> list[str]:
        return [e for g in self._groups for e in (*g.outputs.errors, *g.state.errors)]

    def ready_for_state(self) -> Iterator[Group]:
        """Groups whose state may go out now, in order; each is marked as sent. Stops
        at the first group still open or being written: a later state must not
        overtake it."""
        for group in self._groups:
            if group.state_sent:
                continue
            if not (group.sealed and group.outputs.acknowledged):
                return
            group.state_sent = True
            yield group

    def retire(self) -> list[Group]:
        """Remove and return the oldest groups whose state is acknowledged."""
        done: list[Group] = []
        while self._groups:
            head = self._groups[0]
            if not (head.state_sent and head.state.acknowledged):
                break
            done.append(self._groups.popleft())
        return done

    def recall(self) -> list[RawRecord]:
        """Forget every group in flight and return all their records, in order."""
        records = [r for g in self._groups for r in g.records]
        self._groups.clear()
        return records
