"""Run untrusted Python (model-generated code) in a throwaway sandbox; nothing else may run it.

Each run gets its own session, an empty temporary working directory (removed afterwards), a minimal
environment (none of ours: no HF_TOKEN), resource limits, a wall-clock timeout that kills everything it
started, and capped stdout/stderr. On top of that, the best isolation this machine offers, probed once:

  bwrap         bubblewrap: all namespaces, no capabilities, read-only host filesystem, private /tmp, no network
  unshare-net   util-linux unshare: user + network + pid + mount namespaces (no network; a detached
                grandchild dies with the sandbox) but the host filesystem is shared, with our rights
  rlimits-only  plain subprocess: network and filesystem isolation are lost (a warning is logged)

Cold path (unshare-net, rlimits-only, and bwrap with warm=False): us -> [bwrap | unshare] -> shim -> program,
a fresh sandbox and two fresh interpreters per program (~40 ms of start-up). The shim is a few lines of
trusted Python that sets the limits, runs the program, and reports how it ended on a pipe the program never
holds, so a program that kills its parent kills only the shim. In the namespaced modes the shim is the pid
namespace's init, so everything the program starts dies with it. RLIMIT_NPROC does not bind processes that
run as host root (even inside a user namespace), so in the namespaced modes the shim also counts the
processes of its private /proc and kills the namespace past MAX_PROCS.

Warm path (bwrap, the default there): a pool of long-lived bwrap sandboxes (same namespaces, mounts and
--cap-drop ALL), each running reward/_zygote.py as its pid-1 init, which forks one child per program: the
child takes its own session, a fresh working directory, the limits, and runs the program in the
already-started interpreter (~2 ms instead of ~40). One program at a time per sandbox; after each, the
zygote kills every other process of its namespace, removes the program's directory and checks the sandbox
against its baseline (writable filesystems, IPC objects, keys, sockets, its own limits): anything left
over retires that sandbox, so no program sees another's files or processes. The zygote is pid 1 (no signal
from inside reaches it) and not dumpable (no ptrace, no /proc/1/fd or mem), so its report is trusted.
Nothing of a warm sandbox is on the host's disk. See _zygote.py for what the child does and how exactly
it differs from a fresh interpreter (the preloaded modules are already in sys.modules).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
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
ZYGOTE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_zygote.py")
WARM = True  # bwrap: run programs in warm sandboxes (the warm path above); run_python(warm=...) overrides
POOL_MAX = max(4, os.cpu_count() or 1)  # idle warm sandboxes kept for the next call
START_TIMEOUT_S = 30.0  # a warm sandbox not ready by then -> the cold path (and a warning)
BACKSTOP_S = 2.0  # past the timeout, how long we wait for a warm sandbox's report before killing it
WRAPPERS = {"bwrap": "bwrap", "unshare-net": "unshare"}  # mode -> the tool it needs


class SandboxResult(NamedTuple):
    """How one program ended. status: "ok" (exit 0), "exit" (non-zero exit), "signal" (killed by a
    signal; returncode = -signal), "timeout", "process-limit", or "error" (the sandbox failed)."""

    returncode: int | None
    status: str
    stdout: str
    stderr: str
    isolation: str


def run_python(source: str, timeout_s: float = 5.0, *, isolation: str | None = None,
               warm: bool | None = None) -> SandboxResult:
    """Run `source` as a Python program in the sandbox; `isolation` forces a mode (tests only); `warm`
    (bwrap only) picks the warm or the cold path (default: WARM)."""
    mode = isolation or detect_isolation()
    if mode == "bwrap" and (WARM if warm is None else warm) and not _pool.broken:
        result = _run_warm(source, timeout_s)
        if result is not None:
            return result
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
             *, isolation: str | None = None, warm: bool | None = None) -> list[SandboxResult]:
    """Run programs concurrently (a thread per running program); results in input order."""
    if not sources:
        return []
    mode = isolation or detect_isolation()  # probe once, before the threads race to it
    workers = max(1, min(len(sources), max_workers or os.cpu_count() or 1))
    with ThreadPoolExecutor(workers, thread_name_prefix="sandbox") as pool:
        return list(pool.map(lambda s: run_python(s, timeout_s, isolation=mode, warm=warm), sources))


@functools.lru_cache(maxsize=None)
def detect_isolation() -> str:
    """The strongest mode that actually runs a program here; probed once per process."""
    for mode, tool in WRAPPERS.items():
        if shutil.which(tool):
            probe = run_python("print('ok')", 10.0, isolation=mode, warm=False)
            if probe.status == "ok" and probe.stdout.strip() == "ok":
                return mode
            log.info("sandbox: %s probe failed: %s %s", mode, probe.status, probe.stderr[-500:])
    log.warning("sandbox: neither bwrap nor unshare works here; running model code with rlimits only. "
                "Network and filesystem isolation are LOST, and detached processes are only best-effort "
                "killed%s.", " (and RLIMIT_NPROC does not bind root)" if os.geteuid() == 0 else "")
    return "rlimits-only"


def _limits(mode: str, timeout_s: float) -> str:
    """The shim's LIMITS argument (also the zygote's, per program)."""
    cpu = int(timeout_s) + 1
    # a fresh user namespace counts its processes from zero; without one the count is our uid's total
    nproc = MAX_PROCS if mode != "rlimits-only" else _procs.user_processes() + MAX_PROCS
    # MSGQUEUE 0: no POSIX message queue (it would outlive the program, and nothing can list it unmounted)
    return ",".join(f"{k}:{s}:{h}" for k, s, h in [
        ("CPU", cpu, cpu + 1), ("AS", MEMORY_BYTES, MEMORY_BYTES), ("FSIZE", FILE_BYTES, FILE_BYTES),
        ("NOFILE", MAX_FILES, MAX_FILES), ("NPROC", nproc, nproc), ("CORE", 0, 0), ("MSGQUEUE", 0, 0)])


def _bwrap(env: dict, binds: list[str], chdir: str) -> list[str]:
    """bwrap's argv up to the command: / read-only, private /tmp, /dev and /proc, then `binds`.
    --cap-drop ALL: run by root, bwrap would otherwise leave every capability in the sandbox's user
    namespace, enough to remount / read-write (and write the host's files as root)."""
    setenv = [a for k, v in env.items() for a in ("--setenv", k, v)]
    return [shutil.which("bwrap"), "--unshare-all", "--as-pid-1", "--die-with-parent", "--new-session",
            "--cap-drop", "ALL", "--clearenv", *setenv, "--ro-bind", "/", "/", "--tmpfs", "/tmp",
            "--dev", "/dev", "--proc", "/proc", *binds, "--chdir", chdir]


def _command(mode: str, root: str, token: str, status_fd: int, timeout_s: float) -> tuple[list[str], dict]:
    """(argv, env) that run root/main.py with cwd root/work under `mode`."""
    inner_root = f"/tmp/{os.path.basename(root)}" if mode == "bwrap" else root
    # the token marks every sandbox process, so rlimits-only can find the ones that left the group
    env = {**ENV, "TMPDIR": f"{inner_root}/work", "POSTTRAIN_SANDBOX": token}
    # -s -B plus PYTHONSAFEPATH is -I without -E: the env is wholly ours, and -E would drop the hash seed
    program = [sys.executable, "-s", "-B", f"{inner_root}/main.py"]
    shim = [sys.executable, "-I", "-S", SHIM, str(status_fd), _limits(mode, timeout_s),
            str(0 if mode == "rlimits-only" else MAX_PROCS), *program]
    if mode == "bwrap":
        return [*_bwrap(env, ["--bind", root, inner_root], f"{inner_root}/work"), *shim], {}
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


# ---- warm path ----------------------------------------------------------------------------------------

class _Worker:
    """One warm bwrap sandbox running _zygote.py as its init; one program at a time (see the module doc).
    Nothing of it is on the host's disk: programs' directories are in the sandbox's private /tmp."""

    def __init__(self) -> None:
        self.pid = os.getpid()  # the process that owns it (a fork of ours must not use it)
        self.log = tempfile.TemporaryFile()  # the zygote's own stderr, for when it fails to start
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = None
        try:
            root = f"/tmp/{PREFIX}{uuid.uuid4().hex[:12]}"  # PREFIX: in every program's path, as cold
            argv = [*_bwrap(ENV, [], "/"), sys.executable, "-s", "-B", ZYGOTE, str(theirs.fileno()), root,
                    str(MAX_PROCS)]
            self.proc = _pool.spawn(argv, theirs.fileno(), self.log)
            theirs.close()
            self.sock.settimeout(START_TIMEOUT_S)
            ready = self.sock.recv(16)
            self.sock.settimeout(None)
            if ready != b"ready":
                raise OSError("no ready message")
        except OSError as e:
            theirs.close()
            self.log.seek(0)
            said = self.log.read()[-500:]
            self.close()
            raise OSError(f"warm sandbox failed to start: {e}: {said!r}") from None

    def run(self, source: str, timeout_s: float) -> tuple[SandboxResult | None, bool]:
        """(result, still clean); result None: the program never started (the zygote is gone)."""
        src = os.memfd_create("posttrain-program", os.MFD_CLOEXEC)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            data = memoryview(source.encode("utf-8"))
            while data:
                data = data[os.write(src, data):]
            request = f"{_limits('bwrap', timeout_s)} {float(timeout_s)!r} {uuid.uuid4().hex}"
            try:
                socket.send_fds(self.sock, [request.encode()], [out_w, err_w, src])
            except OSError:
                return None, False
            finally:
                for fd in (out_w, err_w, src):
                    os.close(fd)
            streams, report, timed_out = _procs.collect_report(
                out_r, err_r, self.sock, time.monotonic() + timeout_s + BACKSTOP_S)
        finally:
            os.close(out_r)
            os.close(err_r)
        words = (report or b"").decode("ascii", "replace").split()
        if words == ["retry"]:
            return None, False
        clean = bool(words) and words[-1] != "tainted"
        return _reported(words, timed_out, streams["out"].text(), streams["err"].text()), clean

    def close(self) -> None:
        self.sock.close()  # the zygote, at EOF, kills its namespace and exits
        if self.proc is not None:
            _procs.kill_group(self.proc)  # bwrap; --die-with-parent takes the zygote with it
            self.proc.wait()
        self.log.close()


def _reported(words: list[str], timed_out: bool, out: str, err: str) -> SandboxResult:
    """A zygote's report -> SandboxResult (the report is trusted: no program can reach its socket)."""
    kind, value = (words + ["", ""])[:2]
    if kind == "exit" and value.isdigit():
        return SandboxResult(int(value), "ok" if value == "0" else "exit", out, err, "bwrap")
    if kind == "signal" and value.isdigit():
        return SandboxResult(-int(value), "signal", out, err, "bwrap")
    if kind == "procs":
        return SandboxResult(-9, "process-limit", out, err + f"\nsandbox: {value} processes", "bwrap")
    if kind == "timeout" or timed_out:  # timed_out: no report BACKSTOP_S past the timeout
        return SandboxResult(-9, "timeout", out, err, "bwrap")
    return SandboxResult(None, "error", out, err + "\nsandbox: the warm sandbox died", "bwrap")


class _Pool:
    """Idle warm sandboxes, shared by all threads; forgotten in a forked child (they are the parent's)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.idle: list[_Worker] = []
        self.broken = False  # a sandbox failed to start: the cold path from then on
        self.spawner: ThreadPoolExecutor | None = None

    def acquire(self) -> _Worker | None:
        with self.lock:
            while self.idle:
                worker = self.idle.pop()
                if worker.proc.poll() is None:
                    return worker
                worker.close()
        try:
            return _Worker()
        except OSError as e:
            self.broken = True
            log.warning("sandbox: %s; running each program in a fresh (cold) bwrap sandbox instead", e)
            return None

    def release(self, worker: _Worker, clean: bool) -> None:
        if clean and worker.pid == os.getpid():
            with self.lock:
                if len(self.idle) < POOL_MAX:
                    self.idle.append(worker)
                    return
        worker.close()

    def spawn(self, argv: list[str], fd: int, stderr) -> subprocess.Popen:
        """Popen from one long-lived thread: PR_SET_PDEATHSIG (bwrap --die-with-parent) may fire when the
        creating *thread* exits (prctl(2)), and run_many's threads end with each call."""
        with self.lock:
            if self.spawner is None:
                self.spawner = ThreadPoolExecutor(1, thread_name_prefix="sandbox-spawner")
        return self.spawner.submit(subprocess.Popen, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=stderr, pass_fds=(fd,), start_new_session=True, env={}).result()

    def close(self) -> None:
        with self.lock:
            idle, self.idle = self.idle, []
        for worker in idle:
            worker.close()


_pool = _Pool()
atexit.register(lambda: _pool.close())


def _forget_pool() -> None:
    global _pool
    _pool = _Pool()


os.register_at_fork(after_in_child=_forget_pool)


def warm_pids() -> set[int]:
    """Host pids of the idle warm sandboxes' bwrap processes (tests: they are not leftovers)."""
    with _pool.lock:
        return {w.proc.pid for w in _pool.idle}


def _run_warm(source: str, timeout_s: float) -> SandboxResult | None:
    """Run on a warm sandbox (a fresh one if the program could not start on the first); None: use the
    cold path."""
    for _ in range(2):
        worker = _pool.acquire()
        if worker is None:
            return None
        try:
            result, clean = worker.run(source, timeout_s)
        except BaseException:
            worker.close()
            raise
        _pool.release(worker, clean)
        if result is not None:
            return result
    _pool.broken = True
    log.warning("sandbox: programs do not start in warm sandboxes; running each program in a fresh (cold) "
                "bwrap sandbox instead")
    return None
