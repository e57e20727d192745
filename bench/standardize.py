"""The standardizer engine's throughput over every dataset's samples, CPU only.

The raw envelopes of all 17 datasets of the catalog, as ``AvroDeserializer`` hands them
to the processor: the simulated samples of the tests (``tests/std_samples.py``: 6 days,
40 records a day, all valid) for 16 datasets, and the dossier simulator's history (about
4 % invalid by design) for the dossiers. Each pass runs ``STANDARDIZERS[dataset](raw,
ref, None)`` over all of them, in order; the baseline, in alternation with it in the same
process, is a plain loop doing the least a standardizer does: copy the envelope and NFC
every text field of ``after``. Figures are the median of ``--repeat`` passes (the first
of each kind not counted), records/s overall and µs per record by dataset.

    .venv/bin/python bench/standardize.py [--repeat 7] [--copies 1] [--quick]

``--quick``: 3 passes.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import unicodedata
from collections import Counter
from collections.abc import Mapping
from types import SimpleNamespace
from typing import Any, cast

import runs
from compat import DossierSpec, generate_dossiers, load_reference

sys.path.insert(0, str(runs.product_root() / "tests"))  # the samples of the code under test
from std_samples import SPEC, raw_envelope

from producers.simulators import SIMULATORS, generate_dataset
from schemas.catalog import DATASETS, DOSSIERS
from stream_processors.standardizers import STANDARDIZERS, Standardized

Sample = tuple[str, Mapping[str, Any]]


def samples(ref: Any) -> list[Sample]:
    """(dataset id, raw envelope) of every dataset, dataset after dataset."""
    out: list[Sample] = []
    for dataset_id in sorted(set(SIMULATORS) - {DOSSIERS.id}):
        out += [(dataset_id, raw_envelope(r)) for r in generate_dataset(dataset_id, SPEC, ref)]
    for ev in generate_dossiers(DossierSpec(days=30, dossiers_per_unit_per_day=2, seed=7), ref):
        rec = SimpleNamespace(
            dataset_id=DOSSIERS.id,
            record=ev.dossier,
            version=ev.version,
            op=ev.op,
            at=ev.at,
            event_id=ev.event_id,
        )
        out.append((DOSSIERS.id, raw_envelope(cast(Any, rec))))  # a SimRecord's fields
    return out


def plain(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The baseline's work on one record: a copy, every text field of ``after`` in NFC."""
    after = {
        k: unicodedata.normalize("NFC", v) if isinstance(v, str) else v
        for k, v in raw["after"].items()
    }
    return {**raw, "source": dict(raw["source"]), "after": after}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--repeat", type=int, default=7, help="timed passes of each kind")
    ap.add_argument("--copies", type=int, default=1, help="passes over the samples per timing")
    runs.add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.repeat = 3
    run = runs.Run.from_args("standardize", args)
    ref = load_reference()
    work = samples(ref) * args.copies
    n = len(work)
    datasets = sorted({d for d, _ in work})
    missing = sorted(set(DATASETS) - set(datasets))
    outcome = Counter(
        "accepted" if isinstance(STANDARDIZERS[d](raw, ref, None), Standardized) else "rejected"
        for d, raw in work
    )
    engine_s: list[float] = []
    plain_s: list[float] = []
    by_dataset: dict[str, list[float]] = {d: [] for d in datasets}
    for i in range(args.repeat + 1):  # the first pass of each kind warms up: not counted
        t0 = time.perf_counter()
        for _, raw in work:
            plain(raw)
        plain_took = time.perf_counter() - t0
        took = dict.fromkeys(datasets, 0.0)
        t0 = time.perf_counter()
        for d, raw in work:
            t = time.perf_counter()
            STANDARDIZERS[d](raw, ref, None)
            took[d] += time.perf_counter() - t
        engine_took = time.perf_counter() - t0
        if i:
            plain_s.append(plain_took)
            engine_s.append(engine_took)
            for d in datasets:
                by_dataset[d].append(took[d])
    counts = Counter(d for d, _ in work)
    engine_rate = n / statistics.median(engine_s)
    plain_rate = n / statistics.median(plain_s)
    print(
        f"records: {n} raw envelopes of {len(datasets)} datasets "
        f"({outcome['accepted']} standardized, {outcome['rejected']} rejected), "
        f"median of {args.repeat} passes"
    )
    if missing:
        print(f"datasets without samples: {', '.join(missing)}")
    print(f"{'':<52}{'records/s':>12}{'ratio':>8}")
    base = "plain loop: copy + NFC of text fields (baseline)"
    print(f"{base:<52}{plain_rate:>12,.0f}{1:>8.2f}")
    label = "standardizer engine, all datasets"
    print(f"{label:<52}{engine_rate:>12,.0f}{engine_rate / plain_rate:>8.2f}")
    run.figure(base, plain_rate, "records/s")
    run.figure(label, engine_rate, "records/s", baseline=base)
    print(f"{'µs per record by dataset (median)':<52}{'records':>12}{'µs':>8}")
    for d in datasets:
        us = statistics.median(by_dataset[d]) / counts[d] * 1e6
        print(f"  {d:<50}{counts[d]:>12,}{us:>8.1f}")
        run.figure(f"µs per record: {d}", us, "µs", better="lower")
    run.write(args)


if __name__ == "__main__":
    main()
