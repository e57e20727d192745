"""The compiled Avro codec against fastavro, CPU only (no broker, no registry).

For the dossier raw envelope (``schemas/avro/publicservice``) and its history schema:

(old bodies are written by fastavro with the history schema, from the same dicts)

- encode: the compiled encoder vs ``fastavro.schemaless_writer``, µs per event;
- decode: the compiled decoder vs ``fastavro.schemaless_reader``, µs per event, both
  without schema resolution and with it (written with the history schema, read with
  the current one);
- compile: how long building a decoder takes, with and without resolution (where the
  decoder pairs writer and reader types; paid once per writer schema id).

Every figure is the best of ``--repeat`` runs of ``--events`` events (the best run
is the least disturbed one on a shared machine). Read the ratios.

    .venv/bin/python bench/codec.py [--events 20000] [--repeat 5] [--quick]

``--quick``: 4,000 events, best of 3. The JSON's ratios are fastavro's time ÷ the
compiled codec's (above 1: the compiled one is faster).
"""

from __future__ import annotations

import argparse
import io
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fastavro
import runs
from compat import Dossier, compile_decoder, compile_encoder

from producers.file_drop import template_rows
from schemas.catalog import DOSSIERS

ROOT = runs.product_root()  # the schemas of the code under test
CURRENT = ROOT / "schemas" / "avro" / "publicservice" / "dossiers.raw.v1.avsc"
HISTORY = ROOT / "schemas" / "avro" / "publicservice" / "history" / "dossiers.raw.v1.1.avsc"


def _schema(path: Path) -> Any:
    return fastavro.parse_schema(json.loads(path.read_text(encoding="utf-8")))


def _envelopes(n: int) -> list[dict[str, Any]]:
    """``n`` dossier envelopes (the CSV template's dossier, as the Publisher wraps it)."""
    header, example = template_rows(Dossier)
    template = Dossier.model_validate(dict(zip(header, example, strict=True)))
    now = datetime(2026, 11, 20, tzinfo=UTC)
    after = template.model_dump(mode="python")
    return [
        {
            "event_id": f"00000000-0000-4000-8000-{i:012d}",
            "op": "c",
            "ts_ms": now,
            "source": {
                "system": "bench",
                "unit": "DNA.SCT",
                "dataset": DOSSIERS.id,
                "ts_ms": now,
                "version": 1,
            },
            "before": None,
            "after": {**after, "dossier_id": f"HS-BENCH-{i:08d}"},
        }
        for i in range(n)
    ]


def _best(run: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        best = min(best, time.perf_counter() - start)
    return best


def _fastavro_write(schema: Any, datum: Any) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, schema, datum)
    return buf.getvalue()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--events", type=int, default=20_000)
    ap.add_argument("--repeat", type=int, default=5)
    runs.add_arguments(ap)
    args = ap.parse_args()
    if args.quick:
        args.events, args.repeat = 4_000, 3
    run = runs.Run.from_args("codec", args)
    n, repeat = args.events, args.repeat
    current, history = _schema(CURRENT), _schema(HISTORY)
    data = _envelopes(n)
    encode = compile_encoder(current)
    bodies = [encode(d) for d in data]
    old_bodies = [_fastavro_write(history, d) for d in data]
    decode = compile_decoder(current)
    resolve = compile_decoder(history, current)

    def loop(fn: Callable[[Any], Any], items: list[Any]) -> Callable[[], None]:
        def run() -> None:
            for item in items:
                fn(item)

        return run

    us = 1e6 / n
    rows = [
        ("encode, compiled", _best(loop(encode, data), repeat) * us),
        (
            "encode, fastavro",
            _best(loop(lambda d: _fastavro_write(current, d), data), repeat) * us,
        ),
        ("decode, compiled", _best(loop(decode, bodies), repeat) * us),
        (
            "decode, fastavro",
            _best(
                loop(lambda b: fastavro.schemaless_reader(io.BytesIO(b), current, None), bodies),
                repeat,
            )
            * us,
        ),
        ("decode with resolution, compiled", _best(loop(resolve, old_bodies), repeat) * us),
        (
            "decode with resolution, fastavro",
            _best(
                loop(
                    lambda b: fastavro.schemaless_reader(io.BytesIO(b), history, current),
                    old_bodies,
                ),
                repeat,
            )
            * us,
        ),
    ]
    compiles = max(1, n // 200)
    rows += [
        (
            "compile a decoder (ms)",
            _best(lambda: [compile_decoder(current) for _ in range(compiles)], repeat)
            * 1e3
            / compiles,
        ),
        (
            "compile a resolving decoder (ms)",
            _best(lambda: [compile_decoder(history, current) for _ in range(compiles)], repeat)
            * 1e3
            / compiles,
        ),
    ]
    print(f"{n} dossier envelopes, best of {repeat} runs")
    for name, value in rows:
        unit = "" if "(ms)" in name else " µs/event"
        print(f"  {name:<36} {value:8.2f}{unit}")
    for name, value in rows:
        if "(ms)" in name:
            run.figure(name.replace(" (ms)", ""), value, "ms", better="lower")
    for name, value in rows:  # each fastavro row is the baseline of the compiled row above it
        if name.endswith(", fastavro"):
            run.figure(name, value, "µs/event", better="lower")
            compiled = name.replace(", fastavro", ", compiled")
            run.figure(compiled, dict(rows)[compiled], "µs/event", better="lower", baseline=name)
    run.write(args)


if __name__ == "__main__":
    main()
