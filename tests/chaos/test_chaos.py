"""The chaos suite: the real bus under faults, checked against what was published.

Each scenario runs its own stack (see ``chaos_harness``), publishes a known set of
events through a spooled publisher, fires its faults when the publisher has accepted
their share of the events, then waits (with a deadline) until every sink is exact.
It asserts, per sink (IOC store, SQL current state and history, health axis), nothing
lost, duplicated, regressed or unexpected, the IOC counters equal to the entities'
contributions, and the exact DLQ: every invalid event once on its dataset's DLQ with
its reason, the sinks' DLQs empty.

``short`` runs in ``make test``; the others are slow (``make test-slow``), and
``make chaos`` runs them all and writes the table to ``bench/results/``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos_harness import format_table, run_scenario
from chaos_scenarios import FULL, SHORT, Scenario

pytestmark = pytest.mark.integration

# Scenarios that fail on the current code for a fault another change fixes: the
# marker goes once that change is merged (strict=False: a pass is reported, not failed).
# Measured on the code before those changes (bench/results/chaos-*.json): workers exit on
# Faust's ConsistencyError during table recovery after a rebalance, and in one of two
# worker-kill runs (restarted by the harness, the data stays exact); an emptied Redis
# leaves 195 of the ~550 entities lost in the IOC store.
NEEDS_FIX: dict[str, str] = {
    "worker_kills": "Faust table recovery tolerating the embedded broker's watermarks (h1)",
    "rebalance_storm": "Faust table recovery tolerating the embedded broker's watermarks (h1)",
    "redis_restart_without_data": "the IOC sink detecting an empty store and rebuilding (h2)",
}


def run(scenario: Scenario, tmp_path: Path) -> None:
    report = run_scenario(
        scenario.name,
        tmp_path,
        scenario.plan(),
        scenario.faults,
        workers=scenario.workers,
        postgres=scenario.postgres,
        deadline_s=scenario.deadline_s,
    )
    table = format_table([report])
    print("\n" + table)
    assert report["passed"], f"{table}\n{report['sinks']}\n{report['dlq']}\nlogs: {report['logs']}"


@pytest.mark.timeout(240)
def test_short_chaos(tmp_path: Path) -> None:
    run(SHORT, tmp_path)


def _param(name: str) -> object:
    marks = []
    if name in NEEDS_FIX:
        marks.append(pytest.mark.xfail(reason=f"needs {NEEDS_FIX[name]}", strict=False))
    return pytest.param(FULL[name], id=name, marks=marks)


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("scenario", [_param(n) for n in FULL])
def test_chaos(scenario: Scenario, tmp_path: Path) -> None:
    run(scenario, tmp_path)
