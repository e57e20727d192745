"""Kafka ACLs for a production cluster, rendered from the access policy and the catalog.

Who may do what (principals are SCRAM users, ``User:<name>``):

- each **agency** (``agency-<id>`` unless the policy names it): READ and DESCRIBE on the
  topic prefix ``<dataset>.shared.v`` of each dataset it is granted (every major version
  of that shared topic, nothing else), and READ on the group prefix ``agency.<id>.``
  (its ``Subscriber`` groups and the API's groups for it);
- each **source unit** (``unit-<owner unit>``, e.g. ``unit-dna-syt``): WRITE and DESCRIBE
  on the raw topic of every dataset it owns, and IDEMPOTENT_WRITE on the cluster (the
  idempotent producer needs it on brokers older than Kafka 3.0);
- the **bus** itself (``bus_principal``): ALL on every topic and group and on the cluster,
  since it creates topics and runs the processor, sinks, share loop and registry.

``acl_rules`` is pure; ``render_kafka_acls`` writes ``kafka-acls.sh`` commands and
``render_strimzi`` Strimzi ``KafkaUser`` resources (``authorization.type: simple``).
"""

from __future__ import annotations

import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from schemas.access_policy import AccessPolicy, unit_principal
from schemas.catalog import DATASETS, Dataset

__all__ = ["AclRule", "acl_rules", "render_kafka_acls", "render_strimzi"]

Resource = Literal["topic", "group", "cluster"]
Pattern = Literal["literal", "prefixed"]


@dataclass(frozen=True, order=True)
class AclRule:
    principal: str  # the user name, without "User:"
    resource: Resource
    name: str
    pattern: Pattern
    operation: str  # Kafka's operation names: Read, Write, Describe, All, ...


def acl_rules(policy: AccessPolicy, catalog: Mapping[str, Dataset] = DATASETS) -> list[AclRule]:
    rules: set[AclRule] = set()
    for agency in policy.agencies.values():
        for ds in agency.datasets:
            prefix = f"{ds}.shared.v"
            rules.add(AclRule(agency.principal, "topic", prefix, "prefixed", "Read"))
            rules.add(AclRule(agency.principal, "topic", prefix, "prefixed", "Describe"))
        if agency.datasets:
            group = f"agency.{agency.id}."
            rules.add(AclRule(agency.principal, "group", group, "prefixed", "Read"))
    for dataset in catalog.values():
        unit = unit_principal(dataset.owner_unit)
        rules.add(AclRule(unit, "topic", dataset.raw_topic, "literal", "Write"))
        rules.add(AclRule(unit, "topic", dataset.raw_topic, "literal", "Describe"))
        rules.add(AclRule(unit, "cluster", "kafka-cluster", "literal", "IdempotentWrite"))
    bus = policy.bus_principal
    rules.add(AclRule(bus, "topic", "*", "literal", "All"))
    rules.add(AclRule(bus, "group", "*", "literal", "All"))
    rules.add(AclRule(bus, "cluster", "kafka-cluster", "literal", "All"))
    return sorted(rules)


def _by_principal(rules: Iterable[AclRule]) -> dict[str, list[AclRule]]:
    out: dict[str, list[AclRule]] = {}
    for rule in sorted(rules):
        out.setdefault(rule.principal, []).append(rule)
    return out


def render_kafka_acls(
    rules: Sequence[AclRule],
    *,
    bootstrap: str = "$BOOTSTRAP",
    command_config: str = "admin.properties",
) -> str:
    """A shell script of ``kafka-acls.sh --add`` commands, one per rule."""
    lines = [
        "#!/bin/sh",
        "# Kafka ACLs rendered by `databus acl render` from the access policy and catalog.",
        "# BOOTSTRAP and the admin client's properties (TLS + SCRAM) come from the caller.",
        "set -eu",
    ]
    for principal, mine in _by_principal(rules).items():
        lines.append(f"\n# User:{principal}")
        for r in mine:
            if r.resource == "cluster":
                target = ["--cluster"]
            else:
                target = [f"--{r.resource}", r.name, "--resource-pattern-type", r.pattern]
            args = [
                "kafka-acls.sh",
                "--bootstrap-server",
                bootstrap,
                "--command-config",
                command_config,
                "--add",
                "--allow-principal",
                f"User:{principal}",
                "--operation",
                r.operation,
                *target,
            ]
            quoted = " ".join(a if a == "$BOOTSTRAP" else shlex.quote(a) for a in args)
            lines.append(quoted.replace("$BOOTSTRAP", '"$BOOTSTRAP"'))
    return "\n".join(lines) + "\n"


def _yaml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render_strimzi(rules: Sequence[AclRule], *, cluster: str = "databus") -> str:
    """Strimzi ``KafkaUser`` resources (SCRAM-SHA-512 authentication, simple ACLs)."""
    docs = []
    for principal, mine in _by_principal(rules).items():
        lines = [
            "apiVersion: kafka.strimzi.io/v1",
            "kind: KafkaUser",
            "metadata:",
            f"  name: {principal}",
            "  labels:",
            f"    strimzi.io/cluster: {cluster}",
            "spec:",
            "  authentication:",
            "    type: scram-sha-512",
            "  authorization:",
            "    type: simple",
            "    acls:",
        ]
        for r in mine:
            lines.append("      - resource:")
            lines.append(f"          type: {r.resource}")
            if r.resource != "cluster":
                lines.append(f"          name: {_yaml_str(r.name)}")
                lines.append(f"          patternType: {r.pattern}")
            lines.append(f"        operations: [{r.operation}]")
            lines.append('        host: "*"')
        docs.append("\n".join(lines))
    return "---\n" + "\n---\n".join(docs) + "\n"
