"""``AsyncPublisher``: the ``Publisher`` for asyncio code, on a worker thread of its own."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from types import TracebackType
from typing import Any, Self, TypeVar

from confluent_kafka.schema_registry import SchemaRegistryClient
from pydantic import BaseModel

from bus.errors import DeliveryError
from bus.metrics import Metrics
from bus.settings import Settings
from producers.publisher.encoding import Change
from producers.publisher.sync import Publisher
from schemas.catalog import Dataset
from schemas.models.common import Op

__all__ = ["AsyncPublisher"]

_T = TypeVar("_T")


class AsyncPublisher:
    """``Publisher`` for asyncio code: the same guarantees, never blocking the event loop.

    Every call runs on one worker thread that owns the Publisher: the spool's SQLite
    connection and the producer are used from that thread only (a Publisher is not
    thread-safe), and a spool's fsync, a first schema registration or ``flush`` wait
    there instead of in the loop. Calls run in the order they were made. Cancelling
    an awaiting task does not take its event back: it is published all the same.
    The thread hand-off costs tens of µs per call: use ``publish_many`` for volume.

        async with AsyncPublisher(settings, source_system="dvc-portal") as pub:
            event_id = await pub.publish(DOSSIERS, dossier, version=1)
            await pub.flush()
    """

    def __init__(
        self,
        settings: Settings,
        *,
        source_system: str,
        registry: SchemaRegistryClient | None = None,
        metrics: Metrics | None = None,
        **producer_overrides: Any,
    ) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="databus-publisher")
        # Built on the worker thread (the spool's connection belongs to its thread).
        self._publisher = self._executor.submit(
            Publisher,
            settings,
            source_system=source_system,
            registry=registry,
            metrics=metrics,
            **producer_overrides,
        )
        self._closed = False

    async def _run(self, fn: Callable[[Publisher], _T]) -> _T:
        if self._closed:
            raise DeliveryError("publisher is closed", retriable=False)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: fn(self._publisher.result()))

    async def publish(
        self,
        dataset: Dataset,
        after: BaseModel | None,
        *,
        version: int,
        op: Op = Op.CREATE,
        before: BaseModel | None = None,
        changed_at: datetime | None = None,
        unit: str | None = None,
        event_id: str | None = None,
    ) -> str:
        """``Publisher.publish``: validated and enqueued (spooled) once it returns."""
        return await self._run(
            lambda p: p.publish(
                dataset,
                after,
                version=version,
                op=op,
                before=before,
                changed_at=changed_at,
                unit=unit,
                event_id=event_id,
            )
        )

    async def publish_many(self, dataset: Dataset, changes: Iterable[Change]) -> list[str]:
        """``Publisher.publish_many``: all of the batch or, on a refusal, none of it."""
        batch = list(changes)  # the caller's iterable is consumed here, not on the thread
        return await self._run(lambda p: p.publish_many(dataset, batch))

    async def poll(self, timeout: float = 0.0) -> None:
        await self._run(lambda p: p.poll(timeout))

    async def flush(self, timeout: float = 60.0) -> None:
        """Wait for delivery (``Publisher.flush``) without blocking the event loop."""
        await self._run(lambda p: p.flush(timeout))

    @property
    def spooled(self) -> int:
        return self._publisher.result().spooled if self._publisher.done() else 0

    async def close(self, timeout: float = 60.0) -> None:
        if self._closed:
            return
        try:
            await self._run(lambda p: p.close(timeout))
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)

    async def __aenter__(self) -> Self:
        await self._run(lambda p: None)  # construction errors surface here
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
