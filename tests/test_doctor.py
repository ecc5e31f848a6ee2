"""`posttrain doctor`: the sandbox modes, versions, devices and disk; exit 1 when the recipe cannot run here."""

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def doctor(*args: str, path: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **({"PATH": path} if path else {})}
    return subprocess.run([sys.executable, "-m", "posttrain.cli", "doctor", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _path_without_bwrap() -> str:
    bin_dir = Path(tempfile.mkdtemp(prefix="posttrain-path-"))
    if shutil.which("unshare"):
        (bin_dir / "unshare").symlink_to(shutil.which("unshare"))
    return str(bin_dir)


def test_doctor_on_this_machine(tmp_path):
    proc = doctor(f"output_dir={tmp_path}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    for needle in ("torch ", "trl ", "vLLM backend: ", "CPU cores: ", "DeepSpeed: ", "bwrap         works",
                   "model code runs under: bwrap", f"run directory {tmp_path}/tiny: writable", "can run here"):
        assert needle in out, (needle, out)
    assert "loses: filesystem isolation is LOST" in out  # what the weaker mode would cost


def test_doctor_without_bwrap_fails_and_names_the_fix(tmp_path):
    proc = doctor(f"output_dir={tmp_path}", path=_path_without_bwrap())
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "bwrap         NO: bwrap not found on PATH" in proc.stdout
    assert "apt install bubblewrap" in proc.stdout and "cannot run here" in proc.stdout
    named = doctor(f"output_dir={tmp_path}", "score.sandbox.isolation=rlimits-only", path=_path_without_bwrap())
    assert named.returncode == 0 and "model code runs under: " in named.stdout, named.stdout + named.stderr


def test_doctor_names_an_unwritable_run_directory(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    proc = doctor(f"output_dir={blocked / 'runs'}")
    assert proc.returncode == 1 and "cannot run here" in proc.stdout, proc.stdout + proc.stderr
