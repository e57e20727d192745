"""Reading the delivery ledger's inputs off the bus.

The ledger itself — per owner unit, what the catalog assigns it and what it delivers
(assigned, delivering, live, late, quality, declared / received / missing) — is
computed by the pure ``schemas.domain.delivery.build_ledger``, which the IOC sink uses
too. This module reads what it needs: the latest ``quality.v1`` record per (dataset,
source unit), as the processor publishes them (``read_quality_rows``).
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
