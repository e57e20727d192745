"""The producer library: source systems hand pydantic models to a ``Publisher``.

- ``encoding``: ``EventEncoder`` validates and encodes one change (``Change``) into
  the ``EncodedEvent`` that is sent; ``record_size`` bounds a record's size;
- ``sync``: ``Publisher``, which produces encoded events (through the spool and its
  pump, ``producers.spool_pump``, when ``DATABUS_SPOOL__PATH`` is set);
- ``aio``: ``AsyncPublisher``, the same for asyncio code.
"""

from producers.publisher.aio import AsyncPublisher
from producers.publisher.encoding import (
    Change,
    EncodedEvent,
    EventEncoder,
    dict_is_dump,
    record_size,
)
from producers.publisher.sync import Publisher

__all__ = [
    "AsyncPublisher",
    "Change",
    "EncodedEvent",
    "EventEncoder",
    "Publisher",
    "dict_is_dump",
    "record_size",
]
