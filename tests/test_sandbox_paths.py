"""bubblewrap from any checkout and virtualenv path, and fail-closed isolation.

A clone under /tmp once lost bubblewrap: the virtualenv was bound read-only, then hidden by the sandbox's
own tmpfs /tmp (`bwrap: execvp <clone>/.venv/bin/python: No such file or directory`), and the sandbox fell
back to a weaker mode with a warning. Here a checkout of the sandbox and a virtualenv are built under /tmp
and /var/tmp, with spaces in their paths and reached through a symlink, and a program must run under bwrap
(warm and cold) with the checkout invisible and the host untouched. Then: a machine without bwrap stops a
code recipe before any work, unless a weaker mode is named.
"""

from __future__ import annotations

import json
import os
import shutil
import site
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from reward import sandbox

ROOT = Path(__file__).resolve().parents[1]
WITHOUT_BWRAP = shutil.which("bwrap") is None and os.environ.get("POSTTRAIN_WITHOUT_BWRAP") == "1"
needs_bwrap = pytest.mark.skipif(WITHOUT_BWRAP, reason="POSTTRAIN_WITHOUT_BWRAP=1 and no bwrap installed")

# Run by the layout's own interpreter: the sandbox module of the copied checkout, warm and cold.
DRIVER = """
import json, os, sys
from reward import sandbox
marker = sys.argv[1]
program = (
    "import os, sys\\n"
    "print(sys.prefix)\\n"
    "print(os.path.exists(CHECKOUT + '/reward/sandbox.py'), os.path.exists(CHECKOUT + '/pyproject.toml'))\\n"
    "open('/tmp/' + MARKER, 'w').write('x')\\n"
    "try:\\n"
    "    open(CHECKOUT + '/' + MARKER, 'w').write('x'); print('WROTE')\\n"
    "except OSError as e:\\n"
    "    print('DENIED')\\n"
).replace("CHECKOUT", repr(os.path.dirname(os.path.dirname(sandbox.__file__)))).replace("MARKER", repr(marker))
results = {"module": sandbox.__file__, "mode": sandbox.detect_isolation()}
# warm: a file left beside the virtualenv bound under /tmp (the sandbox's tmpfs) must not reach the next program
beside = "import os, sys\\npath = os.path.join(os.path.dirname(sys.prefix), 'left')\\n"
left = sandbox.run_python(beside + "open(path, 'w').write('A')\\n", 10.0)
results["left"] = [left.status, sandbox.run_python(beside + "print(os.path.exists(path))\\n", 10.0).stdout]
for warm in (True, False):
    r = sandbox.run_python(program, 10.0, warm=warm)
    results["warm" if warm else "cold"] = [r.status, r.isolation, r.stdout, r.stderr[-300:]]
print(json.dumps(results))
"""


def _layout(base: str) -> tuple[Path, Path, Path]:
    """(checkout copy, virtualenv python through a symlink, root) under `base`, with spaces in the paths."""
    root = Path(tempfile.mkdtemp(prefix="posttrain paths ", dir=base))
    checkout = root / "my checkout"
    checkout.mkdir()
    for package in ("reward", "posttrain", "eval", "data_mix"):
        shutil.copytree(ROOT / package, checkout / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", checkout)  # the repository: never visible to model code
    venv = root / "a venv"  # outside the checkout
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    # the project's dependencies, as a plain path entry (its .pth files, the editable finder, are not run)
    purelib = next(Path(venv).glob("lib/python*/site-packages"))
    (purelib / "deps.pth").write_text(site.getsitepackages()[0] + "\n")
    link = root / "link to venv"
    link.symlink_to(venv)
    return checkout, link / "bin" / "python", root


@needs_bwrap
@pytest.mark.parametrize("base", ["/tmp", "/var/tmp"])
def test_bwrap_from_a_checkout_and_virtualenv_under(base):
    if not os.access(base, os.W_OK):
        pytest.fail(f"{base} is not writable here")
    checkout, python, root = _layout(base)
    marker = f"posttrain-escape-{uuid.uuid4().hex[:8]}"
    try:
        proc = subprocess.run([str(python), "-c", DRIVER, marker], cwd=root, capture_output=True, text=True,
                              timeout=300, env={**os.environ, "PYTHONPATH": str(checkout)})
        assert proc.returncode == 0, proc.stderr[-2000:]
        seen = json.loads(proc.stdout.strip().splitlines()[-1])
        assert seen["module"].startswith(str(checkout)), seen  # the copy's sandbox, not this checkout's
        assert seen["mode"] == "bwrap", proc.stderr[-2000:]
        # written beside the venv in one program (under /tmp: the sandbox's tmpfs; elsewhere the read-only root
        # refuses it), and gone for the next
        assert seen["left"] == ["ok" if base == "/tmp" else "exit", "False\n"], seen["left"]
        for path in ("warm", "cold"):
            status, mode, out, err = seen[path]
            assert (status, mode) == ("ok", "bwrap"), (path, err)
            prefix, visible, wrote = out.splitlines()
            assert prefix == str(python.parent.parent)  # the virtualenv, as reached through the link
            assert (visible, wrote) == ("False False", "DENIED"), (path, out)
        assert not (Path("/tmp") / marker).exists() and not (checkout / marker).exists()
    finally:
        shutil.rmtree(root, ignore_errors=True)
        (Path("/tmp") / marker).unlink(missing_ok=True)


def _without(*tools: str) -> str:
    """A PATH holding everything this test needs but `tools` (links to the interpreter and the others)."""
    bin_dir = Path(tempfile.mkdtemp(prefix="posttrain-path-"))
    for name in ("bwrap", "unshare"):
        if name not in tools and shutil.which(name):
            (bin_dir / name).symlink_to(shutil.which(name))
    return str(bin_dir)


CODE_ROW = {"id": "c1", "capability": "code", "messages": [{"role": "user", "content": "f(x) = x + 1"}],
            "tests": "assert f(1) == 2", "entry_point": "f"}


def _score(tmp_path: Path, path_env: str, *extra: str) -> tuple[subprocess.CompletedProcess, Path]:
    marker = tmp_path / "escaped"
    program = f"open({str(marker)!r}, 'w').write('x')\ndef f(x):\n    return x + 1"
    samples = tmp_path / "samples.jsonl"
    samples.write_text(json.dumps({**CODE_ROW, "completion": program}) + "\n")
    out = tmp_path / "scored.parquet"
    proc = subprocess.run([sys.executable, "-m", "posttrain.cli", "score", "--recipe", "recipes/code.yaml",
                           "--input", str(samples), "--output", str(out), f"output_dir={tmp_path / 'runs'}", *extra],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "PATH": path_env})
    return proc, out


def test_without_bwrap_a_code_recipe_stops_before_any_work(tmp_path):
    proc, out = _score(tmp_path, _without("bwrap"))
    assert proc.returncode == 2, proc.stderr[-2000:]
    error = proc.stderr.strip().splitlines()[-1]
    assert "score.sandbox.isolation" in error and "bwrap not found" in error, error
    assert "apt install bubblewrap" in error and "--isolation unshare-net" in error, error
    assert not out.exists() and not (tmp_path / "runs").exists() and not (tmp_path / "escaped").exists()


@pytest.mark.skipif(shutil.which("unshare") is None, reason="no unshare here")
def test_a_weaker_mode_runs_only_when_named(tmp_path):
    proc, out = _score(tmp_path, _without("bwrap"), "--isolation", "unshare-net")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "running model code under unshare-net isolation, as score.sandbox.isolation=unshare-net" in proc.stderr
    assert out.exists()


def test_explicit_weaker_mode_is_refused_under_the_default():
    before = sandbox.required()
    sandbox.require("bwrap", check=False)
    try:
        with pytest.raises(sandbox.SandboxUnavailable, match="weaker than the required bwrap"):
            sandbox.run_python("print(1)", isolation="rlimits-only")
        with pytest.raises(ValueError, match="unknown sandbox isolation"):
            sandbox.require("docker")
    finally:
        sandbox.require(before, check=False)


# The hostile set, through the user's command: each program also defines a right f, so only the
# sandbox stands between it and a passing score.
HOSTILE = {
    "write host /tmp": "open('/tmp/MARK-tmp', 'w').write('x')",
    "write host dir": "open(HOST + '/MARK-dir', 'w').write('x')",
    "delete host dir": "import shutil\nshutil.rmtree(HOST)",
    "shell command": "import subprocess\nsubprocess.run(['sh', '-c', 'touch ' + HOST + '/MARK-sh'], check=True)",
    "read a secret": "import os\nprint(os.environ['HF_TOKEN'])",
    "our environ": "print(open('/proc/%d/environ' % PARENT).read())",
    "network": "import socket\nsocket.create_connection(('127.0.0.1', 22), timeout=1)",
    "detached child": "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(60)",
}


def test_hostile_programs_score_as_failing_and_reach_nothing(tmp_path, host_dir):
    (host_dir / "keep").write_text("host")
    secret = "hf_" + uuid.uuid4().hex
    rows = []
    for i, (name, action) in enumerate(HOSTILE.items()):
        source = action.replace("HOST", repr(str(host_dir))).replace("PARENT", "os.getppid()").replace(
            "MARK", f"mark{i}")
        completion = f"import os\n{source}\ndef f(x):\n    return x + 1\n"
        if name == "detached child":  # a right answer whose child must not outlive the sandbox
            completion = f"{source}\ndef f(x):\n    return x + 1\n"
        rows.append({**CODE_ROW, "id": f"c{i}", "completion": completion})
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "scored.parquet"
    proc = subprocess.run([sys.executable, "-m", "posttrain.cli", "score", "--recipe", "recipes/code.yaml",
                           "--input", str(samples), "--output", str(out), f"output_dir={tmp_path / 'runs'}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ, "HF_TOKEN": secret})
    assert proc.returncode == 0, proc.stderr[-2000:]
    import pyarrow.parquet as pq

    scored = {r["prompt_id"]: r for r in pq.read_table(out).to_pylist()}
    for i, name in enumerate(HOSTILE):
        # the sandbox's own /tmp and a child that dies with it harm nothing: there the right answer passes
        expected = 1.0 if name in ("write host /tmp", "detached child") else 0.0
        assert scored[f"c{i}"]["reward"] == expected, (name, scored[f"c{i}"])
    assert secret not in out.read_bytes().decode("latin-1") and secret not in proc.stdout + proc.stderr
    assert sorted(p.name for p in host_dir.iterdir()) == ["keep"]
    assert not [p for p in Path("/tmp").glob("mark*-tmp")]
    from tests.test_sandbox import assert_nothing_left

    assert_nothing_left()
