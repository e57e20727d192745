"""Schema evolution: every revision of a schema must read the data of all earlier ones.

The revisions of a schema are the files ``schemas.catalog.schema_revisions`` lists
(``<domain>/history/<name>.<rev>.avsc`` oldest first, then the current file). They are
replayed in order into an in-memory ``RegistryState`` at BACKWARD_TRANSITIVE — the bus's
level (docs/architecture.md) — so the decision is exactly the one the registry will make when
``databus schemas register`` sends them.
"""

from __future__ import annotations

from importlib.resources.abc import Traversable
from pathlib import Path

from bus.errors import IncompatibleSchemaError, RegistryRequestError
from schemas.catalog import Dataset, read_schema, schema_revisions
from schemas.registry_state import CompatibilityLevel, RegistryState

__all__ = ["check_evolution", "check_revisions"]


def check_revisions(
    paths: list[str],
    *,
    root: Path | Traversable | None = None,
    level: CompatibilityLevel = CompatibilityLevel.BACKWARD_TRANSITIVE,
) -> list[str]:
    """Problems replaying ``paths`` in order at ``level``; empty when every step passes."""
    state = RegistryState(level)
    subject = paths[-1] if paths else ""
    problems: list[str] = []
    for path in paths:
        try:
            registration = state.plan_register(subject, read_schema(path, root))
        except OSError as exc:
            problems.append(f"{path}: cannot be read: {exc}")
            return problems
        except (IncompatibleSchemaError, RegistryRequestError) as exc:
            problems.append(f"{path}: {exc}")
            return problems
        if registration.change is not None:
            state.apply(registration.change)
    return problems


def check_evolution(dataset: Dataset, *, root: Path | Traversable | None = None) -> list[str]:
    """Problems in the history of the dataset's raw and std schemas; empty when it evolves
    BACKWARD_TRANSITIVE and the history revisions are numbered 1, 2, … without gaps."""
    problems: list[str] = []
    for path in filter(None, (dataset.raw_schema, dataset.std_schema)):
        revisions = schema_revisions(path, root)
        for expected, history in enumerate(revisions[:-1], start=1):
            rev = history.removesuffix(".avsc").rpartition(".")[2]
            if rev != str(expected):
                problems.append(f"{path}: history revision {expected} is missing (found {history})")
                break
        problems += check_revisions(revisions, root=root)
    return problems
