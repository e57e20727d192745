"""databus: sinks — the std and alert topics delivered to their destinations.

The public face: the interface every sink implements (:mod:`sinks.base`), the
runner that feeds a sink from Kafka (:class:`SinkRunner`) and the three sinks —
the IOC store in Redis (:class:`IocStoreSink`, more in :mod:`sinks.ioc`), the
shared SQL repository (:class:`SharedRepoSink`) and the ministry's FHIR API
(:class:`HealthAxisSink`).

The runner and the sinks are loaded on first use: each pulls in its own client
stack (Kafka, Redis, SQLAlchemy, HTTP/FHIR), and ``import sinks.base`` — the
CLI does it on every start — must not load them all.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from sinks.base import Applied, Rejected, Sink, SinkRecord, TracksOffsets

if TYPE_CHECKING:
    from sinks.health_axis import HealthAxisSink
    from sinks.ioc.store import IocStoreSink
    from sinks.runner import SinkRunner
    from sinks.shared_repo import SharedRepoSink

__all__ = [
    "Applied",
    "HealthAxisSink",
    "IocStoreSink",
    "Rejected",
    "SharedRepoSink",
    "Sink",
    "SinkRecord",
    "SinkRunner",
    "TracksOffsets",
]

_LOADED_ON_USE = {
    "HealthAxisSink": "sinks.health_axis",
    "IocStoreSink": "sinks.ioc.store",
    "SharedRepoSink": "sinks.shared_repo",
    "SinkRunner": "sinks.runner",
}


def __getattr__(name: str) -> Any:
    module = _LOADED_ON_USE.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value
