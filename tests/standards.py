"""Where the published standards live for conformance tests: ``../shared/standards``.

The folder is the sibling of the repository root; in a git worktree, the sibling of the
main checkout. Tests that need a file in it skip, saying where they looked, when it is
absent (see ``../shared/standards/README.md``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyshacl
from rdflib import Graph
from rdflib.namespace import RDF, SH

__all__ = [
    "DCAT_AP",
    "DCAT_AP_MANDATORY",
    "DCAT_AP_RECOMMENDED",
    "ROOT",
    "STANDARDS",
    "ShaclResult",
    "jsonld_graph",
    "shacl_results",
    "standards_dir",
]

ROOT = Path(__file__).resolve().parents[1]


def standards_dir(root: Path) -> Path:
    """``<repository>/../shared/standards``; in a git worktree, beside the main checkout."""
    candidates = [root / "../shared/standards"]
    git = root / ".git"
    if git.is_file():  # a worktree: "gitdir: <main>/.git/worktrees/<name>"
        gitdir = Path(git.read_text(encoding="utf-8").split(":", 1)[1].strip())
        common = gitdir / (gitdir / "commondir").read_text(encoding="utf-8").strip()
        candidates.append(common.resolve().parent / "../shared/standards")
    for candidate in candidates:
        if candidate.is_dir():
            return candidate.resolve()
    return candidates[0].resolve()


STANDARDS = standards_dir(ROOT)


# ---- DCAT-AP 3.0.1 SHACL (pyshacl) ----------------------------------------------------

DCAT_AP = STANDARDS / "dcat-ap"
DCAT_AP_MANDATORY = ("shapes.ttl", "range.ttl")
DCAT_AP_RECOMMENDED = ("shapes_recommended.ttl",)


@dataclass(frozen=True, slots=True)
class ShaclResult:
    severity: str  # Violation | Warning | Info
    focus: str
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.severity}: {self.focus} {self.path}: {self.message}"


def shacl_results(data: Graph, shape_files: tuple[str, ...]) -> list[ShaclResult]:
    """Every result of validating ``data`` against the DCAT-AP shape files named, with
    pyshacl (no inference: the document must say what it means)."""
    shapes = Graph()
    for name in shape_files:
        shapes.parse(DCAT_AP / name, format="turtle")
    _, report, _ = pyshacl.validate(data, shacl_graph=shapes, inference="none")
    assert isinstance(report, Graph)
    results = []
    for node in report.subjects(RDF.type, SH.ValidationResult):
        severity = report.value(node, SH.resultSeverity)
        results.append(
            ShaclResult(
                severity=str(severity).rsplit("#", 1)[-1],
                focus=str(report.value(node, SH.focusNode)),
                path=str(report.value(node, SH.resultPath)),
                message=str(report.value(node, SH.resultMessage)),
            )
        )
    return sorted(results, key=str)


def jsonld_graph(text: str) -> Graph:
    return Graph().parse(data=text, format="json-ld")
