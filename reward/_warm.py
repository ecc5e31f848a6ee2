"""The sandbox's warm path (reward/sandbox.py's module doc): a pool of long-lived bwrap sandboxes, each running
reward/_zygote.py as its init, which runs one program at a time in its already-started interpreter.

sandbox.run_python comes here under bwrap (unless warm=False) and takes the cold path when `run` returns None.
A sandbox is built as the cold path's are (reward/_box.py's _bwrap: the same namespaces, mounts and --cap-drop
ALL). This module imports reward/_box.py, never reward.sandbox (which imports this one).
"""

from __future__ import annotations

import atexit
import logging
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import reward._procs as _procs
from reward._box import ENV, INNER_LIB, MAX_PROCS, PREFIX, SHIM, SandboxResult, _bwrap, _limits, _memfd

log = logging.getLogger("reward.sandbox")  # the sandbox's: one logger for both paths

ZYGOTE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_zygote.py")
POOL_MAX = max(4, os.cpu_count() or 1)  # idle warm sandboxes kept for the next call
START_TIMEOUT_S = 30.0  # a warm sandbox not ready by then -> the cold path (and a warning)
BACKSTOP_S = 2.0  # past the timeout, how long we wait for a warm sandbox's report before killing it
PRELOADS: dict[str, str] = {}  # module name -> source that warm sandboxes import at start (see preload)


class _Worker:
    """One warm bwrap sandbox running _zygote.py as its init; one program at a time (see the module doc).
    Nothing of it is on the host's disk: programs' directories are in the sandbox's private /tmp."""

    def __init__(self) -> None:
        self.pid = os.getpid()  # the process that owns it (a fork of ours must not use it)
        self.log = tempfile.TemporaryFile()  # the zygote's own stderr, for when it fails to start
        self.sock, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.proc = None
        preloads = dict(PRELOADS)
        data = [_memfd(f"posttrain-preload-{name}", source.encode("utf-8")) for name, source in preloads.items()]
        try:
            root = f"/tmp/{PREFIX}{uuid.uuid4().hex[:12]}"  # PREFIX: in every program's path, as cold
            zygote = f"{INNER_LIB}/{os.path.basename(ZYGOTE)}"  # beside the shim it loads
            files = [a for fd, name in zip(data, preloads)
                     for a in ("--ro-bind-data", str(fd), f"{INNER_LIB}/preload/{name}.py")]
            argv = [*_bwrap(ENV, files, "/", (SHIM, ZYGOTE)), sys.executable, "-s", "-B", zygote,
                    str(theirs.fileno()), root, str(MAX_PROCS), ",".join(preloads)]
            self.proc = _pool.spawn(argv, (theirs.fileno(), *data), self.log)
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
        finally:
            for fd in data:
                os.close(fd)

    def run(self, source: str, timeout_s: float, stdin: bytes | None = None) -> tuple[SandboxResult | None, bool]:
        """(result, still clean); result None: the program never started (the zygote is gone)."""
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        try:
            fds = [out_w, err_w]  # then the source, and stdin if any
            try:
                fds.append(_memfd("posttrain-program", source.encode("utf-8")))
                if stdin is not None:
                    fds.append(_memfd("posttrain-stdin", stdin))
                request = f"{_limits('bwrap', timeout_s)} {float(timeout_s)!r} {uuid.uuid4().hex}"
                socket.send_fds(self.sock, [request.encode()], fds)
            except OSError:
                return None, False
            finally:
                for fd in fds:
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

    def spawn(self, argv: list[str], fds: tuple[int, ...], stderr) -> subprocess.Popen:
        """Popen from one long-lived thread: PR_SET_PDEATHSIG (bwrap --die-with-parent) may fire when the
        creating *thread* exits (prctl(2)), and run_many's threads end with each call."""
        with self.lock:
            if self.spawner is None:
                self.spawner = ThreadPoolExecutor(1, thread_name_prefix="sandbox-spawner")
        return self.spawner.submit(subprocess.Popen, argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=stderr, pass_fds=fds, start_new_session=True, env={}).result()

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


def preload(name: str, source: str) -> None:
    """sandbox.preload: record `source` as module `name` for warm sandboxes, and retire the idle ones."""
    if not name.isidentifier():
        raise ValueError(f"not a module name: {name!r}")
    with _pool.lock:
        PRELOADS[name] = source
        idle, _pool.idle = _pool.idle, []
    for worker in idle:
        worker.close()


def idle_pids() -> set[int]:
    """Host pids of the idle warm sandboxes' bwrap processes."""
    with _pool.lock:
        return {w.proc.pid for w in _pool.idle}


def run(source: str, timeout_s: float, stdin: bytes | None = None) -> SandboxResult | None:
    """Run on a warm sandbox (a fresh one if the program could not start on the first); None: use the
    cold path (warm sandboxes do not start here)."""
    if _pool.broken:
        return None
    for _ in range(2):
        worker = _pool.acquire()
        if worker is None:
            return None
        try:
            result, clean = worker.run(source, timeout_s, stdin)
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
