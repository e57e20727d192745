"""The generated tables of ``docs/benchmarks.md``, from the JSON in ``bench/results/``.

- **Current figures**: for each benchmark, its newest full-size run (else its newest
  ``--quick`` run): every figure with its ratio to the run's baseline.
- **Before/after**: for each benchmark, the newest ``ab-*.json`` that compares it
  (``bench/ab.py``): per figure, the median of each side, after ÷ before, and the
  in-run ratio on each side.

    .venv/bin/python bench/report.py            # print the Markdown
    .venv/bin/python bench/report.py --write    # replace the generated part of the doc

``--write`` replaces what lies between the ``<!-- report.py: begin -->`` and
``<!-- report.py: end -->`` lines of ``docs/benchmarks.md``, nothing else.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import runs

DOC = runs.RESULTS.parent.parent / "docs" / "benchmarks.md"
BEGIN, END = "<!-- report.py: begin -->", "<!-- report.py: end -->"
BENCHES = [
    "codec",
    "standardize",
    "sink_redis",
    "sink_sql",
    "publisher",
    "end_to_end",
    "processor",
    "broker_storage",
]
# A change within this band of 1 is not told apart from the noise of a shared machine.
NOISE = 0.10


def _load(path: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return doc


def _link(path: Path) -> str:
    rel = os.path.relpath(path, DOC.parent)
    return f"[{path.stem.split('-', 1)[1]}]({rel})"


def _num(value: float) -> str:
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.2f}" if abs(value) < 10 else f"{value:.1f}"


def newest_runs() -> dict[str, tuple[Path, dict[str, Any]]]:
    """Per benchmark, its newest full-size run, else its newest quick run."""
    found: dict[str, tuple[Path, dict[str, Any]]] = {}
    for name in BENCHES:
        paths = sorted(runs.RESULTS.glob(f"{name}-*.json"))
        docs = [(p, _load(p)) for p in paths]
        full = [(p, d) for p, d in docs if not d["params"].get("quick")]
        pick = full or docs
        if pick:
            found[name] = pick[-1]
    return found


def current_tables() -> list[str]:
    lines = []
    for name, (path, doc) in newest_runs().items():
        size = "quick" if doc["params"].get("quick") else "full size"
        load = doc["machine"].get("loadavg_start", ["?"])[0]
        lines += [
            f"**{name}** ({size}, commit `{doc['git']['commit'][:7]}`, load {load} on "
            f"{doc['machine']['cpus']} CPUs, {_link(path)}):",
            "",
            "| figure | value | unit | ÷ baseline |",
            "|---|---:|---|---:|",
        ]
        for label, fig in doc["figures"].items():
            ratio = doc["ratios"].get(label)
            shown = "" if ratio is None else f"{ratio:.2f}"
            lines.append(f"| {label} | {_num(fig['value'])} | {fig['unit']} | {shown} |")
        lines.append("")
    return lines


def _external(label: str) -> bool:
    """A baseline that runs none of the project's code (a plain client loop, fastavro):
    its after ÷ before is the noise of the moment, never in bold."""
    return "(baseline)" in label or label.endswith(", fastavro")


def newest_ab() -> list[tuple[Path, dict[str, Any]]]:
    """The ``ab-*.json`` files that hold the newest before/after of some benchmark
    (a later file that compares only some benchmarks does not hide the others)."""
    taken: set[str] = set()
    picked: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(runs.RESULTS.glob("ab-*.json"), reverse=True):
        doc = _load(path)
        benches = {row["bench"] for row in doc["summary"]} - taken
        if benches:
            doc["summary"] = [row for row in doc["summary"] if row["bench"] in benches]
            picked.append((path, doc))
            taken |= benches
    return sorted(picked, key=lambda p: BENCHES.index(p[1]["summary"][0]["bench"]))


def ab_table(path: Path, doc: dict[str, Any]) -> list[str]:
    sides = doc["sides"]
    benches = list(dict.fromkeys(row["bench"] for row in doc["summary"]))
    slow = [b for b in benches if b in ("end_to_end", "processor")]
    rounds = f"{doc['rounds']} runs a side"
    if slow:
        rounds += f" ({doc['slow_rounds']} for {' and '.join(slow)})"
    lines = [
        f"**{', '.join(benches)}**: before `{sides['before']['commit'][:7]}`, after "
        f"`{sides['after']['commit'][:7]}`"
        f"{' (with uncommitted changes)' if sides['after']['dirty'] else ''}; "
        f"{rounds}, interleaved, all `--quick`; {_link(path)}.",
        "",
        "| benchmark | figure | unit | before (median) | after (median) | after ÷ before "
        "| in-run ratio before → after |",
        "|---|---|---|---:|---:|---:|---|",
    ]
    for row in doc["summary"]:
        change = row["after_vs_before"]
        shown = "" if change is None else f"{change:.2f}"
        if change is not None and change < 1 - NOISE and not _external(row["figure"]):
            shown = f"**{shown}**"
        in_run = row["in_run_ratio_medians"]
        ratio = "" if in_run is None else f"{in_run[0]:.2f} → {in_run[1]:.2f}"
        lines.append(
            f"| {row['bench']} | {row['figure']} | {row['unit']} | {_num(row['before_median'])} "
            f"| {_num(row['after_median'])} | {shown} | {ratio} |"
        )
    return [*lines, ""]


def markdown() -> str:
    lines = [BEGIN, "", "### Current figures", "", *current_tables()]
    picked = newest_ab()
    if picked:
        lines += [
            "### Before/after figures",
            "",
            "**after ÷ before** is the ratio of the medians (for a time, before ÷ after): "
            "above 1, after is better; below 0.9 it is in bold, except for the baselines that "
            "run none of the project's code (plain client loops, fastavro), whose change is "
            "the noise of the moment. **in-run ratio** is the "
            "figure ÷ its same-run baseline (median of each side), which the load of the "
            f"moment cancels out of. Changes within ±{NOISE:.0%} are noise on this machine.",
            "",
        ]
        for path, doc in picked:
            lines += ab_table(path, doc)
    lines.append(END)
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--write", action="store_true", help=f"update {DOC.name} in place")
    args = ap.parse_args()
    text = markdown()
    if not args.write:
        print(text)
        return
    doc = DOC.read_text(encoding="utf-8")
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"bench: {DOC} has no {BEGIN} … {END} section to replace")
    head, rest = doc.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    DOC.write_text(head + text + tail, encoding="utf-8")
    print(f"updated {DOC}")


if __name__ == "__main__":
    main()
