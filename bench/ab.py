"""Before/after: every benchmark on two checkouts, interleaved, medians and ratios.

    git worktree add ../before <commit> && make -C ../before install
    .venv/bin/python bench/ab.py --before ../before [--rounds 5] [--slow-rounds 3] [bench ...]

Each benchmark of this tree's ``bench/`` runs with ``--quick`` on the *before* checkout
(its own ``.venv``, its own code: the benchmark imports the project from the checkout it
runs in, through ``bench/compat.py`` where a name moved) and on the *after* one (this
checkout, or ``--after``), alternately in the same time window — before, after, then
after, before in the next round, and so on — so the machine's noise falls on both
sides alike. Per figure: the median of each side's runs and after ÷ before (for a time,
before ÷ after: above 1 is always "after is better"); and the same for the figure's
ratio to its in-run baseline, which also cancels the load of the moment.

Writes ``bench/results/ab-<UTC time>.json`` (every run's JSON and the summary);
``bench/report.py`` turns it into the table of ``docs/benchmarks.md``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import runs

BENCH = Path(__file__).resolve().parent
# The benchmarks compared (chaos and soak are checks of correctness and memory, minutes
# long; they are not part of a before/after).
ALL = ["codec", "standardize", "sink_redis", "sink_sql", "publisher", "end_to_end", "processor"]
SLOW = {"end_to_end", "processor"}


def run_one(tree: Path, name: str, out: Path, timeout: float) -> dict[str, Any] | None:
    """One ``--quick`` run of ``bench/<name>.py`` on ``tree``; its JSON, or None."""
    out.mkdir(parents=True, exist_ok=True)
    before = set(out.glob(f"{name}-*.json"))
    argv = [str(tree / ".venv" / "bin" / "python"), str(BENCH / f"{name}.py"), "--quick"]
    started = time.monotonic()
    try:
        proc = subprocess.run(
            [*argv, "--out", str(out)],
            cwd=tree,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        print(f"    {name} on {tree}: no result within {timeout:.0f} s", file=sys.stderr)
        return None
    new = sorted(set(out.glob(f"{name}-*.json")) - before)
    if proc.returncode or not new:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        print(f"    {name} on {tree}: exit {proc.returncode}\n{tail}", file=sys.stderr)
        return None
    doc: dict[str, Any] = json.loads(new[-1].read_text(encoding="utf-8"))
    print(f"    {name:<12} {tree.name:<24} {time.monotonic() - started:6.1f} s", flush=True)
    return doc


def summarize(name: str, before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[Any]:
    """One row per figure found on both sides: medians, after ÷ before, and the same for
    the figure's in-run ratio to its baseline."""
    rows = []
    labels = [k for k in after[0]["figures"] if all(k in d["figures"] for d in before + after)]
    for label in labels:
        fig = after[0]["figures"][label]
        b = statistics.median(d["figures"][label]["value"] for d in before)
        a = statistics.median(d["figures"][label]["value"] for d in after)
        change = (a / b if fig["better"] == "higher" else b / a) if a and b else None
        rb = [d["ratios"][label] for d in before if label in d["ratios"]]
        ra = [d["ratios"][label] for d in after if label in d["ratios"]]
        in_run = None
        if rb and ra and len(rb) == len(before) and len(ra) == len(after):
            in_run = [statistics.median(rb), statistics.median(ra)]
        rows.append(
            {
                "bench": name,
                "figure": label,
                "unit": fig["unit"],
                "better": fig["better"],
                "before": [d["figures"][label]["value"] for d in before],
                "after": [d["figures"][label]["value"] for d in after],
                "before_median": b,
                "after_median": a,
                "after_vs_before": change,
                "in_run_ratio_medians": in_run,
                "in_run_after_vs_before": in_run[1] / in_run[0] if in_run and in_run[0] else None,
            }
        )
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("benches", nargs="*", default=ALL, help=f"default: {' '.join(ALL)}")
    ap.add_argument("--before", type=Path, required=True, help="the older checkout")
    ap.add_argument("--after", type=Path, default=BENCH.parent, help="default: this checkout")
    ap.add_argument("--rounds", type=int, default=5, help="runs per side of a fast benchmark")
    ap.add_argument("--slow-rounds", type=int, default=3, help=f"for {', '.join(sorted(SLOW))}")
    ap.add_argument("--timeout", type=float, default=300.0, help="seconds for one run")
    ap.add_argument("--out", type=Path, default=runs.RESULTS)
    args = ap.parse_args()
    sides = {"before": args.before.resolve(), "after": args.after.resolve()}
    for side, tree in sides.items():
        if not (tree / ".venv" / "bin" / "python").exists():
            raise SystemExit(f"bench: {side} checkout {tree} has no .venv: run make install there")
    started = dt.datetime.now(dt.UTC)
    docs: dict[str, dict[str, list[dict[str, Any]]]] = {
        b: {"before": [], "after": []} for b in args.benches
    }
    with tempfile.TemporaryDirectory() as tmp:
        rounds = max(args.rounds, args.slow_rounds)
        for r in range(rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            print(f"round {r + 1}/{rounds}: {' then '.join(order)}", flush=True)
            for name in args.benches:
                if r >= (args.slow_rounds if name in SLOW else args.rounds):
                    continue
                for side in order:
                    doc = run_one(sides[side], name, Path(tmp) / side, args.timeout)
                    if doc is not None:
                        docs[name][side].append(doc)
    rows: list[Any] = []
    for name, by_side in docs.items():
        if by_side["before"] and by_side["after"]:
            rows += summarize(name, by_side["before"], by_side["after"])
    commits = {side: runs.tree_commit(tree) | {"path": str(tree)} for side, tree in sides.items()}
    doc = {
        "name": "ab",
        "started": started.isoformat(timespec="seconds"),
        "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "sides": commits,
        "rounds": args.rounds,
        "slow_rounds": args.slow_rounds,
        "summary": rows,
        "runs": docs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"ab-{started.strftime('%Y%m%dT%H%M%SZ')}.json"
    path.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    for row in rows:
        change = row["after_vs_before"]
        in_run = row["in_run_after_vs_before"]
        print(
            f"{row['bench']:<12} {row['figure'][:60]:<60} "
            f"{row['before_median']:>12,.1f} {row['after_median']:>12,.1f} "
            f"{change if change is None else f'{change:.2f}':>6} "
            f"{'' if in_run is None else f'{in_run:.2f}':>6}"
        )
    print(f"raw results: {path}")


if __name__ == "__main__":
    main()
