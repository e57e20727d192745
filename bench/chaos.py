"""The chaos suite as a runner: every scenario (or those named), its table, and JSON.

Runs the scenarios of ``tests/chaos/chaos_scenarios.py`` one after another, each on a
stack of its own, prints one table (events, faults, and per sink lost / duplicated /
regressed / unexpected / counter drift, plus the DLQ's misses), and writes
``bench/results/chaos-<UTC time>.json`` with every report. Exit status 1 when a
scenario did not pass.

    .venv/bin/python bench/chaos.py [scenario ...] [--keep DIR] [--quick]

``--quick``: the ``short`` scenario only (about a minute).
    make chaos
"""

from __future__ import annotations

import argparse
import json
import platform
import signal
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "tests" / "chaos"), str(ROOT / "tests")]

from chaos_harness import format_table, run_scenario  # noqa: E402
from chaos_scenarios import SCENARIOS  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", help=f"default: all of {', '.join(SCENARIOS)}")
    parser.add_argument("--keep", type=Path, help="run directories (logs) here; default: temp")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--quick", action="store_true", help="the short scenario only")
    args = parser.parse_args()
    if args.quick and args.scenarios:
        parser.error("--quick runs the short scenario: name no scenario with it")
    # a plain `kill` stops the stacks cleanly too (their servers, PostgreSQL included)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    names = ["short"] if args.quick else args.scenarios or list(SCENARIOS)
    unknown = [n for n in names if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; there are {list(SCENARIOS)}")
    base = args.keep or Path(tempfile.mkdtemp(prefix="databus-chaos-"))
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out / f"chaos-{stamp}.json"
    reports = []
    for name in names:
        scenario = SCENARIOS[name]
        print(f"== {name}", flush=True)
        report = run_scenario(
            name,
            base / name,
            scenario.plan(),
            scenario.faults,
            workers=scenario.workers,
            postgres=scenario.postgres,
            deadline_s=scenario.deadline_s,
        )
        if not report["passed"] and scenario.needs:
            report["needs"] = scenario.needs
        reports.append(report)
        args.out.mkdir(parents=True, exist_ok=True)
        out.write_text(
            json.dumps(
                {"started": stamp, "host": platform.node(), "cpus": _cpus(), "runs": reports},
                indent=2,
                sort_keys=True,
            )
            + "\n"
        )
    print()
    print(format_table(reports))
    print(f"\nwritten: {out}")
    return 0 if all(r["passed"] for r in reports) else 1


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


if __name__ == "__main__":
    raise SystemExit(main())
