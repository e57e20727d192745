"""The ``databus`` command line: one Typer app; groups of commands live in their own
modules (``catalog_cli``, ``sink_cli``, ``dlq_cli``, ``opendata_cli``, ``agency_cli``).
``databus --help`` lists them; docs/operations.md, "Commands", explains them.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer
from rich.console import RenderableType
from rich.live import Live
from rich.markup import escape

from bus.errors import DatabusError
from bus.private_files import owner_only_umask
from databus.agency_cli import agency_app
from databus.catalog_cli import catalog_app
from databus.cli_common import (
    CATCHING_UP_LAG,
    EXIT_BAD_SETTING,
    EXIT_BROKER,
    NO_BUS_HINT,
    broker_or_exit,
    console,
    err_console,
    exit_code_for,
    fail,
    row_progress,
    settings_or_exit,
    setup_logging,
    stop_on_signals,
)
from databus.dlq_cli import dlq_app
from databus.opendata_cli import opendata_app
from databus.ops_cli import ops_app, topics_app
from databus.sink_cli import sink_app
from databus.status_cli import status_app

if TYPE_CHECKING:
    from databus.dashboard import Snapshot
    from databus.local_stack import LocalStack
    from databus.stack_file import StackInfo
    from databus.supervisor import Supervisor

__all__ = ["app", "main"]

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="databus, the provincial data-sharing bus. `databus up` runs it all locally.",
)
app.add_typer(sink_app, name="sink")
app.add_typer(catalog_app, name="catalog")
app.add_typer(opendata_app, name="opendata")
schemas_app = typer.Typer(no_args_is_help=True, help="Schemas in the registry.")
app.add_typer(schemas_app, name="schemas")
app.add_typer(dlq_app, name="dlq")
app.add_typer(agency_app)  # share, api, acl render, audit verify, agency-token
app.add_typer(ops_app)  # tail, backfill
app.add_typer(status_app)  # status
app.add_typer(topics_app, name="topics")
log = logging.getLogger("databus")


def _version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"databus {version('databus')}")
        except PackageNotFoundError:
            typer.echo("databus (not installed: run `make install`)")
        raise typer.Exit(0)


@app.callback()
def _root(
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit"
        ),
    ] = False,
) -> None:
    """databus, the provincial data-sharing bus. `databus up` runs it all locally."""


_settings = settings_or_exit
_logging = setup_logging


@app.command()
def process() -> None:
    """Run the stream processor: standardize, dead-letter, alert."""
    import faust

    from bus.logs import faust_worker_options
    from bus.metrics import Metrics, serve_metrics
    from stream_processors.app import create_app

    _logging()
    settings = _settings()
    broker_or_exit(settings)  # exit 3 saying why the broker cannot be used
    metrics = Metrics()
    port = serve_metrics(metrics, settings.metrics.host, settings.metrics.port)
    log.info("processor metrics on http://%s:%d/metrics", settings.metrics.host, port)
    faust_app = create_app(settings, metrics)
    # The logging set up above is kept (text or JSON, no colour codes); the spinner and
    # the banner only on a terminal (bus.logs.faust_worker_options).
    options = faust_worker_options()
    worker = faust.Worker(faust_app, **options)
    if options["quiet"]:
        worker.spinner = None
    worker.execute_from_commandline()


@app.command()
def simulate(
    days: Annotated[int, typer.Option(help="Simulated history, in days")] = 30,
    per_day: Annotated[float, typer.Option(help="Dossiers per unit per working day")] = 3.0,
    units: Annotated[int | None, typer.Option(help="How many units (default: all)")] = None,
    rate: Annotated[float, typer.Option(help="Events per second (0: as fast as possible)")] = 500,
    seed: Annotated[int, typer.Option(help="Random seed")] = 7,
    live: Annotated[
        bool, typer.Option(help="Keep publishing new dossiers after the history")
    ] = False,
    sectors: Annotated[
        bool,
        typer.Option(help="After the dossiers, every other catalog dataset's simulated history"),
    ] = False,
) -> None:
    """Publish simulated dossier events from the public-service portal (and, with
    --sectors, every other dataset of the catalog)."""
    from bus.metrics import Metrics, serve_metrics
    from producers.publisher import Publisher
    from producers.simulators import (
        DOSSIERS_DATASET,
        SIMULATORS,
        DossierSpec,
        SimSpec,
        generate_dataset,
        generate_dossiers,
        live_dossiers,
        publish_records,
    )
    from schemas.domain.reference import load_reference

    _logging()
    settings = _settings()
    broker_or_exit(settings)  # exit 3 saying why the broker cannot be used
    metrics = Metrics()
    serve_metrics(metrics, settings.metrics.host, settings.metrics.port)
    ref = load_reference()
    config = DossierSpec(days=days, dossiers_per_unit_per_day=per_day, units=units, seed=seed)
    events = generate_dossiers(config, ref)
    stop = stop_on_signals()
    with Publisher(settings, source_system="dvc-portal-sim", metrics=metrics) as publisher:
        sent = publish_records(publisher, events, rate=rate or None, stop=stop.is_set)
        log.info("published %d history events", sent)
        if sectors and not stop.is_set():
            others = [ds for ds in SIMULATORS if ds != DOSSIERS_DATASET]
            spec = SimSpec(days=min(days, 7), per_day=10, seed=seed)
            records = sorted(
                (r for ds in others for r in generate_dataset(ds, spec, ref)),
                key=lambda r: r.at,
            )
            sent = publish_records(publisher, records, rate=rate or None, stop=stop.is_set)
            log.info("published %d events of %d other datasets", sent, len(others))
        if live:
            for batch in live_dossiers(config, ref):
                if stop.wait(10.0):
                    break
                publish_records(publisher, batch, stop=stop.is_set)


@schemas_app.command("register")
def schemas_register() -> None:
    """Register every catalog schema (history first) with the configured registry."""
    from confluent_kafka.schema_registry import SchemaRegistryClient

    from schemas.catalog import DATASETS
    from schemas.register import register_catalog

    settings = _settings()
    if settings.schema_registry.url is None:
        fail(f"DATABUS_SCHEMA_REGISTRY__URL is not set: {NO_BUS_HINT}.", EXIT_BAD_SETTING)
    try:
        with SchemaRegistryClient(settings.schema_registry.client_config()) as client:
            done = register_catalog(
                client,
                DATASETS,
                on_progress=lambda subject, path, version, sid: console.print(
                    f"  {subject} ← {path}: version {version}, id {sid}"
                ),
            )
    except DatabusError as exc:
        fail(str(exc), exit_code_for(exc, 1))
    console.print(f"[green]✓[/] {len(done)} subjects registered or already current")


@app.command()
def template(
    dataset: Annotated[str, typer.Option("--dataset", help="Catalog dataset id")],
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write to this file (default: standard output)"),
    ] = None,
) -> None:
    """The CSV header a file drop expects, with one example row (to stdout, or -o FILE)."""
    import csv
    import sys

    from producers.file_drop import template_rows
    from schemas.catalog import get_dataset

    try:
        ds = get_dataset(dataset)
    except DatabusError as exc:
        fail(f"{exc}\nSee `databus catalog list`.", exit_code_for(exc, 2))
    header, example = template_rows(ds.model)
    if out is None:
        csv.writer(sys.stdout, lineterminator="\n").writerows([header, example])
        return
    try:
        with out.open("w", newline="", encoding="utf-8") as fh:
            csv.writer(fh).writerows([header, example])
    except OSError as exc:
        fail(f"cannot write {out}: {exc.strerror or exc}", EXIT_BAD_SETTING)
    err_console.print(f"wrote {out}: {len(header)} columns; replace the example row with your data")


@app.command()
def publish(
    file: Annotated[Path, typer.Argument(help="CSV, JSON Lines (.jsonl) or Excel (.xlsx)")],
    dataset: Annotated[str, typer.Option("--dataset", help="Catalog dataset id")],
    rejects: Annotated[
        Path | None, typer.Option(help="Reject file (default: <file>.rejects.csv)")
    ] = None,
) -> None:
    """Publish a file's valid rows; rejected rows go to a reject file. Exit 1 if any.

    A file that cannot be read as the dataset exits 2 with one line on stderr naming
    the file, the line where known and the problem; nothing is published.
    """

    from databus.file_checks import row_check_for
    from producers.file_drop import publish_file, read_rows
    from producers.publisher import Publisher
    from schemas.catalog import get_dataset

    def refuse(exc: Exception) -> typer.Exit:
        # one line, printable whatever bytes the file held
        line = " ".join(str(exc).split()).encode("utf-8", "backslashreplace").decode()
        typer.echo(f"databus publish: {line}", err=True)
        return typer.Exit(2)

    try:
        ds = get_dataset(dataset)
        total = sum(1 for _ in read_rows(file, ds.model))  # the whole file, before any send
    except DatabusError as exc:
        raise refuse(exc) from exc
    settings = _settings()
    if not settings.kafka.bootstrap_servers or not settings.schema_registry.url:
        fail(
            "DATABUS_KAFKA__BOOTSTRAP_SERVERS and DATABUS_SCHEMA_REGISTRY__URL must be set "
            f"to publish a file: {NO_BUS_HINT}.",
            EXIT_BAD_SETTING,
        )
    broker_or_exit(settings)
    try:
        with (
            Publisher(settings, source_system="file-drop") as publisher,
            row_progress(f"publishing {file.name}", total) as advance,
        ):
            result = publish_file(
                publisher,
                ds,
                file,
                check=row_check_for(ds),
                reject_path=rejects,
                on_row=advance,
            )
    except (DatabusError, OSError) as exc:
        raise refuse(exc) from exc
    console.print(f"{result.published} of {result.rows} rows published to {ds.raw_topic}")
    if result.rejects:
        console.print(
            f"[yellow]{len(result.rejects)} rows rejected[/] — see {result.reject_path} "
            "(line, field and reason for each); fix them and submit that file again."
        )
        raise typer.Exit(1)


@app.command()
def outbox(
    create_table: Annotated[
        bool, typer.Option(help="Create the outbox table first (a new source database)")
    ] = False,
) -> None:
    """Publish a source database's transactional outbox (DATABUS_OUTBOX__URL), in order."""
    from databus.outbox_cli import run_outbox

    _logging()
    settings = _settings()
    broker_or_exit(settings)  # exit 3 saying why the broker cannot be used
    try:
        code = run_outbox(settings, create_table=create_table)
    except DatabusError as exc:
        fail(str(exc), exit_code_for(exc, 2))
    raise typer.Exit(code)


@app.command()
def declare(
    dataset: Annotated[str, typer.Option("--dataset", help="Catalog dataset id")],
    unit: Annotated[str, typer.Option(help="The sending unit (source.unit of its events)")],
    day: Annotated[str, typer.Option(help="Local day of the events, YYYY-MM-DD")],
    count: Annotated[int, typer.Option(help="How many events the source sent that day")],
    source_system: Annotated[str, typer.Option(help="Who declares")] = "manual",
) -> None:
    """Declare how many events a source sent for a dataset and a day (for reconciliation)."""
    from datetime import date

    from producers.declarations import declare as send_declaration

    settings = _settings()
    broker_or_exit(settings)  # exit 3 saying why the broker cannot be used
    try:
        send_declaration(
            settings, dataset, unit, date.fromisoformat(day), count, source_system=source_system
        )
    except ValueError as exc:
        fail(f"--day: {exc} (expected YYYY-MM-DD)", EXIT_BAD_SETTING)
    except DatabusError as exc:
        fail(str(exc), exit_code_for(exc, 2))
    console.print(f"declared {count} events of {dataset} from {unit} on {day}")


@app.command()
def reconcile(
    day_from: Annotated[
        str | None, typer.Option("--from", help="First local day, YYYY-MM-DD (default: today)")
    ] = None,
    day_to: Annotated[
        str | None, typer.Option("--to", help="Last local day, YYYY-MM-DD (default: --from)")
    ] = None,
    dataset: Annotated[list[str] | None, typer.Option(help="Dataset id(s); default all")] = None,
    unit: Annotated[str | None, typer.Option(help="Only this sending unit")] = None,
) -> None:
    """Declared vs received vs dead-lettered per dataset, unit and day. Exit 1 on a gap.

    Without --from/--to: today (Asia/Ho_Chi_Minh)."""
    from datetime import UTC, date, datetime

    from rich.table import Table

    from databus.reconcile import count_topics
    from schemas.catalog import DATASETS
    from schemas.domain.delivery import local_day
    from schemas.domain.delivery import reconcile as reconcile_rows

    try:
        first = date.fromisoformat(day_from) if day_from else local_day(datetime.now(UTC))
        last = date.fromisoformat(day_to) if day_to else first
    except ValueError as exc:
        fail(f"{exc} (days are YYYY-MM-DD)", EXIT_BAD_SETTING)
    if last < first:
        fail(f"--to {last} is before --from {first}", EXIT_BAD_SETTING)
    settings = _settings()
    if settings.kafka.bootstrap_servers is None:
        fail(f"DATABUS_KAFKA__BOOTSTRAP_SERVERS is not set: {NO_BUS_HINT}.", EXIT_BAD_SETTING)
    broker_or_exit(settings)  # exit 3 saying why the broker cannot be used
    try:
        counts = count_topics(settings, dataset or sorted(DATASETS), first, last)
    except DatabusError as exc:
        fail(str(exc), exit_code_for(exc, 2))
    rows = [
        r
        for r in reconcile_rows(counts.declared, counts.received, counts.dead_lettered)
        if unit is None or r.unit == unit
    ]
    table = Table(title=f"Reconciliation {first} … {last}", title_justify="left")
    # dataset and unit are copied into other commands: wide enough for the longest
    whole = {
        "dataset": max((len(r.dataset) for r in rows), default=7),
        "unit": max((len(r.unit) for r in rows), default=4),
        "day": 10,
    }
    # short headers: the whole row fits 100 columns (declared, received, dead-lettered,
    # missing = declared - received)
    for col in ("dataset", "unit", "day", "decl", "recv", "DLQ", "miss"):
        table.add_column(
            col,
            justify="left" if col in whole else "right",
            no_wrap=True,
            min_width=whole.get(col, 4),
        )
    table.add_column("status", no_wrap=True, min_width=10)
    for r in rows:
        colour = {"ok": "green", "undeclared": "yellow"}.get(r.status, "red")
        table.add_row(
            r.dataset,
            r.unit,
            str(r.day),
            "—" if r.declared is None else str(r.declared),
            str(r.received),
            str(r.dead_lettered),
            "—" if r.missing is None else str(r.missing),
            f"[{colour}]{r.status}[/]",
        )
    console.print(table)
    if any(counts.undecodable.values()):
        console.print(f"undecodable records skipped: {dict(counts.undecodable)}")
    if any(r.status in ("missing", "extra") for r in rows):
        raise typer.Exit(1)


@app.command("health-receiver")
def health_receiver(
    port: Annotated[int, typer.Option(help="Port (0: a free one, printed)")] = 0,
    store: Annotated[Path | None, typer.Option(help="JSON file keeping what it received")] = None,
) -> None:
    """A loopback stand-in for the ministry's health axis, for trials and `make run`."""
    from databus.standins.health_receiver import main as receiver_main

    args = ["--port", str(port), *(["--store", str(store)] if store else [])]
    raise typer.Exit(receiver_main(args))


@app.command()
def kpis() -> None:
    """Show per-unit dossier KPIs as the IOC store holds them now."""
    from datetime import UTC, datetime

    import redis

    from databus.dashboard import kpi_table
    from sinks.ioc import read_unit_kpis

    settings = _settings()
    if settings.redis.url is None:
        fail(f"DATABUS_REDIS__URL is not set: {NO_BUS_HINT}.", EXIT_BAD_SETTING)
    client = redis.Redis.from_url(settings.redis.url)
    try:
        kpis = read_unit_kpis(client, datetime.now(UTC))
    except (redis.RedisError, DatabusError) as exc:
        fail(f"the IOC store's Redis at {settings.redis.url} cannot be used: {exc}", EXIT_BROKER)
    finally:
        client.close()
    console.print(kpi_table(kpis))


def _check_broker_memory(stack: LocalStack) -> None:
    """Stop `up` cleanly, naming the cause, before the embedded broker (which cannot
    trim by retention) exhausts the machine."""
    cap = stack.settings.supervise.embedded_broker_max_mb
    rss = stack.broker_rss_mb()
    if cap and rss is not None and rss > cap:
        raise DatabusError(
            f"the embedded broker holds {rss:,.0f} MB, over "
            f"DATABUS_SUPERVISE__EMBEDDED_BROKER_MAX_MB ({cap:,.0f}), so `up` stops here "
            "(memory storage keeps every record). For longer runs use "
            "DATABUS_SUPERVISE__EMBEDDED_BROKER_STORAGE=disk (the default: retention "
            "enforced) or point DATABUS_KAFKA__BOOTSTRAP_SERVERS at a Kafka."
        )


def _lock_data_dir(data_dir: Path) -> IO[bytes]:
    """Hold ``<data_dir>/up.lock`` for as long as `up` runs; exit 2 naming the running
    one when another `up` holds it (two stacks cannot share a data directory)."""
    import fcntl

    from bus.private_files import private_dir
    from databus.stack_file import LOCK_FILE, read_stack

    private_dir(data_dir, tighten=True)
    lock = (data_dir / LOCK_FILE).open("ab")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        lock.close()
        running = read_stack(data_dir)
        who = f" (pid {running.pid})" if running is not None else ""
        fail(
            f"another `databus up`{who} already runs on the data directory {data_dir}.\n"
            "Use it (`databus env` prints its addresses for another shell), stop it "
            "(Ctrl-C in its terminal), or start this one with another DATABUS_DATA_DIR.",
            EXIT_BAD_SETTING,
        )
    return lock


def _stack_info(
    stack: LocalStack, receiver_port: int, ports: dict[str, int], supervisor: Supervisor
) -> StackInfo:
    from datetime import UTC, datetime

    from databus.stack_file import StackInfo, safe_sql_url

    s = stack.settings
    data_dir = s.data_dir.resolve()
    sql_set = s.shared_repo.url.get_secret_value() if s.shared_repo.url is not None else None
    return StackInfo(
        pid=os.getpid(),
        data_dir=str(data_dir),
        kafka=s.kafka.bootstrap_servers,
        schema_registry=s.schema_registry.url,
        redis=s.redis.url,
        sql=safe_sql_url(sql_set) if sql_set else s.shared_repo.resolved_url(data_dir),
        health_receiver=f"http://127.0.0.1:{receiver_port}",
        metrics_ports=dict(ports),
        pids={name: c.pid for name, c in supervisor.children.items() if c.pid is not None},
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


@app.command()
def up(
    for_seconds: Annotated[
        float | None, typer.Option("--for", help="Run this many seconds, then stop cleanly")
    ] = None,
    rate: Annotated[float, typer.Option(help="Simulator events per second")] = 500,
    days: Annotated[int, typer.Option(help="Simulated history, in days")] = 30,
    every: Annotated[
        float,
        typer.Option(
            help="Seconds between summary lines when stdout is not a terminal (piped, a log)"
        ),
    ] = 10.0,
    catching_up_lag: Annotated[
        int, typer.Option(help="Processor lag (records) above which figures are 'catching up'")
    ] = CATCHING_UP_LAG,
) -> None:
    """Start the embedded servers and the whole bus, fed by the dossier simulator.

    Its addresses go to <data_dir>/stack.json: other `databus` commands in this project
    find the bus there; `databus env` prints them for other shells."""
    import redis

    from bus.topic_admin import ensure_topics
    from databus.dashboard import Figures, render_compact, render_full, summary_line, take_snapshot
    from databus.local_stack import LocalStack, free_port
    from databus.stack_file import remove_stack, write_stack
    from databus.supervisor import PROCESSES_FILE, Supervisor
    from schemas.topics import bus_topics

    settings = settings_or_exit(use_stack=False)  # `up` starts its own servers
    if every <= 0:
        fail("--every must be more than 0 seconds", EXIT_BAD_SETTING)
    logging.basicConfig(level=logging.WARNING)
    data_dir = settings.data_dir.resolve()
    lock = _lock_data_dir(data_dir)
    # Ctrl-C and a plain `kill` both stop everything cleanly, even when started from a
    # shell that ignores SIGINT for background jobs.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    console.print("[bold]databus[/]: starting the local stack …")
    supervisor: Supervisor | None = None
    last_summary: list[RenderableType] = []  # printed once on the way out, piped or not
    try:
        with LocalStack(settings) as stack:
            for line in stack.started or ["nothing: every address comes from settings"]:
                console.print(f"  started {line}")
            created = ensure_topics(stack.settings, bus_topics(stack.settings))
            console.print(f"  topics: {len(created)} created from the catalog")
            log_dir = data_dir / "logs"
            ports: dict[str, int] = {}
            receiver_port = free_port()
            # Fresh secrets for this run only: nothing to configure, nothing committed.
            bus_env = {
                **stack.env(),
                "DATABUS_HEALTH_AXIS__URL": f"http://127.0.0.1:{receiver_port}",
                "DATABUS_HEALTH_AXIS__CLIENT_SECRET": secrets.token_urlsafe(24),
                "DATABUS_HEALTH_AXIS__PSEUDONYM_KEY": secrets.token_urlsafe(24),
                "DATABUS_ACCESS__PSEUDONYM_KEY": secrets.token_urlsafe(24),
                # quality reports and the ledger refresh within seconds on the demo screen
                "DATABUS_ALERTS__EVALUATE_EVERY_S": os.environ.get(
                    "DATABUS_ALERTS__EVALUATE_EVERY_S", "5"
                ),
            }
            store = data_dir / "health_axis_received.json"
            plan = {
                "health-receiver": [
                    *("health-receiver", "--port", str(receiver_port), "--store", str(store))
                ],
                "processor": ["process"],
                "sink-ioc": ["sink", "ioc"],
                "sink-sql": ["sink", "sql"],
                "sink-health": ["sink", "health"],
                "share": ["share"],
                "opendata": ["opendata", "export", "--every", "30"],
                "simulator": [
                    *("simulate", "--days", str(days), "--rate", str(rate), "--live", "--sectors")
                ],
            }
            supervisor = Supervisor(
                log_dir=log_dir,
                state_file=data_dir / PROCESSES_FILE,
                settings=stack.settings.supervise,
                addresses={
                    "kafka": stack.settings.kafka.bootstrap_servers or "",
                    "schema_registry": stack.settings.schema_registry.url or "",
                },
            )
            for name, args in plan.items():
                port = receiver_port if name == "health-receiver" else free_port()
                if name != "health-receiver":
                    ports[name] = port  # /metrics and /readyz of the bus processes
                env = {**bus_env, "DATABUS_METRICS__PORT": str(port)}
                supervisor.add(name, args, env, ports.get(name))
            console.print(f"  processes: {', '.join(supervisor.children)} (logs in {log_dir})")
            info = _stack_info(stack, receiver_port, ports, supervisor)
            console.print(
                f"  stack file: {write_stack(data_dir, info)} — other shells: "
                '`databus status`, `databus tail …` find the bus; `eval "$(databus env)"` '
                "exports its addresses"
            )
            try:
                client = redis.Redis.from_url(stack.settings.redis.url or "")
                figures = Figures()
                started = time.monotonic()

                def snapshot() -> Snapshot:
                    snap = take_snapshot(
                        ports.values(),
                        client,
                        time.monotonic() - started,
                        supervisor.rows(),
                        broker_mb=stack.broker_rss_mb(),
                        catching_up_lag=catching_up_lag,
                    )
                    figures.update(snap.totals)
                    return snap

                def supervise() -> None:
                    nonlocal info
                    # A process that exited or stayed not ready is restarted, with
                    # backoff; why is logged and the summary counts the restarts.
                    supervisor.check()
                    for healed in (stack.heal_redis(), stack.heal_broker()):
                        if healed:
                            console.print(f"[yellow]{escape(healed)}[/]")
                    supervisor.bound_logs()
                    _check_broker_memory(stack)
                    now_info = _stack_info(stack, receiver_port, ports, supervisor)
                    if now_info.pids != info.pids:  # a restart: new pids for the stack file
                        info = now_info
                        write_stack(data_dir, info)

                def running() -> bool:
                    return for_seconds is None or time.monotonic() - started < for_seconds

                try:
                    if console.is_terminal:
                        with Live(console=console, refresh_per_second=2, transient=True) as live:
                            while running():
                                supervise()
                                size = console.size
                                live.update(
                                    render_compact(figures, snapshot(), size.width, size.height)
                                )
                                time.sleep(1.0)  # the refresh period of the display
                    else:
                        # A log, a pipe (`make run | tee`): one plain line per interval.
                        next_line = time.monotonic()
                        while running():
                            supervise()
                            if time.monotonic() >= next_line:
                                console.print(
                                    summary_line(figures, snapshot()),
                                    markup=False,
                                    highlight=False,
                                    soft_wrap=True,
                                )
                                next_line += every
                            time.sleep(1.0)  # the supervision period
                finally:
                    # The summary left on screen (or in the log) shows the figures at
                    # the stop, whole, even after Ctrl-C.
                    try:
                        snap = snapshot()
                        last_summary[:] = [render_full(figures, snap), summary_line(figures, snap)]
                    except Exception as exc:  # the stop goes on whatever the figures do
                        log.warning("no last summary: %s", exc)
                    client.close()
            finally:
                _print_summary(last_summary)
                console.print("[bold]databus[/]: stopping …")
                # Children first: they need the broker to leave their groups cleanly.
                supervisor.stop()
    except KeyboardInterrupt:
        _print_summary(last_summary)
        console.print("\n[bold]databus[/]: Ctrl-C, stopping every process …")
    except DatabusError as exc:
        fail(str(exc), exit_code_for(exc, 1))
    finally:
        if supervisor is not None:
            supervisor.stop()  # no-op when already stopped; covers start-up failures
        remove_stack(data_dir, os.getpid())
        lock.close()
    console.print("[bold]databus[/]: stopped cleanly.")


def _print_summary(parts: list[RenderableType]) -> None:
    """Print the last summary once (the whole one, then its plain line)."""
    if not parts:
        return
    full, line = parts
    parts.clear()
    console.print(full)
    console.print(line, markup=False, highlight=False, soft_wrap=True)


@app.command("env")
def env_cmd() -> None:
    """Print `export DATABUS_...=...` lines for the bus `databus up` runs in this project.

    `eval "$(databus env)"` in another shell points every command (and any tool reading
    the variables) at it. Exit 3 when no `databus up` runs on this data directory."""
    from databus.stack_file import export_lines, read_stack, stack_path

    settings = settings_or_exit(use_stack=False)
    info = read_stack(settings.data_dir)
    if info is None:
        fail(
            f"no `databus up` runs on the data directory {settings.data_dir.resolve()} "
            f"({stack_path(settings.data_dir)} is missing or its process is gone).\n"
            "Start it with `databus up` (or `make run`) in this project, or set "
            "DATABUS_DATA_DIR to the data directory of the one that runs.",
            EXIT_BROKER,
        )
    for line in export_lines(info):
        typer.echo(line)


def main() -> None:
    owner_only_umask()  # what the bus and its embedded servers write is owner-only
    try:
        app()
    except DatabusError as exc:
        # a broker or setting failure a command did not catch: the same code as the others
        err_console.print(f"[red]{escape(str(exc))}[/]")
        raise SystemExit(exit_code_for(exc)) from exc


if __name__ == "__main__":
    main()
