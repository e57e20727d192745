"""The spool's drain: feeds a producer from a ``Spool`` and deletes what the broker has.

The write-ahead half of the Publisher (``producers.publisher``): accepted events are
appended to the spool (``producers.spool``), and the pump hands them to librdkafka in
sequence order; a successful delivery report deletes the row. A failed delivery is
never dropped: the row stays, and once every record in flight has reported, the pump
rewinds and produces the whole spool again from its oldest row, so order per key
holds (librdkafka's idempotent producer keeps order within a partition, and a failure
of one record fails those queued behind it on the same partition). A fatal producer
error replaces the producer (an idempotent producer is unusable after one). A new
pump on a non-empty spool (after a crash or a restart) sends what is there first.

There is no background thread: the pump advances on ``append``, ``service`` and
``flush``, from the thread that owns it (a spool's SQLite connection belongs to it).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from bus.errors import DeliveryError
from producers.spool import Spool, SpoolRecord

__all__ = ["SpoolPump"]

log = logging.getLogger(__name__)

# How many spooled records are handed to librdkafka at once: bounds memory when a
# large spool drains, and how much is re-sent after a rewind.
_IN_FLIGHT_MAX = 10_000
_PEEK_BATCH = 1_000
_PURGED = (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT)


class SpoolPump:
    """Owns a producer built from ``producer_conf`` and drains ``spool`` through it.

    ``on_delivered(topic)`` is called for each acknowledged record, ``on_failed(topic)``
    for each failed delivery (not for the purges of its own close or replacement).
    """

    def __init__(
        self,
        spool: Spool,
        producer_conf: dict[str, Any],
        *,
        on_delivered: Callable[[str], None],
        on_failed: Callable[[str], None],
    ) -> None:
        self._spool = spool
        self._conf = producer_conf
        self._on_delivered = on_delivered
        self._on_failed = on_failed
        self._producer = Producer(producer_conf)
        # Rows up to `_cursor` were handed to the producer; `_in_flight` of them have
        # not reported yet; `_rewind` is set by a failed delivery.
        self._cursor = 0
        self._in_flight = 0
        self._rewind = False
        self._recreate = False
        self._delivered: list[int] = []
        self._last_error: KafkaError | None = None
        if len(spool):
            log.info(
                "spool %s holds %d events from an earlier run; sending them first",
                spool.path,
                len(spool),
            )
        self.service(0)

    def __len__(self) -> int:
        """Events kept but not yet acknowledged by the broker."""
        return len(self._spool)

    @property
    def path(self) -> Path:
        return self._spool.path

    def append(self, records: Sequence[SpoolRecord]) -> None:
        """Keep ``records`` durably (all or none: ``SpoolFullError``), then drain."""
        self._spool.append(records)  # durable before we return
        self.service(0)

    def service(self, timeout: float) -> None:
        """One step of the drain: reports, acks, rewind, then produce more."""
        self._producer.poll(timeout)
        if self._delivered:
            delivered, self._delivered = self._delivered, []
            self._spool.ack(delivered)
        if self._rewind and self._in_flight == 0:
            # Everything handed over has reported: what is left in the spool failed
            # (or was queued behind a failure). Start again from the oldest row.
            if self._recreate:
                self._recreate = False
                self._close_producer()
                self._producer = Producer(self._conf)
            self._rewind = False
            self._cursor = 0
        if not self._rewind:
            self._pump()

    def _pump(self) -> None:
        while self._in_flight < _IN_FLIGHT_MAX:
            rows = self._spool.peek(_PEEK_BATCH, after=self._cursor)
            if not rows:
                return
            for row in rows:
                try:
                    self._producer.produce(
                        row.topic,
                        value=row.value,
                        key=row.key,
                        headers=list(row.headers),
                        on_delivery=self._on_delivery(row.seq, row.topic),
                    )
                except BufferError:
                    return  # librdkafka's queue is full: the next service step goes on
                except KafkaException as exc:
                    # The row is accepted already: publish() must not fail now. A new
                    # producer takes over once the records in flight have reported.
                    self._rewind = self._recreate = True
                    error = exc.args[0] if exc.args else None
                    self._last_error = error if isinstance(error, KafkaError) else None
                    log.warning("producer failed (%s); it will be replaced", exc)
                    return
                self._cursor = row.seq
                self._in_flight += 1

    def _on_delivery(self, seq: int, topic: str) -> Callable[[KafkaError | None, Message], None]:
        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            self._in_flight -= 1
            if err is not None:
                # Not dropped: the row stays in the spool and is sent again after a rewind.
                self._rewind = True
                self._last_error = err
                if err.fatal() or err.code() == KafkaError._FATAL:
                    self._recreate = True  # an idempotent producer is unusable after this
                if err.code() not in _PURGED:  # our own close/recreate, not a failure
                    self._on_failed(topic)
            else:
                self._delivered.append(seq)
                self._on_delivered(topic)

        return on_delivery

    def flush(self, timeout: float) -> None:
        """Drain until the spool is empty; failed deliveries are re-sent until ``timeout``.

        Raises a retriable ``DeliveryError`` when events are left then: they stay in
        the spool (nothing is lost) and the next flush or pump sends them.
        """
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            self.service(max(0.0, min(0.1, remaining)))
            if not len(self._spool):
                return
            if remaining <= 0:
                last = f" (last error: {self._last_error.str()})" if self._last_error else ""
                raise DeliveryError(
                    f"{len(self._spool)} events still unacknowledged after {timeout:.0f} s; "
                    f"they stay in the spool {self._spool.path} and are sent by the next "
                    f"flush() or the next Publisher on that spool{last}",
                    retriable=True,
                )

    def close(self, timeout: float) -> None:
        """Flush within ``timeout``; what is left stays in the spool for next time."""
        try:
            try:
                self.flush(timeout)
            except DeliveryError:
                log.warning(
                    "closing with %d events unacknowledged; they stay in the spool %s",
                    len(self._spool),
                    self._spool.path,
                )
        finally:
            self._close_producer()
            self._spool.close()

    def _close_producer(self) -> None:
        # Queued records are not lost, the spool holds them: purge so that closing
        # does not wait for them, and serve the purge reports before closing.
        self._producer.purge()
        self._producer.poll(0)
        self._in_flight = 0
        delivered, self._delivered = self._delivered, []
        self._spool.ack(delivered)
        # Release the broker connections now, not whenever the object is collected
        # (Producer.close exists from confluent-kafka 2.12).
        close = getattr(self._producer, "close", None)
        if close is not None:
            close()
