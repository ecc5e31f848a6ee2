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


def test_no_script_folder_shadows_a_package():
    """`python bench/x.py` puts bench/ first on sys.path: a bench/data_mix.py there once made `import data_mix` find
    itself, and every bench script that loads a recipe section died at import."""
    packages = {p.name for p in REPO.iterdir() if (p / "__init__.py").is_file()}
    assert {"posttrain", "reward", "data_mix", "eval"} <= packages
    for folder in ("bench", "bench/gpu", "scripts", "tests"):
        clash = {p.stem for p in (REPO / folder).glob("*.py")} & packages
        assert not clash, f"{folder}/ holds {sorted(clash)}, which would shadow the package when run as a script"
