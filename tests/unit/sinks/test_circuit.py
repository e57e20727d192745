"""The backoff schedule and the circuit breaker a sink waits behind, without a broker."""

from __future__ import annotations

import pytest

from bus.errors import SinkError
from sinks.circuit import CIRCUIT_STATE_VALUES, Circuit, CircuitOpenError, CircuitState, backoff


def test_backoff_doubles_from_initial_with_at_most_initial_of_jitter_and_caps_at_max() -> None:
    delay = backoff(0.5, 8.0)
    for attempt in range(1, 12):
        base = 0.5 * 2 ** (attempt - 1)
        for _ in range(50):
            got = delay(attempt)
            assert min(base, 8.0) <= got <= min(base + 0.5, 8.0)
    assert delay(40) == 8.0  # far out: the cap, never an overflow


def test_backoff_jitter_spreads_retries() -> None:
    delay = backoff(1.0, 60.0)
    assert len({delay(3) for _ in range(20)}) > 1


class Destination:
    def __init__(self) -> None:
        self.calls = 0
        self.error: Exception | None = None

    def __call__(self) -> str:
        self.calls += 1
        if self.error is not None:
            raise self.error
        return "ok"


def outage() -> SinkError:
    return SinkError("503", retriable=True)


def test_retriable_failures_open_the_circuit_and_an_open_circuit_calls_nothing() -> None:
    seen: list[CircuitState] = []
    circuit = Circuit(fail_max=2, reset_timeout_s=60, on_change=seen.append)
    dest = Destination()
    dest.error = outage()
    for _ in range(2):
        with pytest.raises(SinkError) as caught:
            circuit.call(dest)
        assert caught.value is dest.error  # the destination's own error, not pybreaker's
    assert circuit.state == "open"
    assert seen == ["open"]
    assert 59 < circuit.probe_in() <= 60

    with pytest.raises(CircuitOpenError) as refused:
        circuit.call(dest)
    assert refused.value.retriable
    assert dest.calls == 2


def test_after_the_reset_timeout_one_probe_closes_or_reopens_the_circuit() -> None:
    seen: list[CircuitState] = []
    circuit = Circuit(fail_max=1, reset_timeout_s=0, on_change=seen.append)
    dest = Destination()
    dest.error = outage()
    with pytest.raises(SinkError):
        circuit.call(dest)
    assert circuit.state == "open"
    assert circuit.probe_in() == 0

    with pytest.raises(SinkError):  # the probe fails: open again
        circuit.call(dest)
    assert circuit.state == "open"
    dest.error = None
    assert circuit.call(dest) == "ok"
    assert circuit.state == "closed"  # type: ignore[comparison-overlap]  # mypy keeps "open"
    assert seen == ["open", "half_open", "open", "half_open", "closed"]
    assert [CIRCUIT_STATE_VALUES[s] for s in seen] == [2, 1, 2, 1, 0]


def test_a_permanent_error_does_not_count_towards_opening() -> None:
    circuit = Circuit(fail_max=1, reset_timeout_s=60)
    dest = Destination()
    dest.error = SinkError("misconfigured", retriable=False)
    for _ in range(3):
        with pytest.raises(SinkError):
            circuit.call(dest)
    assert circuit.state == "closed"
    assert circuit.probe_in() == 0
