"""The application: what people run — the ``databus`` command and what it starts.

It sits on top of every other package (``pyproject.toml``'s import-linter contract):
the CLI (``cli`` and the ``*_cli`` command groups), the operator tools (status,
ledger, reconciliation, tail, dead-letter replay), the live dashboard, the local stack
of embedded servers and its supervisor (``databus up``), and the stand-ins for servers
a province runs elsewhere (``standins``: a schema registry, a FHIR receiver).
"""

from __future__ import annotations

__all__: list[str] = []
