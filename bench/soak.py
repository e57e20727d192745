"""Soak: run `databus up` for a while and watch every process's memory and the data dir.

Samples the resident memory (RSS) of `databus up` and of every process under it —
the embedded broker and redis-server included — and the data directory's size,
every ``--every`` seconds. At the end it prints, per process, the figure right after
warm-up, the figure at the end and their ratio; the bar (issue 15) is that every
process stays within 20 % of its post-warm-up size. Each run is written as JSON to
``bench/results/soak-<UTC time>.json`` with every sample.

    .venv/bin/python bench/soak.py --rate 300 --minutes 20 --warmup-minutes 5
    .venv/bin/python bench/soak.py --quick    # 1 minute: does it run

Not a test: a soak measures, it does not pass or fail the suite (exit 1 when a ratio
is over the bar, so it can gate a nightly job).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psutil
import redis
from prometheus_client.parser import text_string_to_metric_families

RESULTS = Path(__file__).parent / "results"
BAR = 1.20


def _name(proc: psutil.Process, up_pid: int) -> str:
    """A stable name for a process under `databus up`: its role, not its pid."""
    try:
        cmd = proc.cmdline()
    except psutil.Error:
        return f"pid-{proc.pid}"
    if proc.pid == up_pid:
        return "up"
    joined = " ".join(cmd)
    if "tansu" in joined:
        return "broker"
    if "databus.standins.object_store" in joined:
        return "broker-storage"
    if "redis-server" in joined:
        return "redis"
    if "-m" in cmd and "databus" in cmd:
        args = cmd[cmd.index("databus") + 1 :]
        return "-".join(a for a in args[:2] if not a.startswith("-")) or "bus"
    return Path(cmd[0]).name if cmd else f"pid-{proc.pid}"


def _dir_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            with contextlib.suppress(OSError):
                total += (Path(root) / f).lstat().st_size
    return total


_LAG = ("databus_consumer_lag", "databus_sink_consumer_lag")


def lag(data_dir: Path) -> dict[str, int]:
    """Each bus process's consumer lag (its metric summed over partitions), scraped
    from the metrics ports `up` lists in ``processes.json``: a bus that keeps up has a
    lag that stays small; one that falls behind, a lag that grows."""
    try:
        processes = json.loads((data_dir / "processes.json").read_text())["processes"]
    except (OSError, ValueError, KeyError):
        return {}
    out: dict[str, int] = {}
    for p in processes:
        port = p.get("metrics_port")
        if not port:
            continue
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                text = r.read().decode()
        except OSError:
            continue  # restarting, or no metrics yet
        total = sum(
            sample.value
            for family in text_string_to_metric_families(text)
            if family.name in _LAG
            for sample in family.samples
        )
        out[str(p["name"])] = int(total)
    return out


def ioc_store(data_dir: Path) -> dict[str, float]:
    """The IOC store's keys and Redis's own count of the bytes it holds (``INFO
    memory``): Redis's RSS follows the data it is given (each new entity is a key);
    bytes per key that stay flat say the growth is content, not a leak."""
    try:
        url = json.loads((data_dir / "stack.json").read_text()).get("redis")
    except (OSError, ValueError):
        return {}
    if not url:
        return {}
    try:
        client = redis.Redis.from_url(url, socket_timeout=5)
        try:
            keys = int(client.dbsize())
            used = float(client.info("memory")["used_memory"])
        finally:
            client.close()
    except (redis.RedisError, OSError, KeyError, ValueError):
        return {}  # restarting
    return {
        "keys": keys,
        "used_mb": round(used / 1e6, 1),
        "bytes_per_key": round(used / keys) if keys else 0.0,
    }


def sample(up: psutil.Process, data_dir: Path) -> dict[str, object]:
    """RSS in MB per named process (summed when a role has several), the data dir,
    and each bus process's consumer lag."""
    rss: dict[str, float] = {}
    try:
        procs = [up, *up.children(recursive=True)]
    except psutil.Error:
        procs = []
    for proc in procs:
        try:
            mb = proc.memory_info().rss / 1e6
        except psutil.Error:
            continue
        name = _name(proc, up.pid)
        rss[name] = round(rss.get(name, 0.0) + mb, 1)
    return {
        "t": round(time.monotonic(), 1),
        "rss_mb": rss,
        "data_dir_mb": round(_dir_size(data_dir) / 1e6, 1),
        "lag": lag(data_dir),
        "ioc_store": ioc_store(data_dir),
    }


def summarize(samples: list[dict[str, object]], warmup_s: float) -> dict[str, dict[str, float]]:
    """Per figure: the first sample at or after warm-up, the last, and their ratio."""

    def at(s: dict[str, object]) -> float:
        return float(s["t"])  # type: ignore[arg-type]

    def rss(s: dict[str, object]) -> dict[str, float]:
        return s["rss_mb"]  # type: ignore[return-value]

    t0 = at(samples[0])
    after = [s for s in samples if at(s) - t0 >= warmup_s]
    if not after:
        return {}
    warm, end = after[0], after[-1]
    out: dict[str, dict[str, float]] = {}
    for name in sorted(set(rss(warm)) & set(rss(end))):
        w, e = rss(warm)[name], rss(end)[name]
        out[f"rss {name}"] = {"warm": w, "end": e, "ratio": round(e / w, 3) if w else 0.0}
    w, e = float(warm["data_dir_mb"]), float(end["data_dir_mb"])  # type: ignore[arg-type]
    out["data dir"] = {"warm": w, "end": e, "ratio": round(e / w, 3) if w else 0.0}
    return out


def ioc_figures(samples: list[dict[str, object]], warmup_s: float) -> dict[str, dict[str, float]]:
    """The IOC store's keys, used MB and bytes per key: right after warm-up and at the
    end (not held to the bar: the store holds what the bus is given)."""
    t0 = float(samples[0]["t"])  # type: ignore[arg-type]
    seen = [
        dict(s["ioc_store"])  # type: ignore[call-overload]
        for s in samples
        if float(s["t"]) - t0 >= warmup_s and s.get("ioc_store")  # type: ignore[arg-type]
    ]
    if not seen:
        return {}
    warm, end = seen[0], seen[-1]
    return {
        name: {
            "warm": float(warm[name]),
            "end": float(end[name]),
            "ratio": round(float(end[name]) / float(warm[name]), 3) if warm[name] else 0.0,
        }
        for name in ("keys", "used_mb", "bytes_per_key")
    }


def lag_figures(samples: list[dict[str, object]], warmup_s: float) -> dict[str, dict[str, int]]:
    """Per bus process after warm-up: its largest consumer lag and its last."""
    t0 = float(samples[0]["t"])  # type: ignore[arg-type]
    out: dict[str, dict[str, int]] = {}
    for s in samples:
        if float(s["t"]) - t0 < warmup_s:  # type: ignore[arg-type]
            continue
        for name, value in dict(s.get("lag") or {}).items():  # type: ignore[call-overload]
            f = out.setdefault(name, {"max": 0, "end": 0})
            f["max"], f["end"] = max(f["max"], int(value)), int(value)
    return out


def _start_loader(
    data_dir: Path, env: dict[str, str], args: argparse.Namespace, round_: int, work: Path
) -> subprocess.Popen[bytes] | None:
    """A second publisher at ``--rate`` against the running bus (`up`'s own feed is the
    live one, a few events a minute): `databus simulate` of ``--load-days`` history,
    run after run with a new seed, for as long as the soak lasts."""
    state = data_dir / "processes.json"
    try:
        addresses = json.loads(state.read_text())["addresses"]
    except (OSError, ValueError, KeyError):
        return None  # `up` is still starting
    load_env = {
        **env,
        "DATABUS_KAFKA__BOOTSTRAP_SERVERS": addresses["kafka"],
        "DATABUS_SCHEMA_REGISTRY__URL": addresses["schema_registry"],
        "DATABUS_METRICS__PORT": "0",
    }
    return subprocess.Popen(
        [
            *(sys.executable, "-m", "databus", "simulate", "--rate", str(args.rate)),
            *("--days", str(args.load_days), "--seed", str(1000 + round_)),
        ],
        cwd=work,
        env=load_env,
        stdout=(work / "load.log").open("ab"),
        stderr=subprocess.STDOUT,
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rate", type=float, default=300, help="simulator events per second")
    ap.add_argument("--minutes", type=float, default=20, help="total run time")
    ap.add_argument("--warmup-minutes", type=float, default=5)
    ap.add_argument("--every", type=float, default=15, help="seconds between samples")
    ap.add_argument("--days", type=int, default=7, help="simulated history for `up`")
    ap.add_argument("--label", default="", help="a note stored with the run")
    ap.add_argument(
        "--no-load",
        dest="load",
        action="store_false",
        help="only `up`'s own feed (the live dossiers), no extra publisher at --rate",
    )
    ap.add_argument("--load-days", type=int, default=60, help="history per loader run")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a check that the soak runs: 1 minute, 15 s of warm-up, a sample every 5 s",
    )
    ap.add_argument("--out", type=Path, default=RESULTS, help="directory of the run's JSON")
    ap.add_argument(
        "--budget-mb",
        type=float,
        default=None,
        help="the embedded broker's disk budget for topics kept without a time limit "
        "(DATABUS_SUPERVISE__EMBEDDED_BROKER_BUDGET_MB; default: up's own)",
    )
    args = ap.parse_args()
    if args.quick:
        args.minutes, args.warmup_minutes, args.every = 1.0, 0.25, 5.0

    work = Path(tempfile.mkdtemp(prefix="databus-soak-"))
    data_dir = work / "data"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABUS_")}
    env["DATABUS_DATA_DIR"] = str(data_dir)
    if args.budget_mb is not None:
        env["DATABUS_SUPERVISE__EMBEDDED_BROKER_BUDGET_MB"] = str(args.budget_mb)
    log = (work / "up.out").open("wb")
    cmd = [
        sys.executable,
        "-m",
        "databus",
        "up",
        "--rate",
        str(args.rate),
        "--days",
        str(args.days),
    ]
    proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    up = psutil.Process(proc.pid)
    samples: list[dict[str, object]] = []
    started = time.monotonic()
    print(f"soak: {' '.join(cmd[1:])} in {work}, {args.minutes:g} min", flush=True)
    loader: subprocess.Popen[bytes] | None = None
    rounds = 0
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        while time.monotonic() - started < args.minutes * 60 and proc.poll() is None:
            if args.load and (loader is None or loader.poll() is not None):
                loader = _start_loader(data_dir, env, args, rounds, work)
                rounds += 1 if loader is not None else 0
            s = sample(up, data_dir)
            s["load_rounds"] = rounds
            samples.append(s)
            print(
                f"{time.monotonic() - started:7.0f} s  {json.dumps(s['rss_mb'])}  "
                f"data {s['data_dir_mb']} MB  lag {sum(dict(s['lag']).values())}",  # type: ignore[call-overload]
                flush=True,
            )
            time.sleep(args.every)  # the sampling period, not synchronisation
    except KeyboardInterrupt:
        print("soak: interrupted, stopping `up`", flush=True)
    finally:
        if loader is not None and loader.poll() is None:
            loader.terminate()
            loader.wait(30)
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        log.close()
    figures = summarize(samples, args.warmup_minutes * 60) if samples else {}
    lags = lag_figures(samples, args.warmup_minutes * 60) if samples else {}
    ioc = ioc_figures(samples, args.warmup_minutes * 60) if samples else {}
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = args.out / f"soak-{stamp}.json"
    out.write_text(
        json.dumps(
            {
                "label": args.label,
                "rate": args.rate,
                "minutes": args.minutes,
                "warmup_minutes": args.warmup_minutes,
                "budget_mb": args.budget_mb,
                "exit_code": proc.returncode,
                "figures": figures,
                "lag_after_warmup": lags,
                "ioc_store": ioc,
                "samples": samples,
            },
            indent=1,
        )
    )
    print(f"\n{'figure':<24}{'warm-up':>10}{'end':>10}{'ratio':>8}")
    over = []
    for name, f in figures.items():
        flag = "" if f["ratio"] <= BAR else "  over the bar"
        if flag:
            over.append(name)
        print(f"{name:<24}{f['warm']:>10.1f}{f['end']:>10.1f}{f['ratio']:>8.2f}{flag}")
    if lags:
        print(f"\n{'consumer lag after warm-up':<28}{'max':>10}{'end':>10}")
        for name, g in sorted(lags.items()):
            print(f"{name:<28}{g['max']:>10,}{g['end']:>10,}")
    if ioc:
        print(f"\n{'IOC store (redis)':<24}{'warm-up':>10}{'end':>10}{'ratio':>8}")
        for name, f in ioc.items():
            print(f"{name:<24}{f['warm']:>10,.1f}{f['end']:>10,.1f}{f['ratio']:>8.2f}")
    print(f"raw run: {out}; `up` output and logs: {work}")
    return 1 if over else 0


if __name__ == "__main__":
    raise SystemExit(main())
