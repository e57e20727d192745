"""Which storage the tests' own embedded brokers use (the bus-process, chaos and IOC
rebuild stacks): disk, as `databus up`, unless ``DATABUS_SUPERVISE__EMBEDDED_BROKER_STORAGE``
says otherwise. The suite's shared stack (``tests/conftest.py``) keeps memory storage:
an acknowledged write one at a time is several times faster there
(``bench/broker_storage.py``), and most tests write that way.
"""

from __future__ import annotations

import os

__all__ = ["supervise_for_tests"]


def supervise_for_tests() -> dict[str, str]:
    """The ``supervise`` settings override for a test's ``LocalStack``."""
    storage = os.environ.get("DATABUS_SUPERVISE__EMBEDDED_BROKER_STORAGE", "disk")
    return {"embedded_broker_storage": storage}
