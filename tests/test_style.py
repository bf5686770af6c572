"""One style: ruff's linter and formatter (configured in pyproject.toml) pass on the whole repository."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUFF = Path(sys.executable).parent / "ruff"


def run_ruff(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(RUFF), *args, str(ROOT)], capture_output=True, text=True, cwd=ROOT, timeout=120)


def test_ruff_lint_passes():
    result = run_ruff("check", "--output-format", "concise")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_leaves_every_file_as_it_is():
    result = run_ruff("format", "--check")
    assert result.returncode == 0, f"run `ruff format .`:\n{result.stdout}{result.stderr}"
