"""The delivery ledger: per owner unit, what the catalog assigns it and what it delivers.

"Sở Y tế: 3/3 delivering, 2 live" — for each owner unit of the catalog:

- **assigned**: datasets the catalog gives it;
- **delivering**: assigned datasets the bus has received at least one event of;
- **live**: delivering datasets whose newest *data* (the event time of the newest
  standardized event) lies within the catalog's update obligation. A source that sends
  week-old records today is delivering but not live: it is **late**. Judging by event
  time, not arrival time, is what makes a backfill count as late;
- **quality**: the mean overall quality score of its delivering datasets;
- **declared / received / missing**: the sources' own declarations reconciled with the
  raw topics (``databus.reconcile``), summed over the days asked for.

``build_ledger`` is pure: the quality rows are the latest ``quality.v1`` record per
(dataset, source unit), as the processor publishes them; ``read_quality_rows`` reads
them from the topic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from bus.settings import Settings
from databus.reconcile import read_from_start
from schemas.catalog import QUALITY_TOPIC
from schemas.codec import AvroDeserializer
from schemas.domain.delivery import latest_quality_rows

__all__ = [
    "read_quality_rows",
]


def read_quality_rows(
    settings: Settings, decode: AvroDeserializer, timeout: float = 60.0
) -> list[Mapping[str, Any]]:
    """The latest ``quality.v1`` record per (dataset, unit), read from the beginning."""
    return latest_quality_rows(
        decode(msg.value()) for msg in read_from_start(settings, QUALITY_TOPIC, timeout)
    )
