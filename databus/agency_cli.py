"""Downstream agencies: publish shared topics, serve the API, render ACLs, check the audit log.

databus share                              mask the shared datasets onto their shared topics
databus api [--host H] [--port P]          the subscription API for agencies (HTTP)
databus acl render [--format F] [--out F]  Kafka ACLs from the access policy (kafka-acls|strimzi)
databus audit verify [PATH]                check the audit log's hash chain (rotated files too)
databus agency-token AGENCY [--days N]     a fresh API token and the policy lines holding its
                                           hash and expiry (default DATABUS_ACCESS__TOKEN_TTL_DAYS)

Exit codes: 0 done; 1 the audit chain is broken; 2 bad usage, settings or policy.
"""

from __future__ import annotations

import asyncio
import getpass
import logging
import signal
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape

from bus.audit import GENESIS, AuditLog, verify_rotated
from bus.errors import ConfigError, DatabusError
from bus.settings import Settings
from databus.cli_common import (
    audit_log,
    broker_or_exit,
    console,
    fail,
    settings_or_exit,
    setup_logging,
    stop_on_signals,
)
from schemas.access_policy import AccessPolicy, PolicyFile, load_policy, new_token, token_hash

__all__ = ["agency_app"]

agency_app = typer.Typer(no_args_is_help=True, help="Downstream agencies and access control.")
acl_app = typer.Typer(no_args_is_help=True, help="Kafka ACLs rendered from the access policy.")
audit_app = typer.Typer(no_args_is_help=True, help="The audit log of grants and exports.")
agency_app.add_typer(acl_app, name="acl")
agency_app.add_typer(audit_app, name="audit")

log = logging.getLogger("databus.agency")


def _fail(message: str, code: int = 2) -> NoReturn:
    fail(message, code)


def _policy(settings: Settings) -> AccessPolicy:
    try:
        return load_policy(settings.access.policy_file)
    except ConfigError as exc:
        _fail(f"{exc}\nFix the access policy (see schemas/access_policy.py for its format).")


def _audit(settings: Settings) -> AuditLog:
    return audit_log(settings)


def grants_of(policy: AccessPolicy) -> dict[str, dict[str, object]]:
    """The access each agency is granted, as the audit log records it."""
    return policy.grants()


def _audit_grants(settings: Settings, policy: AccessPolicy, actor: str) -> None:
    """Record the grants in force when a process that enforces them starts."""
    _audit(settings).append(
        actor=actor,
        action="grant.policy_in_force",
        object=str(settings.access.policy_file or "packaged sample policy"),
        outcome="loaded",
        detail={"agencies": grants_of(policy), "shared": sorted(policy.shared)},
    )


@agency_app.command()
def share() -> None:
    """Publish every shared dataset to its shared topic, personal fields dropped or hashed."""
    from bus.health_checks import broker_check, registry_check
    from bus.metrics import Metrics, serve_metrics
    from stream_processors.share_loop import ShareLoop, policy_plans

    setup_logging()
    settings = settings_or_exit()
    broker_or_exit(settings)
    policy = _policy(settings)
    try:
        loop = ShareLoop(settings, policy_plans(policy), audit=_audit(settings))
    except DatabusError as exc:
        _fail(str(exc))
    metrics = Metrics()
    metrics.readiness.add("broker", broker_check(settings))
    metrics.readiness.add("schema_registry", registry_check(settings))
    port = serve_metrics(metrics, settings.metrics.host, settings.metrics.port)
    log.info("share: metrics on http://%s:%d/metrics", settings.metrics.host, port)
    log.info("sharing %d dataset(s)", len(policy.shared))
    _audit_grants(settings, policy, "databus-share")
    loop.run(stop_on_signals())


@agency_app.command()
def api(
    host: Annotated[str | None, typer.Option(help="Bind address (default: settings)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: settings; 0: free)")] = None,
) -> None:
    """Serve the subscription API: agencies read their shared datasets over HTTP."""
    from bus.health_checks import broker_check, registry_check, tcp_check
    from bus.metrics import Metrics, start_health_server
    from sinks.subscription_api import create_app, serve

    setup_logging()
    settings = settings_or_exit()
    broker_or_exit(settings)
    try:
        source = PolicyFile(settings.access.policy_file, check_s=settings.access.policy_check_s)
    except ConfigError as exc:
        _fail(f"{exc}\nFix the access policy (see schemas/access_policy.py for its format).")
    app = create_app(settings, source, _audit(settings))
    _audit_grants(settings, source.current(), "databus-api")
    # /metrics, /livez, /readyz on the metrics port like every bus process: ready while
    # the broker and registry answer and the API's own port accepts connections.
    listening: dict[str, str] = {}
    metrics = Metrics()
    metrics.readiness.add("broker", broker_check(settings))
    metrics.readiness.add("schema_registry", registry_check(settings))
    metrics.readiness.add("api", tcp_check(lambda: listening.get("url")))
    health = start_health_server(metrics, settings.metrics.host, settings.metrics.port)
    log.info("api: metrics on http://%s:%d/metrics", settings.metrics.host, health.port)

    def bound(host: str, port: int) -> None:
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
        listening["url"] = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(
            app,
            host or settings.access.api_host,
            settings.access.api_port if port is None else port,
            stop,
            on_listening=bound,
        )

    try:
        asyncio.run(main())
    finally:
        health.close()


class AclFormat(StrEnum):
    kafka_acls = "kafka-acls"
    strimzi = "strimzi"


_DEFAULT_FORMAT = AclFormat.kafka_acls


@acl_app.command("render")
def acl_render(
    fmt: Annotated[
        AclFormat, typer.Option("--format", help="Output format")
    ] = AclFormat.kafka_acls,
    out: Annotated[Path | None, typer.Option(help="Write to this file (default: stdout)")] = None,
    cluster: Annotated[str, typer.Option(help="Strimzi cluster name")] = "databus",
) -> None:
    """Kafka ACLs for a production cluster: agency reads, source-unit writes, the bus."""
    from databus.acl import acl_rules, render_kafka_acls, render_strimzi

    settings = settings_or_exit()
    policy = _policy(settings)
    rules = acl_rules(policy)
    if fmt is AclFormat.strimzi:
        text = render_strimzi(rules, cluster=cluster)
    else:
        text = render_kafka_acls(rules)
    _audit(settings).append(
        actor=getpass.getuser(),
        action="grant.acl_render",
        object=str(out) if out is not None else "stdout",
        outcome="rendered",
        detail={"format": fmt.value, "rules": len(rules), "agencies": grants_of(policy)},
    )
    if out is None:
        print(text, end="")
    else:
        out.write_text(text, encoding="utf-8")
        console.print(f"[green]✓[/] {len(rules)} ACL rule(s) written to {escape(str(out))}")


@audit_app.command("verify")
def audit_verify(
    path: Annotated[
        Path | None, typer.Argument(help="Audit log (default: DATABUS_ACCESS__AUDIT_LOG)")
    ] = None,
) -> None:
    """Check the hash chain of the audit log and its rotated files (``PATH.1`` ..., oldest
    first, as one chain); name the first line that was changed."""
    if path is None:
        path = _audit(settings_or_exit()).path
    if not path.is_file():
        _fail(f"no audit log at {path}")
    results = verify_rotated(path)
    for file, result in results:
        if not result.ok:
            console.print(
                f"[red]✗ {escape(file.name)} broken at line {result.broken_line}[/]: "
                f"{escape(result.reason or '')}\n"
                f"  {result.lines - 1} line(s) before it verify; "
                f"head of the good part {result.head}"
            )
            raise typer.Exit(1)
    lines = sum(result.lines for _, result in results)
    head = results[-1][1].head
    first = results[0][1]
    since = "" if first.starts_after == GENESIS else f" (continuing {first.starts_after})"
    files = f" in {len(results)} files" if len(results) > 1 else ""
    console.print(f"[green]✓[/] {lines} line(s){files} verify{since}; head {head}")


@agency_app.command("agency-token")
def agency_token(
    agency: Annotated[str, typer.Argument(help="Agency id in the policy")],
    days: Annotated[
        int | None,
        typer.Option(min=1, max=3660, help="Days the token is valid (default: settings)"),
    ] = None,
) -> None:
    """Print a fresh API token for an agency and the policy lines holding its hash and
    expiry. Pasting them over the old ones revokes the old token (no restart needed)."""
    settings = settings_or_exit()
    if agency not in _policy(settings).agencies:
        _fail(f"no agency {agency!r} in the access policy; add it there first")
    lifetime = timedelta(days=days if days is not None else settings.access.token_ttl_days)
    expires = (datetime.now(UTC) + lifetime).replace(microsecond=0)
    expires_toml = expires.isoformat().replace("+00:00", "Z")
    token = new_token()
    # The token itself is never logged; its digest's head identifies it in the policy.
    _audit(settings).append(
        actor=getpass.getuser(),
        action="grant.token_issued",
        object=agency,
        outcome="issued",
        detail={"token_sha256_head": token_hash(token)[:12], "expires": expires_toml},
    )
    # plain print: a terminal's width must not wrap or cut what is copied
    console.print(f"[bold]API token for {escape(agency)}[/]: give the agency (once, securely)")
    print(token)
    console.print(
        f"[bold]Put in {escape(f'[agencies.{agency}]')}[/] of the access policy "
        "(over the old lines: the old token stops working without a restart)"
    )
    print(f'token_sha256 = "{token_hash(token)}"')
    print(f"token_expires = {expires_toml}")
