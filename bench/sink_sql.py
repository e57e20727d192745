"""Shared-repository sink throughput vs a plain SQLAlchemy Core executemany loop.

The same std events (environment station readings, made distinct per copy) go, in the
same run and on the same database, through:

- baseline: ``conn.execute(insert(table), rows)`` per batch into a table of the same
  columns: the rows already converted, no conflict handling, no history;
- ``SharedRepoSink.write`` in batches: parsing, version-guarded upsert of the current
  table and the history insert (two writes per event), one transaction per batch;
- ``SharedRepoSink.write`` one record per call (what batching saves), on a subset.

On a SQLite file always; on PostgreSQL too where one answers (DATABUS_TEST_POSTGRES_URL,
else the tests' fallback postgresql+psycopg://postgres@127.0.0.1:5432/test), in a schema
made for the run and dropped afterwards.

    .venv/bin/python bench/sink_sql.py [--events 20000] [--batch 500] [--quick]

``--quick``: 4,000 events.
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import runs
import sqlalchemy as sa

sys.path.insert(0, str(runs.product_root() / "tests"))  # the std samples of the code under test
from std_samples import sink_records, std_events

from schemas.catalog import get_dataset
from sinks.base import SinkRecord
from sinks.shared_repo import SharedRepoSink, create_repo_engine, dataset_columns
from sinks.sql_tables import current_table

DATASET = get_dataset("environment.station_readings")
PG_FALLBACK = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def events(n: int) -> list[dict[str, Any]]:
    base = std_events(DATASET.id)
    out = []
    for i in range(n):
        ev = copy.deepcopy(base[i % len(base)])
        ev["event_id"] = uuid.UUID(int=i + 1, version=4)
        ev["after"]["station_id"] = f"{ev['after']['station_id']}-{i // len(base)}"
        out.append(ev)
    return out


def plain_rows(evs: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    columns = dataset_columns(DATASET)
    rows = []
    for ev in evs:
        row = {c.name: c.value_of(ev["after"]) for c in columns}
        row.update(
            _version=ev["source"]["version"],
            _event_id=ev["event_id"],
            _op=ev["op"],
            _deleted=False,
            _source_ts=ev["source"]["ts_ms"],
            _event_ts=ev["ts_ms"],
            _updated_at=ev["ts_ms"],
        )
        rows.append(row)
    return rows


def baseline(
    engine: sa.Engine, schema: str | None, rows: list[dict[str, Any]], batch: int
) -> float:
    md = sa.MetaData()
    table = current_table(DATASET, dataset_columns(DATASET), md, schema=schema)
    table.name = "bench_plain"
    table.fullname = f"{schema}.bench_plain" if schema else "bench_plain"
    md.create_all(engine)
    insert = sa.insert(table)
    t0 = time.perf_counter()
    for i in range(0, len(rows), batch):
        with engine.begin() as conn:
            conn.execute(insert, rows[i : i + batch])
    return time.perf_counter() - t0


def sink_run(engine: sa.Engine, schema: str | None, records: list[SinkRecord], batch: int) -> float:
    sink = SharedRepoSink(engine, db_schema=schema, datasets=[DATASET], batch_size=batch)
    sink.setup()
    t0 = time.perf_counter()
    for i in range(0, len(records), batch):
        assert not sink.write(records[i : i + batch])
    elapsed = time.perf_counter() - t0
    sink.close()
    return elapsed


def fresh_schema(engine: sa.Engine, schema: str | None) -> None:
    with engine.begin() as conn:
        if schema is None:
            for name in sa.inspect(conn).get_table_names():
                conn.exec_driver_sql(f'DROP TABLE "{name}"')
        else:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')


def measure(
    label: str,
    url: str,
    schema: str | None,
    evs: list[dict[str, Any]],
    batch: int,
    run: runs.Run,
) -> None:
    engine = create_repo_engine(url)
    rows = plain_rows(evs)
    records = sink_records(DATASET.id, evs)
    single = records[: max(len(records) // 10, 1)]
    try:
        fresh_schema(engine, schema)
        sink_run(engine, schema, records[:batch], batch)  # warm-up, not timed
        fresh_schema(engine, schema)
        t_plain = baseline(engine, schema, rows, batch)
        t_sink = sink_run(engine, schema, records, batch)
        fresh_schema(engine, schema)
        t_single = sink_run(engine, schema, single, 1)
    finally:
        if schema is not None:
            with engine.begin() as conn:
                conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()
    n = len(evs)
    plain_rate, sink_rate, single_rate = n / t_plain, n / t_sink, len(single) / t_single
    print(f"\n{label}: {n} events (one-at-a-time run: {len(single)})")
    print(f"{'':<52}{'rows/s':>12}{'ratio':>8}")
    print(f"{'Core executemany insert, plain table (baseline)':<52}{plain_rate:>12,.0f}{1:>8.2f}")
    name = f"SharedRepoSink.write, batches of {batch}"
    print(f"{name:<52}{sink_rate:>12,.0f}{sink_rate / plain_rate:>8.2f}")
    name = "SharedRepoSink.write, one record per call"
    print(f"{name:<52}{single_rate:>12,.0f}{single_rate / plain_rate:>8.2f}")
    base = f"{label}: Core executemany insert (baseline)"
    run.figure(base, plain_rate, "rows/s")
    run.figure(f"{label}: SharedRepoSink.write, batches", sink_rate, "rows/s", baseline=base)
    run.figure(f"{label}: SharedRepoSink.write, one per call", single_rate, "rows/s", baseline=base)


def postgres_url() -> str | None:
    url = os.environ.get("DATABUS_TEST_POSTGRES_URL") or PG_FALLBACK
    engine = sa.create_engine(url, connect_args={"connect_timeout": 3})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
        return url
    except sa.exc.SQLAlchemyError:
        return None
    finally:
        engine.dispose()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--batch", type=int, default=500)
    runs.add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.events = 4_000
    run = runs.Run.from_args("sink_sql", args)
    evs = events(args.events)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite:///{Path(tmp) / 'bench.db'}"
        measure("SQLite file", sqlite_url, None, evs, args.batch, run)
    url = postgres_url()
    if url is None:
        print("\nPostgreSQL: none answers, skipped")
    else:
        schema = f"bench_sink_sql_{uuid.uuid4().hex[:8]}"
        measure("PostgreSQL", url, schema, evs, args.batch, run)
    run.write(args)


if __name__ == "__main__":
    main()
