"""Names of the Kafka headers the bus's writers and readers agree on.

The CloudEvents headers are made by ``producers.headers``; the dead-letter headers
live with the dead letters (``schemas.dead_letters``).
"""

from __future__ import annotations

__all__ = ["BACKFILL_HEADER"]

BACKFILL_HEADER = "databus.backfill"
"""Set (to ``1``) on events a backfill re-published: counted, never alerted on."""
