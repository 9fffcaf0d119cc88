"""Lint, format and types are part of the suite: ruff and mypy from the venv must pass."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PATHS = ["monitor", "tests", "migrations", "bench"]


def run(tool: str, *args: str) -> None:
    executable = BIN / tool
    if not executable.exists():
        pytest.fail(f"{executable} is missing: install the dev extras (pip install -e '.[dev]')")
    proc = subprocess.run(
        [str(executable), *args], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    if proc.returncode != 0:
        pytest.fail(
            f"`{tool} {' '.join(args)}` exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}",
            pytrace=False,
        )


def test_ruff_check() -> None:
    run("ruff", "check", *PATHS)


def test_ruff_format() -> None:
    run("ruff", "format", "--check", *PATHS)


def test_mypy() -> None:
    run("mypy")  # packages and options from [tool.mypy] in pyproject.toml
