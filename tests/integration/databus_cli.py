"""Run the `databus` command as a user does: a subprocess with a clean environment.

Not a test module: the CLI tests import it (rootdir mode puts this folder on sys.path).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import overload

__all__ = ["clean_env", "run_databus"]


def clean_env(cwd: Path | None = None, **extra: str) -> dict[str, str]:
    """The caller's environment without any DATABUS_* setting, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DATABUS_")}
    env["COLUMNS"] = "160"  # wide enough that rich does not truncate what tests look for
    if cwd is not None:
        env["DATABUS_DATA_DIR"] = str(cwd / "data")
    else:
        # not the checkout's .databus: a `make run` there would lend its addresses
        # (databus/stack_file.py) to commands a test runs without any
        env["DATABUS_DATA_DIR"] = str(Path(tempfile.gettempdir()) / "databus-tests-no-stack")
    env.update(extra)
    return env


# For mypy only: callers pass `**env` (strings) whose keys are variable names, never
# `timeout`; without these overloads mypy takes every such call for a str timeout.
@overload
def run_databus(cwd: Path | None, *args: str, **extra: str) -> subprocess.CompletedProcess[str]: ...
@overload
def run_databus(
    cwd: Path | None, *args: str, timeout: float, **extra: str
) -> subprocess.CompletedProcess[str]: ...
def run_databus(  # type: ignore[misc]  # (an **env holding "timeout" is the case excluded)
    cwd: Path | None, *args: str, timeout: float = 120.0, **extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "databus", *args],
        cwd=cwd,
        env=clean_env(cwd, **extra),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
