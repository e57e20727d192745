"""The chaos suite's source system: a spooled Publisher in a process of its own.

    python chaos_publisher.py '<plan JSON>' <first index>

Publishes the plan's records (``plan_records``: deterministic for the plan) from the
given index, one line ``accepted <n>`` on stdout after each ``publish()`` returned
(the event is then durable in the spool, ``DATABUS_SPOOL__PATH``), at most ``rate``
events a second; then flushes and prints ``done <spooled>``. A harness may SIGKILL it
at any moment and start it again from the last ``accepted`` count: what the killed
process accepted is in its spool, which the next one drains first.

Not a test module: the harness imports ``plan_records`` from it.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Plan", "plan_records"]


@dataclass(frozen=True)
class Plan:
    """What to publish: each dataset's simulated history (``SimSpec`` fields), merged
    in time order; ``end`` fixed by the harness so every process makes the same records."""

    datasets: tuple[str, ...]
    days: int
    per_day: int
    seed: int
    invalid_share: float
    end: str  # ISO time, aware
    rate: float = 0.0  # events a second; 0: as fast as the spool takes them

    def to_json(self) -> str:
        return json.dumps({**self.__dict__, "datasets": list(self.datasets)})

    @classmethod
    def from_json(cls, text: str) -> Plan:
        data: dict[str, Any] = json.loads(text)
        return cls(**{**data, "datasets": tuple(data["datasets"])})


def plan_records(plan: Plan) -> list[Any]:
    """The plan's ``SimRecord`` items, in publishing order."""
    from producers.simulators import SimSpec, generate_dataset
    from schemas.domain.reference import load_reference

    ref = load_reference()
    spec = SimSpec(
        days=plan.days,
        per_day=plan.per_day,
        seed=plan.seed,
        invalid_share=plan.invalid_share,
        end=datetime.fromisoformat(plan.end),
    )
    records = [r for ds in plan.datasets for r in generate_dataset(ds, spec, ref)]
    return sorted(records, key=lambda r: (r.at, r.dataset_id, r.event_id))


def main(argv: list[str]) -> int:
    from bus.settings import load_settings
    from producers.publisher import Publisher
    from schemas.catalog import get_dataset

    plan = Plan.from_json(argv[0])
    first = int(argv[1])
    records = plan_records(plan)
    with Publisher(load_settings(), source_system="chaos-source") as pub:
        print("ready", pub.spooled, flush=True)
        started = time.monotonic()
        for n, rec in enumerate(records[first:], start=first + 1):
            pub.publish(
                get_dataset(rec.dataset_id),
                rec.record,
                version=rec.version,
                op=rec.op,
                changed_at=rec.at,
                event_id=rec.event_id,
            )
            print("accepted", n, flush=True)
            if plan.rate:
                ahead = (n - first) / plan.rate - (time.monotonic() - started)
                if ahead > 0:
                    time.sleep(ahead)  # pacing a simulated source, not synchronisation
        pub.flush(120.0)
        print("done", pub.spooled, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
