"""Backfill: a unit hands in history it never sent, as a file (``databus backfill``).

The file is read and checked exactly like a file drop (``producers.file_drop``: same
formats, same reject file); each valid row is published as a snapshot event with two
differences:

- the header ``databus.backfill: 1``: the processor standardizes, deduplicates and
  writes it like any event, but it moves no alert rule (``stream_processors.batch_core``):
  a year of history must not raise (or resolve) today's alerts;
- ``source.ts_ms`` is the row's own time, not the submission time: the newest of the
  ``time_fields`` the row has, else ``as_of``. The delivery ledger judges liveness by
  event time, so history counts as late, as it is. A row with neither is refused (its
  time would be "now", and old data would pass for live), and so is a row dated in
  the future (that is not history).

The version is the submission time in ms, as for a file drop: a corrected file
submitted later supersedes the earlier one.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from bus.settings import Settings
from producers.file_drop import (
    DropResult,
    RejectedRow,
    RowCheck,
    finish_drop,
    read_rows,
    validate_rows,
)
from producers.publisher import Publisher
from schemas.catalog import Dataset
from schemas.domain.timeparse import to_ms
from schemas.headers import BACKFILL_HEADER
from schemas.models.common import Op

__all__ = ["BACKFILL_HEADER", "BackfillPublisher", "event_time", "publish_backfill"]

_FUTURE_TOLERANCE = timedelta(minutes=5)  # clocks of the unit's machine and ours differ


class BackfillPublisher(Publisher):
    """A ``Publisher`` whose every event carries ``databus.backfill: 1``."""

    def __init__(self, settings: Settings, **kwargs: Any) -> None:
        super().__init__(settings, extra_headers=[(BACKFILL_HEADER, b"1")], **kwargs)


def event_time(
    record: BaseModel, time_fields: Sequence[str], as_of: datetime | None
) -> datetime | None:
    """The newest readable time among ``time_fields`` of the record, else ``as_of``.

    Times are read as the processor reads them (``alert_facts.to_ms``: aware datetimes,
    ISO 8601, ``dd/mm/yyyy [HH:MM[:SS]]``, naive times being Asia/Ho_Chi_Minh)."""
    values: dict[str, Any] = record.__dict__
    found = [ms for f in time_fields if (ms := to_ms(values.get(f))) is not None]
    if found:
        return datetime.fromtimestamp(max(found) / 1000, UTC)
    return as_of


def publish_backfill(
    publisher: Publisher,
    dataset: Dataset,
    path: Path,
    *,
    time_fields: Sequence[str] = (),
    as_of: datetime | None = None,
    check: RowCheck | None = None,
    reject_path: Path | None = None,
    on_row: Callable[[], None] | None = None,
    now: datetime | None = None,
) -> DropResult:
    """Publish the valid rows of a history file, each at its own event time.

    ``publisher`` should be a ``BackfillPublisher`` (the header is its doing); rows
    are refused as in a file drop, and also when they have no event time or one in
    the future. Unknown ``time_fields`` raise ``ValueError`` before anything is sent.
    """
    unknown = [f for f in time_fields if f not in dataset.model.model_fields]
    if unknown:
        raise ValueError(
            f"{dataset.id} has no field(s) {', '.join(unknown)}; "
            f"its fields: {', '.join(dataset.model.model_fields)}"
        )
    rows = list(read_rows(path, dataset.model))
    version = time.time_ns() // 1_000_000
    latest = (now or datetime.now(UTC)) + _FUTURE_TOLERANCE
    rejects: list[RejectedRow] = []
    published = 0
    # validate_rows yields exactly one result per row, in order.
    for row, result in zip(rows, validate_rows(iter(rows), dataset.model, check), strict=True):
        if isinstance(result, RejectedRow):
            rejects.append(result)
        else:
            at = event_time(result, time_fields, as_of)
            where = ", ".join(time_fields) or "--as-of"
            if at is None:
                rejects.append(
                    RejectedRow(
                        row.line,
                        where,
                        "no event time: none of these fields is set (add --as-of)",
                        "không có thời điểm sự kiện",
                        row.values,
                    )
                )
            elif at > latest:
                rejects.append(
                    RejectedRow(
                        row.line,
                        where,
                        f"event time {at.isoformat()} is in the future: not history",
                        "thời điểm sự kiện ở tương lai",
                        row.values,
                    )
                )
            else:
                publisher.publish(dataset, result, version=version, op=Op.READ, changed_at=at)
                published += 1
        if on_row is not None:
            on_row()
    return finish_drop(publisher, dataset, path, len(rows), published, rejects, reject_path)
