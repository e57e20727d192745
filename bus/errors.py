"""One error root for the whole bus.

Every error says whether retrying the same operation later can succeed
(``retriable``), so callers decide between waiting and dead-lettering without
guessing from exception classes.

    DatabusError
    ├── ConfigError                  a setting is missing or invalid (start-up stops)
    ├── ValidationError              a record does not satisfy its contract
    │   └── PublishValidationError   a model handed to the Publisher is invalid
    │       └── RecordTooLargeError  an encoded event is over DATABUS_KAFKA__MESSAGE_MAX_BYTES
    ├── CodecError                   bytes are not a valid event for the dataset
    ├── RegistryError                the schema registry failed (retriable unless 4xx)
    │   ├── IncompatibleSchemaError  a registration breaks the compatibility level
    │   └── RegistryRequestError     the registry refused a request (Confluent error code)
    ├── DeliveryError                the broker did not acknowledge a record (retriable)
    │   └── SpoolFullError           the local spool is full; the event was not accepted
    ├── SinkError                    a destination failed to take a batch
    ├── BrokerError                  the Kafka broker cannot be reached (retriable)
    │   └── BrokerAuthError          the broker refused our credentials or TLS handshake
    └── StackError                   an embedded server failed to start or stop
"""

from __future__ import annotations

__all__ = [
    "BrokerAuthError",
    "BrokerError",
    "CodecError",
    "ConfigError",
    "DatabusError",
    "DeliveryError",
    "IncompatibleSchemaError",
    "PublishValidationError",
    "RecordTooLargeError",
    "RegistryError",
    "RegistryRequestError",
    "SinkError",
    "SpoolFullError",
    "StackError",
    "ValidationError",
]


class DatabusError(Exception):
    """Root of every error raised by databus code."""

    retriable: bool = False

    def __init__(self, message: str, *, retriable: bool | None = None) -> None:
        super().__init__(message)
        if retriable is not None:
            self.retriable = retriable


class ConfigError(DatabusError):
    """A setting is missing or invalid; the message names it."""


class ValidationError(DatabusError):
    """A record does not satisfy its contract."""


class PublishValidationError(ValidationError):
    """A model handed to the Publisher failed validation; nothing was sent."""


class RecordTooLargeError(PublishValidationError):
    """An encoded event is larger than the producers' limit; nothing was sent."""


class CodecError(DatabusError):
    """Bytes are not a valid event; ``reason`` is a stable code for the DLQ."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message, retriable=False)
        self.reason = reason


class RegistryError(DatabusError):
    """The schema registry failed; 5xx and connection errors are retriable."""

    retriable = True


class IncompatibleSchemaError(RegistryError):
    """A schema breaks the subject's compatibility level."""

    retriable = False


class RegistryRequestError(RegistryError):
    """A request the registry refuses; ``error_code`` is Confluent's (e.g. 40401)."""

    retriable = False

    def __init__(self, error_code: int, message: str) -> None:
        super().__init__(message, retriable=False)
        self.error_code = error_code

    @property
    def http_status(self) -> int:
        """Confluent's five-digit codes start with the HTTP status."""
        code = self.error_code
        return code // 100 if code >= 10000 else code


class DeliveryError(DatabusError):
    """The broker did not acknowledge a record."""

    retriable = True


class SpoolFullError(DeliveryError):
    """The durable local spool is at its bound: the event was not accepted.

    Retriable: once the broker is back the spool drains and accepts again.
    """

    retriable = True


class SinkError(DatabusError):
    """A destination failed to take a batch."""


class StackError(DatabusError):
    """An embedded server failed to start, or to become ready in time."""


class BrokerError(DatabusError):
    """The Kafka broker cannot be reached or does not answer; every command exits 3."""

    retriable = True


class BrokerAuthError(BrokerError):
    """The broker refused the client's credentials (SASL) or the TLS handshake failed."""

    retriable = False
