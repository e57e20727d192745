"""One change event, validated and encoded: what a Publisher sends, before sending it.

A model is validated again right before encoding (models can be built with
``model_construct`` or come from elsewhere), wrapped in the Debezium-style envelope,
encoded with the dataset's schema, framed with the registry's schema id, and given
its CloudEvents headers and key. Nothing here talks to the broker: ``EventEncoder``
turns a change into the ``EncodedEvent`` the Publisher produces or spools.
"""

from __future__ import annotations

import io
import time
import types
import typing
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from datetime import time as time_of_day
from decimal import Decimal
from enum import Enum
from typing import Any, NamedTuple, cast
from uuid import UUID

import fastavro
import pydantic
from pydantic import BaseModel
from pydantic import ValidationError as PydanticValidationError

from bus import tracing
from bus.errors import PublishValidationError, RecordTooLargeError
from producers.headers import HeaderTemplate, new_event_id, new_ids, new_traceparent
from schemas.catalog import Dataset
from schemas.codec import AvroSerializer, frame, unframe
from schemas.models.common import Op

__all__ = ["Change", "EncodedEvent", "EventEncoder", "dict_is_dump", "record_size"]

Headers = list[tuple[str, str | bytes | None]]

# The Confluent wire format's header: magic byte and schema id.
_FRAME_SIZE = len(frame(0, b""))
# librdkafka's bound on a v2 record's framing (length, attributes, deltas, counts).
_RECORD_OVERHEAD = 64


def record_size(
    key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, str | bytes | None]]
) -> int:
    """An upper bound of what librdkafka counts against ``message.max.bytes``: key,
    value and headers, each with its length prefix, plus the record's framing."""
    size = _RECORD_OVERHEAD + len(key or b"") + len(value or b"")
    for name, header in headers:
        size += 10 + len(name.encode()) + len(header or b"")
    return size


@dataclass(frozen=True, slots=True)
class Change:
    """One change event for ``Publisher.publish_many``: ``publish``'s arguments."""

    after: BaseModel | None
    version: int
    op: Op = Op.CREATE
    before: BaseModel | None = None
    changed_at: datetime | None = None
    unit: str | None = None
    event_id: str | None = None


class EncodedEvent(NamedTuple):
    """A validated, encoded event, ready to produce: nothing of it is sent yet."""

    key: bytes
    value: bytes  # framed: magic byte, schema id, Avro body
    headers: Headers
    event_id: str


_PLAIN_TYPES = (
    str,
    int,
    float,
    bool,
    bytes,
    date,
    datetime,
    time_of_day,
    Decimal,
    UUID,
    # pydantic's constrained dates and times validate to plain date/datetime objects
    pydantic.AwareDatetime,
    pydantic.NaiveDatetime,
    pydantic.PastDate,
    pydantic.FutureDate,
    pydantic.PastDatetime,
    pydantic.FutureDatetime,
)


def _plain(annotation: Any) -> bool:
    """A field type whose validated value is what ``model_dump(mode="python")`` gives."""
    if annotation is None or annotation is type(None) or annotation is Any:
        return annotation is not Any
    origin = typing.get_origin(annotation)
    if origin is None:
        return isinstance(annotation, type) and (
            issubclass(annotation, Enum) or annotation in _PLAIN_TYPES
        )
    if origin is typing.Annotated:
        return _plain(typing.get_args(annotation)[0])
    if origin is typing.Literal:
        return True
    if origin in (typing.Union, types.UnionType, list, tuple, dict):
        return all(a is Ellipsis or _plain(a) for a in typing.get_args(annotation))
    return False


def dict_is_dump(model: type[BaseModel]) -> bool:
    """Whether a validated instance's ``__dict__`` is its python-mode ``model_dump``.

    True for plain models (scalars, enums, dates, lists of them; no nested models,
    serializers, aliases or computed fields): then the encoder skips the dump (~1.5 µs).
    """
    decorators = model.__pydantic_decorators__
    if decorators.field_serializers or decorators.model_serializers:
        return False
    if model.model_computed_fields or model.model_config.get("extra") == "allow":
        return False
    return all(
        f.alias is None and f.serialization_alias is None and not f.exclude and _plain(f.annotation)
        for f in model.model_fields.values()
    )


def _validation_message(model: BaseModel, exc: PydanticValidationError) -> str:
    # Field names and messages only: input values may hold personal data.
    problems = "; ".join(
        f"{'.'.join(str(p) for p in err['loc']) or '(model)'}: {err['msg']}" for err in exc.errors()
    )
    return f"invalid {type(model).__name__}, nothing was sent: {problems}"


class EventEncoder:
    """Validates and encodes one dataset's change events (what its events share:
    validator, encoder, framing, header templates, key).

    ``schema_id``: the registry's id of the dataset's raw schema when known; otherwise
    ``serializer`` registers (or looks up) the schema on the first ``encode``.
    ``max_bytes``: the producer's ``message.max.bytes``; a larger event is refused.
    """

    __slots__ = (
        "_body",
        "_dict_is_dump",
        "_extra_headers",
        "_header_slack",
        "_key_field",
        "_max_bytes",
        "_prefix",
        "_record_name",
        "_source_system",
        "_templates",
        "_validate",
        "dataset",
        "serializer",
    )

    def __init__(
        self,
        dataset: Dataset,
        serializer: AvroSerializer,
        *,
        source_system: str,
        max_bytes: int,
        extra_headers: Sequence[tuple[str, bytes]] = (),
        schema_id: int | None = None,
    ) -> None:
        self.dataset = dataset
        self.serializer = serializer
        self._source_system = source_system
        self._max_bytes = max_bytes
        # added to every event's headers (e.g. the backfill mark, producers/backfill.py)
        self._extra_headers: Headers = list(extra_headers)
        self._header_slack = 4096 + record_size(None, None, self._extra_headers)
        # The model's own validator, on the instance's field values (one pass, no dump).
        self._validate: Callable[[Any], BaseModel] = (
            dataset.model.__pydantic_validator__.validate_python
        )
        self._dict_is_dump = dict_is_dump(dataset.model)
        self._body = serializer.encode_body
        self._record_name = serializer.union_record_name("after")
        self._key_field = dataset.key_fields[0] if len(dataset.key_fields) == 1 else None
        # The Confluent header, once the schema id is known.
        self._prefix: bytes | None = None if schema_id is None else frame(schema_id, b"")
        self._templates: dict[tuple[str, str], HeaderTemplate] = {}

    @property
    def topic(self) -> str:
        """The dataset's raw topic, where these events go."""
        return self.dataset.raw_topic

    def _branch(self, record: dict[str, Any] | None) -> Any:
        # Name the union branch (fastavro's tuple notation) instead of letting the
        # writer find it by checking the record against each branch.
        if record is None or self._record_name is None:
            return record
        return (self._record_name, record)

    def _validated(self, model: BaseModel | None) -> dict[str, Any] | None:
        if model is None:
            return None
        expected = self.dataset.model
        if not isinstance(model, expected):
            raise PublishValidationError(
                f"dataset {self.dataset.id} takes {expected.__name__}, got {type(model).__name__}"
            )
        # Validated again on every event, even an instance pydantic built: nothing on
        # an instance tells a validated one from one built by `model_construct` or
        # changed by `model_copy(update=...)` (neither validates), and the fields-set
        # bookkeeping is the same for all of them. The instance's field values go
        # through the model's validator in one pass (what `model_validate` of its
        # dump did, without the dump); the new instance's fields are then the record.
        try:
            checked = self._validate(model.__dict__)
        except PydanticValidationError as exc:
            # `from None`: pydantic's error quotes input values, and a logger printing
            # the traceback would print the chained cause with them.
            raise PublishValidationError(_validation_message(model, exc)) from None
        if self._dict_is_dump:
            return checked.__dict__  # read only: encoded right away, never changed
        # Python mode: Avro timestamp-millis and date fields take datetime/date objects.
        return checked.model_dump(mode="python")

    def encode(
        self,
        after: BaseModel | None,
        *,
        version: int,
        op: Op = Op.CREATE,
        before: BaseModel | None = None,
        changed_at: datetime | None = None,
        unit: str | None = None,
        event_id: str | None = None,
        traceparent: bytes | None = None,
    ) -> EncodedEvent:
        """Validate and encode one change (``Publisher.publish``'s arguments).

        Raises ``PublishValidationError`` for an invalid change (the message names
        fields, never their values) and ``RecordTooLargeError`` for one over
        ``max_bytes``; nothing is sent either way.

        With tracing on (``bus.tracing``) the event's trace starts here: a ``create``
        span whose id is the event's ``traceparent``. ``traceparent``: given, it is
        written as it is.
        """
        if traceparent is None and tracing.enabled():
            return self._encode_traced(
                after,
                version=version,
                op=op,
                before=before,
                changed_at=changed_at,
                unit=unit,
                event_id=event_id or new_event_id(),
            )
        after_dict = self._validated(after)
        before_dict = self._validated(before)
        state = after_dict if after_dict is not None else before_dict
        if state is None:
            raise PublishValidationError("an event needs a `before` or an `after` record")
        if (op is Op.DELETE) != (after_dict is None):
            raise PublishValidationError("op 'd' carries only `before`; other ops need `after`")
        dataset = self.dataset
        now_ms = time.time_ns() // 1_000_000
        if traceparent is not None:
            event_id = event_id or new_event_id()
        elif event_id:
            traceparent = new_traceparent().encode()
        else:
            event_id, traceparent = new_ids()
        unit = unit or dataset.owner_unit
        op_code = op.value
        envelope = {
            "event_id": event_id,
            "op": op_code,
            "ts_ms": now_ms,
            "source": {
                "system": self._source_system,
                "unit": unit,
                "dataset": dataset.id,
                "ts_ms": now_ms if changed_at is None else changed_at,
                "version": version,
            },
            "before": self._branch(before_dict),
            "after": self._branch(after_dict),
        }
        try:
            body = self._body(envelope)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise PublishValidationError(f"{dataset.id}: does not fit the schema: {exc}") from exc
        template = self._templates.get((unit, op_code))
        if template is None:
            template = self._templates[(unit, op_code)] = HeaderTemplate(
                f"/databus/{self._source_system}/{unit}",
                f"vn.gov.databus.{dataset.id}.{op_code}",
            )
        key = str(state[self._key_field]) if self._key_field is not None else dataset.key_of(state)
        encoded_key = key.encode()
        headers = (
            [*template.headers(event_id, now_ms, traceparent), *self._extra_headers]
            if self._extra_headers
            else template.headers(event_id, now_ms, traceparent)
        )
        # Checked before the schema id is asked for: refusing an event needs no registry.
        # Headers are a few hundred bytes: the exact bound only near the limit.
        if _FRAME_SIZE + len(body) + len(encoded_key) + self._header_slack > self._max_bytes:
            size = record_size(encoded_key, bytes(_FRAME_SIZE) + body, headers)
            if size > self._max_bytes:
                raise RecordTooLargeError(
                    f"{dataset.id}: the encoded event is {size:,} bytes, over the limit of "
                    f"{self._max_bytes:,} (DATABUS_KAFKA__MESSAGE_MAX_BYTES); nothing was sent"
                )
        prefix = self._prefix
        if prefix is None:
            prefix = self._prefix = frame(self.serializer.schema_id, b"")
        value = prefix + body
        return EncodedEvent(encoded_key, value, headers, event_id)

    def _encode_traced(
        self, after: BaseModel | None, *, event_id: str, **change: Any
    ) -> EncodedEvent:
        topic = self.dataset.raw_topic
        span = tracing.start_span(f"create {topic}", kind=tracing.SpanKind.PRODUCER)
        if span.is_recording():  # sampled (OTEL_TRACES_SAMPLER): the span is recorded
            span.set_attributes(
                {
                    "messaging.system": "kafka",
                    "messaging.operation.type": "create",
                    "messaging.destination.name": topic,
                    "messaging.message.id": event_id,
                    "databus.dataset": self.dataset.id,
                }
            )
        try:
            encoded = self.encode(
                after, event_id=event_id, traceparent=tracing.traceparent_of(span), **change
            )
        except BaseException as exc:
            tracing.end_error(span, exc)
            raise
        span.end()
        return encoded

    def event_id_of(self, value: bytes | None) -> str | None:
        """The event id inside a value this encoder wrote (delivery reports carry no
        headers); None when it cannot be read."""
        if value is None:
            return None
        try:
            envelope = fastavro.schemaless_reader(
                io.BytesIO(unframe(value)[1]), self.serializer.parsed_schema, None
            )
            return str(cast(dict[str, Any], envelope)["event_id"])
        except Exception:  # a report about a value we wrote: this never fails in practice
            return None
