"""What every benchmark shares: ``--quick`` and ``--out``, and one JSON file per run.

A run's JSON (``<out>/<name>-<UTC time>.json``, ``--out`` defaulting to
``bench/results/``) holds:

- ``name``, ``started``/``finished`` (UTC, ISO 8601), ``seconds``;
- ``git``: the commit of the code under test (the tree the ``schemas`` package is
  imported from, which is not always the tree this file is in: see ``bench/ab.py``)
  and whether that tree had uncommitted changes;
- ``machine``: platform, Python, CPUs, memory, load averages at start and end;
- ``params``: the benchmark's arguments (``quick`` included);
- ``figures``: ``{label: {"value", "unit", "better"}}``, ``better`` being
  ``"higher"`` (a rate) or ``"lower"`` (a time);
- ``ratios``: ``{label: ratio}``, each figure divided by the baseline measured in the
  same run (the figure that the benchmark names as its ``baseline``), or an explicit
  ratio the benchmark computes itself.

Machines here are shared and noisy: compare ratios, and runs made side by side.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import os
import platform
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["RESULTS", "Run", "add_arguments", "product_root", "tree_commit"]

RESULTS = Path(__file__).resolve().parent / "results"


def product_root() -> Path:
    """The checkout whose code is under test: where ``schemas`` is imported from."""
    spec = importlib.util.find_spec("schemas")
    if spec is None or spec.origin is None:
        raise SystemExit("bench: the project is not installed in this Python (make install)")
    return Path(spec.origin).resolve().parent.parent


def tree_commit(root: Path) -> dict[str, Any]:
    """The commit checked out at ``root`` and whether its product code is modified."""

    def git(*argv: str) -> str:
        return subprocess.run(
            ["git", "-C", str(root), *argv], capture_output=True, text=True, check=False
        ).stdout.strip()

    dirty = git("status", "--porcelain", "--", ".", ":!bench", ":!docs")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(dirty), "root": str(root)}


def _memory_gib() -> float | None:
    try:
        import psutil

        return round(float(psutil.virtual_memory().total) / 2**30, 1)
    except ImportError:
        return None


def _machine() -> dict[str, Any]:
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "memory_gib": _memory_gib(),
    }


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """``--quick`` (small sizes, well under a minute) and ``--out`` / ``--no-json``."""
    ap.add_argument(
        "--quick", action="store_true", help="small sizes (under a minute), for a check or A/B"
    )
    ap.add_argument(
        "--out", type=Path, default=RESULTS, help="directory of the run's JSON (bench/results)"
    )
    ap.add_argument("--no-json", action="store_true", help="print only, write no JSON")


def _utc() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


@dataclass
class Run:
    """One benchmark run: figures as they are measured, written once at the end."""

    name: str
    params: dict[str, Any]
    started: str = field(default_factory=_utc)
    _t0: float = field(default_factory=time.perf_counter)
    _load_start: list[float] = field(default_factory=_load)
    figures: dict[str, dict[str, Any]] = field(default_factory=dict)
    ratios: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_args(cls, name: str, args: argparse.Namespace) -> Run:
        params = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
        for k in ("out", "no_json"):
            params.pop(k, None)
        return cls(name, params)

    def figure(
        self, label: str, value: float, unit: str, *, better: str = "higher", baseline: str = ""
    ) -> None:
        """Record a figure; with ``baseline`` (a label already recorded), its ratio too:
        value ÷ baseline for a rate, baseline ÷ value for a time (so > 1 is better)."""
        self.figures[label] = {"value": value, "unit": unit, "better": better}
        if baseline:
            base = self.figures[baseline]["value"]
            if value and base:
                self.ratios[label] = value / base if better == "higher" else base / value

    def write(self, args: argparse.Namespace) -> Path | None:
        if args.no_json:
            return None
        machine = {**_machine(), "loadavg_start": self._load_start, "loadavg_end": _load()}
        doc = {
            "name": self.name,
            "started": self.started,
            "finished": _utc(),
            "seconds": round(time.perf_counter() - self._t0, 1),
            "git": tree_commit(product_root()),
            "machine": machine,
            "params": self.params,
            "figures": self.figures,
            "ratios": self.ratios,
        }
        out: Path = args.out
        out.mkdir(parents=True, exist_ok=True)
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        path = out / f"{self.name}-{stamp}.json"
        n = 1
        while path.exists():
            n += 1
            path = out / f"{self.name}-{stamp}-{n}.json"
        path.write_text(json.dumps(doc, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"raw results: {path}")
        return path
