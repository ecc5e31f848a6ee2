"""Run untrusted Python (model-generated code) in a throwaway sandbox; nothing else may run it.

Each run gets its own session, an empty temporary working directory (removed afterwards), a minimal
environment (none of ours: no HF_TOKEN), resource limits, a wall-clock timeout that kills everything it
started, and capped stdout/stderr. On top of that, the best isolation this machine offers, probed once, and
never less than the process requires (`require`: the recipe's score.sandbox.isolation, default bwrap; a
machine that gives less raises SandboxUnavailable before any program runs -- fail closed, no fallback):

  bwrap         bubblewrap: all namespaces, no capabilities, no network, and a root of its own (below)
  unshare-net   util-linux unshare (>= 2.38): user + network + pid + mount namespaces, the program as nobody
                there (no network; a detached grandchild dies with the sandbox) but the host filesystem is
                shared, with our rights
  rlimits-only  plain subprocess: network, filesystem and process isolation are lost; a guard (below)
                refuses network, other programs, ctypes and other processes' /proc to plain Python code

A weaker mode runs only when asked for by name, and then logs one WARNING saying why the stronger probes
failed and what it loses (LOST).

The rlimits-only guard (reward/_guard.py, the program interpreter's sitecustomize) refuses sockets, other
programs, ctypes and other processes' /proc to plain Python code before the program runs; its docstring says
what it does not stop (a program that means to get around it). ~2-4 ms a program, in rlimits-only alone.

The bwrap root (_bwrap, in reward/_box.py): a read-only empty tmpfs with read-only binds of only what the interpreter
needs -- /usr (and the /bin, /sbin, /lib* links or directories), /etc/ld.so.cache and /etc/localtime, the
Python installation (sys.base_prefix) and the virtualenv (sys.prefix; if the repository holds it, only the
virtualenv, never the repository), and our trusted scripts (_shim.py, _zygote.py, preload()'s) under
INNER_LIB -- plus a fresh /proc, a /dev with only null, zero, full, random, urandom and tty (no ptys),
and two size-capped tmpfs mounts: /tmp (TMP_BYTES; the program's directory lives there, never on the
host's disk) and /dev (DEV_BYTES, /dev/shm included). Nothing else of the host is there: no /root,
/home, /run, /var, /srv, /mnt, /opt, no repository, no /etc/shadow, and so no host Unix socket to
connect to (abstract sockets are per network namespace: a new one has none).

Memory: RLIMIT_AS (MEMORY_BYTES) binds each process and at most MAX_PROCS processes run (the watchdogs
below), so a program holds at most MAX_PROCS x MEMORY_BYTES of address space plus TMP_BYTES + DEV_BYTES of
tmpfs (bwrap). A real aggregate cap (memory.max, pids.max) needs a cgroup v2 subtree delegated to us; we
use none: where this was written, cgroup v2 is mounted with no controller enabled (memory and pids live
on the v1 hierarchy), and writing the host's v1 tree as root is not ours to do.

Cold path (unshare-net, rlimits-only, and bwrap with warm=False): us -> [bwrap | unshare] -> shim -> program,
a fresh sandbox and two fresh interpreters per program (~40 ms of start-up). The shim is a few lines of
trusted Python that sets the limits, runs the program, and reports how it ended on a pipe the program never
holds, so a program that kills its parent kills only the shim. In the namespaced modes the shim is the pid
namespace's init, so everything the program starts dies with it. RLIMIT_NPROC does not bind processes that
run as host root (even inside a user namespace: the kernel exempts the init user's processes, whatever
their namespace), so in the namespaced modes the shim also counts the processes of its private /proc and
kills the namespace past MAX_PROCS; in rlimits-only as root nothing bounds a fork bomb (the warning says so).

Warm path (bwrap, the default there; reward/_warm.py): a pool of long-lived bwrap sandboxes (same namespaces, mounts and
--cap-drop ALL), each running reward/_zygote.py as its pid-1 init, which forks one child per program: the
child takes its own session, a fresh working directory, the limits, and runs the program in the
already-started interpreter (~2 ms instead of ~40). One program at a time per sandbox; after each, the
zygote kills every other process of its namespace, removes the program's directory and checks the sandbox
against its baseline (writable filesystems, IPC objects, keys, sockets, its own limits): anything left
over retires that sandbox, so no program sees another's files or processes. The zygote is pid 1 (no signal
from inside reaches it) and not dumpable (no ptrace, no /proc/1/fd or mem), so its report is trusted.
Nothing of a warm sandbox is on the host's disk. See _zygote.py for what the child does and how exactly
it differs from a fresh interpreter (the preloaded modules are already in sys.modules).

stdin: empty (/dev/null), or `stdin=` bytes in a memfd. The program may truncate it (reward.code's harness
does, once read), so nothing else in the sandbox can read it afterwards through /proc/<pid>/fd/0.
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
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import reward._procs as _procs
import reward._warm as _warm
from reward._box import (  # noqa: F401  (re-exported: reward.sandbox is where callers read them)
    DEV_BYTES, DEVICES, ENV, FILE_BYTES, HOST_DIRS, HOST_ETC, INNER_LIB, MAX_FILES, MAX_PROCS, MEMORY_BYTES, PREFIX,
    REPO, SHIM, TMP_BYTES, SandboxResult, _bwrap, _covered, _host_binds, _limits, _memfd, _no_nested_userns)
from reward._procs import MAX_OUTPUT  # noqa: F401  (re-exported: the per-stream cap)

log = logging.getLogger(__name__)

MODES = ("bwrap", "unshare-net", "rlimits-only")
WARM = True  # bwrap: run programs in warm sandboxes (the warm path above); run_python(warm=...) overrides
WRAPPERS = {"bwrap": "bwrap", "unshare-net": "unshare"}  # mode -> the tool it needs


@dataclass(kw_only=True)
class SandboxConfig:
    """The recipe's `score.sandbox` section. `isolation`: the weakest mode model code may run under; the
    strongest mode the machine gives is used, and a machine that gives less stops the run before any work
    (`require`). unshare-net and rlimits-only lose what LOST says: choose them by name, knowingly."""

    isolation: Literal["bwrap", "unshare-net", "rlimits-only"] = "bwrap"


def run_python(source: str, timeout_s: float = 5.0, *, stdin: bytes | None = None, isolation: str | None = None,
               warm: bool | None = None) -> SandboxResult:
    """Run `source` as a Python program in the sandbox, with `stdin` (bytes) as its standard input (else
    empty); `isolation` forces a mode (tests only); `warm` (bwrap only) picks the warm or the cold path
    (default: WARM)."""
    mode = _allowed(isolation) if isolation else detect_isolation()
    return _execute(mode, source, timeout_s, stdin, WARM if warm is None else warm)


def _execute(mode: str, source: str, timeout_s: float, stdin: bytes | None, warm: bool) -> SandboxResult:
    """run_python once the mode is decided (and allowed)."""
    if mode == "bwrap" and warm:
        result = _warm.run(source, timeout_s, stdin)
        if result is not None:
            return result
    token = uuid.uuid4().hex
    if mode == "bwrap":  # the program's directory is in the sandbox's own /tmp: nothing on the host's disk
        return _run(mode, None, token, timeout_s, source, stdin)
    root = tempfile.mkdtemp(prefix=PREFIX)
    try:
        work = os.path.join(root, "work")
        os.mkdir(work)
        with open(os.path.join(root, "main.py"), "w", encoding="utf-8") as f:
            f.write(source)
        if mode == "rlimits-only":  # the guard, run before the program (reward/_guard.py)
            os.mkdir(os.path.join(root, GUARD_DIR))
            with open(os.path.join(root, GUARD_DIR, "sitecustomize.py"), "w", encoding="utf-8") as f:
                f.write(_guard_source())
        return _run(mode, root, token, timeout_s, None, stdin)
    finally:
        if mode == "rlimits-only":
            _procs.sweep(token)
        _procs.remove_tree(root)


def run_many(sources: list[str], timeout_s: float = 5.0, max_workers: int | None = None,
             *, stdins: list[bytes | None] | None = None, isolation: str | None = None,
             warm: bool | None = None) -> list[SandboxResult]:
    """Run programs concurrently (a thread per running program); results in input order. stdins[i]:
    program i's standard input (default: none)."""
    if not sources:
        return []
    if stdins is not None and len(stdins) != len(sources):
        raise ValueError(f"{len(stdins)} stdins for {len(sources)} programs")
    mode = _allowed(isolation) if isolation else detect_isolation()  # probe once, before the threads race to it
    workers = max(1, min(len(sources), max_workers or os.cpu_count() or 1))
    jobs = list(zip(sources, stdins or [None] * len(sources)))
    with ThreadPoolExecutor(workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda job: run_python(job[0], timeout_s, stdin=job[1], isolation=mode, warm=warm),
                             jobs))


# ---- the rlimits-only guard (reward/_guard.py) ---------------------------------------------------------------

GUARD_DIR = "guard"  # rlimits-only: beside main.py, the directory of the guard's sitecustomize.py


@functools.lru_cache(maxsize=None)
def _guard_source() -> str:
    """reward/_guard.py's text: the program's sitecustomize in rlimits-only mode."""
    return Path(__file__).with_name("_guard.py").read_text(encoding="utf-8")


# What each mode loses against bwrap (the warning names it).
LOST = {
    "unshare-net": "filesystem isolation is LOST: model code reads and writes the host filesystem with our "
                   "rights (e.g. /etc/shadow as root, the repository, ~/.cache/huggingface/token) and can "
                   "connect to host Unix sockets (network, pid and IPC namespaces remain; the environment "
                   "is ours to set, and our processes' /proc/<pid>/environ is out of its pid namespace; the "
                   "program runs as nobody there, but may create nested user namespaces of its own)",
    "rlimits-only": "Network and filesystem isolation are LOST (no namespaces: the host network and Unix "
                    "sockets, the host filesystem with our rights), and so is the environment's "
                    "(/proc/<pid>/environ of our processes holds HF_TOKEN, ...). An audit hook installed in "
                    "the program's interpreter before it runs refuses (PermissionError) what Python code "
                    "asks for plainly: sockets but AF_UNIX pairs, connect, bind and DNS; running other "
                    "programs (subprocess, exec, os.system, posix_spawn); ctypes' dlopen, symbols and "
                    "from_address (but prctl, capget, capset); opening another process's /proc/<pid>/... "
                    "by path. It does NOT stop native code (ctypes pointer arithmetic, crafted bytecode) "
                    "nor opens relative to a directory descriptor, which reach the network and "
                    "/proc/<pid>/environ as before, nor reads and writes of the host's files "
                    "(~/.cache/huggingface/token, the interpreter, this repository). Detached processes "
                    "are only best-effort killed",
}


# ---- which isolation: the strongest this machine gives, never weaker than required ---------------------------

REQUIRE_KEY = "score.sandbox.isolation"  # the recipe key that lowers the requirement (named in messages)
_required = "bwrap"  # the weakest mode model code may run under in this process; require() lowers it
_warned: set[str] = set()


class SandboxUnavailable(RuntimeError):
    """The isolation required for model code is not available here; the message says why and the fix."""


def require(minimum: str, check: bool = True) -> str | None:
    """Let model code run in this process under `minimum` isolation or stronger (default, before any call:
    bwrap), and check now that this machine gives it: returns the mode programs will run under, or raises
    SandboxUnavailable naming the required mode, each stronger probe's failure and the fix (check=False:
    set the minimum only). A recipe's
    `score.sandbox.isolation` (or `--isolation` on score / eval) comes here before any work starts."""
    global _required
    if minimum not in MODES:
        raise ValueError(f"unknown sandbox isolation {minimum!r} (known: {', '.join(MODES)})")
    _required = minimum
    return detect_isolation() if check else None


def required() -> str:
    return _required


@functools.lru_cache(maxsize=None)
def probe(mode: str) -> str | None:
    """None when `mode` runs a program here; otherwise why not (the tool's absence, or the probe's stderr).
    Probed once per process. rlimits-only needs no tool and always runs."""
    tool = WRAPPERS.get(mode)
    if tool is None:
        return None
    if not shutil.which(tool):
        return f"{tool} not found on PATH"
    result = _execute(mode, "print('ok')", 10.0, None, False)
    if result.status == "ok" and result.stdout.strip() == "ok":
        return None
    return f"probe failed ({result.status}): {(result.stderr.strip() or '(no stderr)')[-500:]}"


def detect_isolation() -> str:
    """The strongest mode that runs a program here, if it is at least the required one (`require`); else
    SandboxUnavailable. A mode weaker than bwrap, which the user asked for by name, logs once what it loses."""
    allowed = MODES[:MODES.index(_required) + 1]
    for mode in allowed:
        if probe(mode) is None:
            if mode != "bwrap" and mode not in _warned:
                _warned.add(mode)
                root = " (and RLIMIT_NPROC does not bind root: nothing bounds a fork bomb)" if (
                    mode == "rlimits-only" and os.geteuid() == 0) else ""
                log.warning("sandbox: running model code under %s isolation, as %s=%s allows (%s). %s%s.", mode,
                            REQUIRE_KEY, _required, "; ".join(f"{m}: {probe(m)}" for m in MODES[:MODES.index(mode)]),
                            LOST[mode], root)
            return mode
    raise SandboxUnavailable(unavailable(_required))


def unavailable(minimum: str) -> str:
    """The message for a machine that does not give `minimum` isolation: why each probe failed, and the fix."""
    why = "; ".join(f"{m}: {probe(m) or 'works'}" for m in MODES[:MODES.index(minimum) + 1])
    weaker = [m for m in MODES[MODES.index(minimum) + 1:] if probe(m) is None]
    fix = "install bubblewrap (apt install bubblewrap)" if minimum == "bwrap" else f"make {WRAPPERS[minimum]} work"
    accept = (f", or accept less by name: {REQUIRE_KEY}={weaker[0]} (recipe key or score/eval --isolation "
              f"{weaker[0]}; it loses: {LOST[weaker[0]].split(':')[0]})") if weaker else ""
    return (f"sandbox: model code must run under {minimum} isolation ({REQUIRE_KEY}={minimum}), which this machine "
            f"does not give: {why}. Fix: {fix}{accept}.")


def _allowed(mode: str) -> str:
    """A mode asked for by name (tests, probes): refused when weaker than required."""
    if mode not in MODES:
        raise ValueError(f"unknown sandbox isolation {mode!r} (known: {', '.join(MODES)})")
    if MODES.index(mode) > MODES.index(_required):
        raise SandboxUnavailable(f"sandbox: {mode} is weaker than the required {_required} isolation "
                                 f"({REQUIRE_KEY}={_required})")
    return mode


def _command(mode: str, root: str | None, token: str, status_fd: int, timeout_s: float,
             source_fd: int | None = None) -> tuple[list[str], dict]:
    """(argv, env) that run root/main.py with cwd root/work under `mode`; bwrap: main.py is copied from
    `source_fd` into the sandbox's own /tmp instead (root is None)."""
    inner_root = f"/tmp/{PREFIX}{token[:16]}" if mode == "bwrap" else root
    # the token marks every sandbox process, so rlimits-only can find the ones that left the group
    env = {**ENV, "TMPDIR": f"{inner_root}/work", "POSTTRAIN_SANDBOX": token}
    # -s -B plus PYTHONSAFEPATH is -I without -E: the env is wholly ours, and -E would drop the hash seed
    program = [sys.executable, "-s", "-B", f"{inner_root}/main.py"]
    shim = SHIM if mode != "bwrap" else f"{INNER_LIB}/{os.path.basename(SHIM)}"
    shim = [sys.executable, "-I", "-S", shim, str(status_fd), _limits(mode, timeout_s),
            str(0 if mode == "rlimits-only" else MAX_PROCS), *program]
    if mode == "bwrap":
        files = ["--dir", f"{inner_root}/work", "--file", str(source_fd), f"{inner_root}/main.py"]
        return [*_bwrap(env, files, f"{inner_root}/work", (SHIM,)), *shim], {}
    if mode == "unshare-net":
        # an unprivileged uid inside: root of its own user namespace, the program could ptrace the shim (and
        # forge its report), chroot and mount; as nobody it holds no capability there (util-linux >= 2.38)
        return [shutil.which("unshare"), "--user", "--map-user=65534", "--map-group=65534", "--net", "--ipc", "--uts",
                "--mount", "--pid", "--fork", "--kill-child", "--mount-proc", *shim], env
    if mode == "rlimits-only":  # the guard is the program interpreter's sitecustomize (never add -I or -S)
        return shim, {**env, "PYTHONPATH": f"{root}/{GUARD_DIR}"}
    raise ValueError(f"unknown sandbox isolation {mode!r} (known: {MODES})")


def _run(mode: str, root: str | None, token: str, timeout_s: float, source: str | None,
         stdin: bytes | None) -> SandboxResult:
    read_fd, write_fd = os.pipe()
    owned = [write_fd]
    try:
        source_fd = None
        if source is not None:
            source_fd = _memfd("posttrain-program", source.encode("utf-8"))
            owned.append(source_fd)
        stdin_fd = subprocess.DEVNULL
        if stdin is not None:
            stdin_fd = _memfd("posttrain-stdin", stdin)
            owned.append(stdin_fd)
        argv, env = _command(mode, root, token, write_fd, timeout_s, source_fd)
        proc = subprocess.Popen(argv, cwd=os.path.join(root, "work") if root else "/", env=env, stdin=stdin_fd,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                pass_fds=(write_fd,) if source_fd is None else (write_fd, source_fd),
                                start_new_session=True)
    except OSError as e:
        os.close(read_fd)
        return SandboxResult(None, "error", "", f"sandbox failed to start: {e}", mode)
    finally:
        for fd in owned:
            os.close(fd)
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


def preload(name: str, source: str) -> None:
    """Have every warm sandbox import `source` -- our own trusted code, never a program's -- as module
    `name` once, at start, so that its programs find it in sys.modules already (as the PRELOAD modules of
    _zygote.py). A program must not rely on it: the cold path and the other modes have no such module.
    Idle warm sandboxes started without it are retired."""
    _warm.preload(name, source)


def warm_pids() -> set[int]:
    """Host pids of the idle warm sandboxes' bwrap processes (tests: they are not leftovers)."""
    return _warm.idle_pids()
