"""Run untrusted Python (model-generated code) in a throwaway sandbox; nothing else may run it.

Each run gets a fresh subprocess in its own session, an empty temporary working directory (removed
afterwards), a minimal environment (none of ours: no HF_TOKEN), resource limits, a wall-clock timeout
that kills the whole process group, and capped stdout/stderr. On top of that, the best isolation this
machine offers, probed once:

  bwrap         bubblewrap: all namespaces, read-only host filesystem, private /tmp, no network
  unshare-net   util-linux unshare: user + network + pid + mount namespaces (no network; a detached
                grandchild dies with the sandbox) but the host filesystem is shared, with our rights
  rlimits-only  plain subprocess: network and filesystem isolation are lost (a warning is logged)

Process tree: us -> [bwrap | unshare] -> shim -> program. The shim is a few lines of trusted Python
that sets the limits, runs the program, and reports how it ended on a pipe the program never holds,
so a program that kills its parent kills only the shim. In the namespaced modes the shim is the pid
namespace's init, so everything the program starts dies with it. RLIMIT_NPROC does not bind processes that run
as host root (even inside a user namespace), so in the namespaced modes the shim also counts the
processes of its private /proc and kills the namespace past MAX_PROCS.
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from reward import _procs
from reward._procs import MAX_OUTPUT  # noqa: F401  (re-exported: the per-stream cap)

log = logging.getLogger(__name__)

MEMORY_BYTES = 1 << 30  # RLIMIT_AS
FILE_BYTES = 10 * 1024 * 1024  # RLIMIT_FSIZE
MAX_FILES = 64  # RLIMIT_NOFILE
MAX_PROCS = 32  # RLIMIT_NPROC, and the shim's watchdog where there is a private /proc
PREFIX = "posttrain-sandbox-"  # in every sandbox path (and so in the program's command line)
ENV = {"LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1",
       "PYTHONSAFEPATH": "1"}
MODES = ("bwrap", "unshare-net", "rlimits-only")
SHIM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_shim.py")
WRAPPERS = {"bwrap": "bwrap", "unshare-net": "unshare"}  # mode -> the tool it needs


class SandboxResult(NamedTuple):
    """How one program ended. status: "ok" (exit 0), "exit" (non-zero exit), "signal" (killed by a
    signal; returncode = -signal), "timeout", "process-limit", or "error" (the sandbox failed)."""

    returncode: int | None
    status: str
    stdout: str
    stderr: str
    isolation: str


def run_python(source: str, timeout_s: float = 5.0, *, isolation: str | None = None) -> SandboxResult:
    """Run `source` as a Python program in the sandbox; `isolation` forces a mode (tests only)."""
    mode = isolation or detect_isolation()
    root = tempfile.mkdtemp(prefix=PREFIX)
    token = uuid.uuid4().hex
    try:
        work = os.path.join(root, "work")
        os.mkdir(work)
        with open(os.path.join(root, "main.py"), "w", encoding="utf-8") as f:
            f.write(source)
        return _run(mode, root, token, timeout_s)
    finally:
        if mode == "rlimits-only":
            _procs.sweep(token)
        _procs.remove_tree(root)


def run_many(sources: list[str], timeout_s: float = 5.0, max_workers: int | None = None,
             *, isolation: str | None = None) -> list[SandboxResult]:
    """Run programs concurrently (a thread per running subprocess); results in input order."""
    if not sources:
        return []
    mode = isolation or detect_isolation()  # probe once, before the threads race to it
    workers = max(1, min(len(sources), max_workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda s: run_python(s, timeout_s, isolation=mode), sources))


@functools.lru_cache(maxsize=None)
def detect_isolation() -> str:
    """The strongest mode that actually runs a program here; probed once per process."""
    for mode, tool in WRAPPERS.items():
        if shutil.which(tool):
            probe = run_python("print('ok')", 10.0, isolation=mode)
            if probe.status == "ok" and probe.stdout.strip() == "ok":
                return mode
            log.info("sandbox: %s probe failed: %s %s", mode, probe.status, probe.stderr[-500:])
    log.warning("sandbox: neither bwrap nor unshare works here; running model code with rlimits only. "
                "Network and filesystem isolation are LOST, and detached processes are only best-effort "
                "killed%s.", " (and RLIMIT_NPROC does not bind root)" if os.geteuid() == 0 else "")
    return "rlimits-only"


def _command(mode: str, root: str, token: str, status_fd: int, timeout_s: float) -> tuple[list[str], dict]:
    """(argv, env) that run root/main.py with cwd root/work under `mode`."""
    inner_root = f"/tmp/{os.path.basename(root)}" if mode == "bwrap" else root
    # the token marks every sandbox process, so rlimits-only can find the ones that left the group
    env = {**ENV, "TMPDIR": f"{inner_root}/work", "POSTTRAIN_SANDBOX": token}
    cpu = int(timeout_s) + 1
    # a fresh user namespace counts its processes from zero; without one the count is our uid's total
    nproc = MAX_PROCS if mode != "rlimits-only" else _procs.user_processes() + MAX_PROCS
    limits = ",".join(f"{k}:{s}:{h}" for k, s, h in [
        ("CPU", cpu, cpu + 1), ("AS", MEMORY_BYTES, MEMORY_BYTES), ("FSIZE", FILE_BYTES, FILE_BYTES),
        ("NOFILE", MAX_FILES, MAX_FILES), ("NPROC", nproc, nproc), ("CORE", 0, 0)])
    # -s -B plus PYTHONSAFEPATH is -I without -E: the env is wholly ours, and -E would drop the hash seed
    program = [sys.executable, "-s", "-B", f"{inner_root}/main.py"]
    shim = [sys.executable, "-I", "-S", SHIM, str(status_fd), limits,
            str(0 if mode == "rlimits-only" else MAX_PROCS), *program]
    if mode == "bwrap":
        setenv = [a for k, v in env.items() for a in ("--setenv", k, v)]
        return [shutil.which("bwrap"), "--unshare-all", "--as-pid-1", "--die-with-parent", "--new-session",
                "--clearenv", *setenv, "--ro-bind", "/", "/", "--tmpfs", "/tmp", "--dev", "/dev",
                "--proc", "/proc", "--bind", root, inner_root, "--chdir", f"{inner_root}/work", *shim], {}
    if mode == "unshare-net":
        return [shutil.which("unshare"), "--user", "--map-root-user", "--net", "--ipc", "--uts", "--mount",
                "--pid", "--fork", "--kill-child", "--mount-proc", *shim], env
    if mode == "rlimits-only":
        return shim, env
    raise ValueError(f"unknown sandbox isolation {mode!r} (known: {MODES})")


def _run(mode: str, root: str, token: str, timeout_s: float) -> SandboxResult:
    read_fd, write_fd = os.pipe()
    argv, env = _command(mode, root, token, write_fd, timeout_s)
    try:
        proc = subprocess.Popen(argv, cwd=os.path.join(root, "work"), env=env, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, pass_fds=(write_fd,),
                                start_new_session=True)
    except OSError as e:
        os.close(read_fd)
        return SandboxResult(None, "error", "", f"sandbox failed to start: {e}", mode)
    finally:
        os.close(write_fd)
    try:
        streams, timed_out = _procs.collect(proc, read_fd, time.monotonic() + timeout_s)
    finally:
        _procs.kill_group(proc)  # before reaping: while the leader is a zombie its group id cannot be reused
        proc.wait()
        os.close(read_fd)
        proc.stdout.close()
        proc.stderr.close()
    out, err, how = (streams[k].text() for k in ("out", "err", "status"))
    return _result(proc.returncode, how, timed_out, out, err, mode)


def _result(rc: int | None, how: str, timed_out: bool, out: str, err: str, mode: str) -> SandboxResult:
    """Trust the shim's report only where the wrapper's exit code agrees (the program can reach the
    report pipe through /proc, but not the shim's own exit code)."""
    kind, _, value = how.strip().rpartition("\n")[-1].partition(" ")  # the shim writes last
    if timed_out:
        return SandboxResult(rc, "timeout", out, err, mode)
    if kind == "procs":
        return SandboxResult(rc, "process-limit", out, err + f"\nsandbox: {value} processes", mode)
    if kind == "exit" and value.isdigit() and int(value) == rc:
        return SandboxResult(rc, "ok" if rc == 0 else "exit", out, err, mode)
    if kind == "signal" and value.isdigit() and rc in (128 + int(value), -int(value)):
        return SandboxResult(-int(value), "signal", out, err, mode)
    if rc is not None and rc < 0:  # the shim itself was killed (e.g. the program killed its parent)
        return SandboxResult(rc, "signal", out, err, mode)
    # no (believable) report: the shim's exit code, which mirrors the program's, decides
    return SandboxResult(rc, "ok" if rc == 0 else "exit", out, err, mode)
