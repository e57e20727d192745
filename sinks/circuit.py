"""How a sink waits for its destination: a backoff schedule and a circuit breaker.

Neither sleeps. The runner asks when the next attempt is due and keeps polling
Kafka (with its partitions paused) until then, so the consumer group keeps it as a
member however long the outage lasts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Literal, TypeVar

import pybreaker
from tenacity import RetryCallState, Retrying, wait_exponential_jitter

from bus.errors import DatabusError, SinkError

__all__ = ["CIRCUIT_STATE_VALUES", "Circuit", "CircuitOpenError", "CircuitState", "backoff"]

T = TypeVar("T")

CircuitState = Literal["closed", "half_open", "open"]
# The values of the databus_sink_circuit_state gauge.
CIRCUIT_STATE_VALUES: dict[CircuitState, int] = {"closed": 0, "half_open": 1, "open": 2}

_FROM_PYBREAKER: dict[str, CircuitState] = {
    pybreaker.STATE_CLOSED: "closed",
    pybreaker.STATE_HALF_OPEN: "half_open",
    pybreaker.STATE_OPEN: "open",
}


def backoff(initial_s: float, max_s: float) -> Callable[[int], float]:
    """The wait before retry number ``attempt`` (1-based), from tenacity's
    exponential wait. The jitter is up to ``initial_s``, so it scales with the
    schedule and sinks that failed together do not all retry in step."""
    wait = wait_exponential_jitter(multiplier=initial_s, max=max_s, jitter=initial_s)

    def delay(attempt: int) -> float:
        state = RetryCallState(Retrying(), None, (), {})
        state.attempt_number = max(1, attempt)
        return float(wait(state))

    return delay


class CircuitOpenError(SinkError):
    """The circuit is open and its reset timeout has not passed: nothing was tried."""

    retriable = True


def _not_an_outage(exc: BaseException) -> bool:
    # A broken sink or a bug is not the destination being down: it must not open the
    # circuit (the runner stops on it anyway).
    return not (isinstance(exc, DatabusError) and exc.retriable)


class _StateListener(pybreaker.CircuitBreakerListener):
    def __init__(self, on_change: Callable[[CircuitState], None]) -> None:
        self._on_change = on_change

    def state_change(self, cb: object, old_state: object, new_state: object) -> None:
        self._on_change(_FROM_PYBREAKER[getattr(new_state, "name", pybreaker.STATE_CLOSED)])


class Circuit:
    """pybreaker's breaker in front of one destination.

    Only retriable errors count as failures. ``probe_in`` tells the runner how long
    an open circuit still refuses, so the held batch is tried again no earlier than
    that (and no earlier than its backoff time).
    """

    def __init__(
        self,
        *,
        fail_max: int,
        reset_timeout_s: float,
        on_change: Callable[[CircuitState], None] | None = None,
    ) -> None:
        # Our own storage object: pybreaker keeps the opening time there, and we read it.
        self._storage = pybreaker.CircuitMemoryStorage(pybreaker.STATE_CLOSED)
        self._breaker = pybreaker.CircuitBreaker(
            fail_max=fail_max,
            reset_timeout=reset_timeout_s,
            exclude=[_not_an_outage],
            listeners=[_StateListener(on_change)] if on_change else [],
            state_storage=self._storage,
            # Keep the destination's own error (and its retriable flag) on a trip.
            throw_new_error_on_trip=False,
        )
        self._reset_timeout_s = reset_timeout_s

    @property
    def state(self) -> CircuitState:
        return _FROM_PYBREAKER[self._breaker.current_state]

    def call(self, fn: Callable[[], T]) -> T:
        try:
            result: T = self._breaker.call(fn)
        except pybreaker.CircuitBreakerError as exc:
            raise CircuitOpenError("circuit open: the destination is not probed yet") from exc
        return result

    def probe_in(self) -> float:
        """Seconds until an open circuit lets a probe through (0 unless open)."""
        opened_at = self._storage.opened_at
        if self.state != "open" or opened_at is None:
            return 0.0
        elapsed = (datetime.now(UTC) - opened_at).total_seconds()
        return max(0.0, self._reset_timeout_s - elapsed)
