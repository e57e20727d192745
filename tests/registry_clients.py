"""Schema-registry clients for tests: one per configuration for the whole session,
closed at its end (``close_all``, called by the session fixture in conftest.py).

A client left to the garbage collector closes its keep-alive sockets with a
``ResourceWarning`` in whichever test happens to be running, which the suite treats
as an error; a client per configuration, kept and closed once, never does.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from confluent_kafka.schema_registry import SchemaRegistryClient

__all__ = ["close_all", "registry_client"]

_CLIENTS: dict[str, SchemaRegistryClient] = {}


def registry_client(conf: Mapping[str, Any]) -> SchemaRegistryClient:
    """The session's client for ``conf`` (a ``SchemaRegistryClient`` configuration)."""
    key = json.dumps(dict(conf), sort_keys=True, default=str)
    client = _CLIENTS.get(key)
    if client is None:
        client = _CLIENTS[key] = SchemaRegistryClient(dict(conf))
    return client


def close_all() -> None:
    while _CLIENTS:
        _CLIENTS.popitem()[1].close()
