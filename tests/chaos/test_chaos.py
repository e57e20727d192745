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


@pytest.mark.slow
@pytest.mark.timeout(900)
@pytest.mark.parametrize("scenario", [pytest.param(s, id=n) for n, s in FULL.items()])
def test_chaos(scenario: Scenario, tmp_path: Path) -> None:
    run(scenario, tmp_path)
