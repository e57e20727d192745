"""The chaos scenarios: which events, which faults, at which share of the publishing.

Shared by the tests (``test_chaos.py``) and the runner (``bench/chaos.py``). Every
scenario publishes the three health datasets (they reach all three sinks: IOC store,
shared repository, health axis) — the full ones add two more sectors for the IOC and
SQL sinks — with 8 % invalid events the processor must dead-letter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from chaos_harness import ChaosBus, Fault, plan_for
from chaos_publisher import Plan

__all__ = ["FULL", "SCENARIOS", "SHORT", "Scenario"]

HEALTH = ("health.facilities", "health.encounters", "health.disease_cases")
MIXED = (*HEALTH, "education.schools", "feedback.reports")


@dataclass(frozen=True)
class Scenario:
    name: str
    plan: Callable[[], Plan]
    faults: tuple[Fault, ...]
    workers: int = 2
    postgres: bool = False
    deadline_s: float = 300.0
    needs: str | None = field(default=None)  # the fix it waits for, when it fails now


def _full_plan() -> Plan:
    return plan_for(MIXED, days=3, per_day=40, rate=25.0)


def _kill(role: str, *, wait_ready: bool = True) -> Callable[[ChaosBus], None]:
    return lambda bus: bus.kill_and_restart(role, wait_ready=wait_ready)


SHORT = Scenario(
    "short",
    lambda: plan_for(HEALTH, days=1, per_day=30, rate=12.0),
    (
        Fault("axis 500 x3", 0.2, lambda bus: bus.axis_failures(3)),
        Fault("kill sink-ioc", 0.5, _kill("sink-ioc")),
    ),
    workers=1,
    deadline_s=45.0,
)

FULL: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "worker_kills",
            _full_plan,
            tuple(
                Fault(f"kill worker #{i}", at, _kill("worker", wait_ready=False))
                for i, at in enumerate((0.2, 0.4, 0.6, 0.8), 1)
            ),
            needs="h1: Faust table recovery tolerating the embedded broker's watermarks",
        ),
        Scenario(
            "rebalance_storm",
            _full_plan,
            (Fault("rebalance storm x4", 0.25, lambda bus: bus.rebalance_storm(4)),),
            needs="h1: Faust table recovery tolerating the embedded broker's watermarks",
        ),
        Scenario(
            "sink_kills",
            _full_plan,
            (
                Fault("kill sink-ioc", 0.25, _kill("sink-ioc")),
                Fault("kill sink-sql", 0.5, _kill("sink-sql")),
                Fault("kill sink-health", 0.75, _kill("sink-health")),
            ),
        ),
        Scenario(
            "redis_restart_with_data",
            _full_plan,
            (Fault("redis SIGKILL, restart with data", 0.5, lambda b: b.redis_restart(True)),),
        ),
        Scenario(
            "redis_restart_without_data",
            _full_plan,
            (Fault("redis SIGKILL, restart empty", 0.5, lambda b: b.redis_restart(False)),),
            deadline_s=120.0,
            needs="h2: the IOC sink detects an empty store and rebuilds it",
        ),
        Scenario(
            "postgres_crash",
            _full_plan,
            (Fault("postgres SIGKILL, restart", 0.5, lambda bus: bus.postgres_crash()),),
            postgres=True,
        ),
        Scenario(
            "axis_500s_and_stalls",
            _full_plan,
            (
                Fault("axis 500 x5", 0.3, lambda bus: bus.axis_failures(5)),
                Fault("axis stall x3", 0.6, lambda bus: bus.axis_stalls(3)),
            ),
        ),
        Scenario(
            "paused_broker",
            _full_plan,
            (Fault("broker SIGSTOP/SIGCONT", 0.5, lambda bus: bus.pause_broker()),),
        ),
        Scenario(
            "publisher_kill",
            _full_plan,
            (
                Fault("kill publisher", 0.3, lambda bus: bus.kill_publisher()),
                Fault("kill publisher", 0.7, lambda bus: bus.kill_publisher()),
            ),
        ),
    )
}

SCENARIOS: dict[str, Scenario] = {"short": SHORT, **FULL}
