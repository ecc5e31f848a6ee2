"""Lint: ruff, with the project's configuration in pyproject.toml, finds nothing in the project's code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FOLDERS = ["posttrain", "reward", "data_mix", "eval", "tests", "bench", "scripts"]


def test_ruff_check_passes():
    pytest.importorskip("ruff", reason="ruff is not installed (it comes with the dev extra: pip install -e '.[dev]')")
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", *FOLDERS], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
