"""databus: producers — how a source system puts its changes on the bus.

    from producers import Publisher

    with Publisher(settings, source_system="dvc-portal") as publisher:
        publisher.publish(DOSSIERS, dossier, version=3, changed_at=changed_at)

- an integrated system publishes pydantic models with ``Publisher`` (or
  ``AsyncPublisher`` from asyncio code; ``Change`` for a batch);
- a system with its own SQL database writes to an outbox table
  (``create_outbox_table``, ``outbox_table``) that an ``OutboxPoller`` publishes;
- a unit without an integrated system drops a file: ``read_rows``,
  ``validate_rows``, ``publish_file`` (``template_rows`` for the blank template);
- history a unit never sent comes as a backfill file (``publish_backfill``);
- a source declares how many events it sent a day (``declare``).

The simulators of every dataset are in ``producers.simulators``.
"""

from producers.backfill import BackfillPublisher, publish_backfill
from producers.declarations import declare
from producers.file_drop import (
    DropResult,
    FileFormatError,
    RejectedRow,
    Row,
    publish_file,
    read_rows,
    template_rows,
    validate_rows,
)
from producers.outbox import OutboxPoller, PollResult, create_outbox_table, outbox_table
from producers.publisher import AsyncPublisher, Change, Publisher

__all__ = [
    "AsyncPublisher",
    "BackfillPublisher",
    "Change",
    "DropResult",
    "FileFormatError",
    "OutboxPoller",
    "PollResult",
    "Publisher",
    "RejectedRow",
    "Row",
    "create_outbox_table",
    "declare",
    "outbox_table",
    "publish_backfill",
    "publish_file",
    "read_rows",
    "template_rows",
    "validate_rows",
]
