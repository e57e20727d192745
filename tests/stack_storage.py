"""Which storage the tests' own embedded brokers use.

Memory, unless ``DATABUS_SUPERVISE__EMBEDDED_BROKER_STORAGE`` says otherwise: an
acknowledged write one at a time takes ~1-3 ms there against ~7 ms on disk storage
(``bench/broker_storage.py``), and the suite has a time budget. Disk storage, the
default of `databus up`, is what the `databus up` tests, ``test_broker_on_disk.py``
and the snapshot restore run on; ``DATABUS_SUPERVISE__EMBEDDED_BROKER_STORAGE=disk
make test-slow`` runs the chaos scenarios on it too.
"""

from __future__ import annotations

import os

__all__ = ["supervise_for_tests"]


def supervise_for_tests() -> dict[str, str]:
    """The ``supervise`` settings override for a test's ``LocalStack``."""
    storage = os.environ.get("DATABUS_SUPERVISE__EMBEDDED_BROKER_STORAGE", "memory")
    return {"embedded_broker_storage": storage}
