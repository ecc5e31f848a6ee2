"""The warm sandbox's server ("zygote"): pid 1 of one long-lived bwrap sandbox, forking a child per program.
Stdlib only; run by reward.sandbox as `python -s -B _zygote.py SOCK_FD ROOT MAX_PROCS [PRELOADS]` (the
flags and environment a program gets), with no capabilities (bwrap --cap-drop ALL). ROOT is a new
directory in the sandbox's private /tmp; each program gets ROOT/<random>/ with main.py and an empty work/.

Protocol on SOCK_FD (a SOCK_SEQPACKET socket to the host; one message per datagram):
  zygote -> host  b"ready"                                  once, after start-up
  host -> zygote  b"LIMITS TIMEOUT_S TOKEN" + fds out, err, src[, stdin]  run the source in memfd `src`,
                                                            stdout/stderr on the pipes `out` and `err`,
                                                            stdin the memfd `stdin` (else /dev/null)
  zygote -> host  b"REPORT" or b"REPORT tainted"            REPORT: "exit N", "signal N", "timeout", "procs N"
                  or b"retry"                               the program could not start (the zygote exits)
EOF on the socket: the host is gone; the zygote kills everything and exits (pid 1 exiting ends the sandbox).

The child, before the program: its own session; writes DIR/main.py from the memfd; stdout/stderr the two
pipes, stdin the request's memfd or /dev/null, every other descriptor closed; cwd DIR/work with TMPDIR
(and PWD) set to it; the rlimits (see _shim.set_limits) and a lower priority. It then runs the program in
the interpreter it was forked from (the PRELOAD modules already imported) as `python -s -B DIR/main.py`
would (same flags, sys.path and environment; a fresh __main__; sys.argv = [DIR/main.py]; run_program
says how the exit differs). The zygote itself never reads a program's source, output or files (a later
child's memory, a copy of the zygote's, has none of an earlier program's).

PRELOADS (argv's optional 4th word, comma-separated): modules the host bound read-only as
HERE/preload/NAME.py -- its own trusted code (reward.sandbox.preload), never a program's -- imported once
at start, after PRELOAD.

Between programs the sandbox must be as it was: the zygote, as init, SIGKILLs every other process of the pid
namespace (kill(-1) reaches those that left the session) and reaps them; removes DIR (work/ must be empty
and main.py alone beside it); resets the times of /tmp, ROOT, /dev and /dev/shm; then compares the sandbox
with its baseline: those directories (entries, modes, owners, extended attributes), SysV IPC objects, keys,
socket counts (a TIME_WAIT port), its own rlimits, niceness, CPU affinity and OOM score (a program may
change those of a process of its uid). Any difference -> "tainted": the zygote exits and the next program
gets a fresh sandbox. POSIX message queues cannot be listed without mounting mqueue, so RLIMIT_MSGQUEUE
is 0 instead. Left open: covert channels that need both programs' cooperation (pid numbers keep counting,
interface counters, timing); nothing a program writes reaches the next. The zygote is not dumpable, so a
program cannot ptrace it or reach its memory or descriptors through /proc/1; as pid 1 it gets no signal
sent from inside the namespace (no handler is installed: SIGINT is reset to the default).
"""

import builtins
import ctypes
import gc
import importlib.machinery
import importlib.util
import os
import resource
import stat
import select
import signal
import socket
import sys
import time
import types

HERE = os.path.dirname(os.path.abspath(__file__))
PR_SET_DUMPABLE = 4
# Imported once here, so a program that imports them finds them loaded (HumanEval's imports and the usual).
# pickle, traceback, linecache, types, binascii: reward.code's harness (ctypes: imported here anyway).
PRELOAD = ("typing", "math", "random", "copy", "string", "collections", "re", "hashlib", "itertools",
           "functools", "heapq", "bisect", "operator", "fractions", "decimal", "statistics", "datetime", "json",
           "pickle", "traceback", "linecache", "types", "binascii")
WRITABLE = ("/tmp", "/dev", "/dev/shm")  # bwrap's tmpfs mounts: all a program may write to
IPC_TABLES = ("/proc/sysvipc/shm", "/proc/sysvipc/msg", "/proc/sysvipc/sem")
# the network namespace's own socket counts (TIME_WAIT included: a port the next program could not bind);
# /proc/net/tcp would list them too but walks the host's whole table (~8 ms)
SOCKSTAT = ("/proc/net/sockstat", "/proc/net/sockstat6")
HOST_WIDE = {"orphan", "alloc", "mem", "memory"}  # sockstat fields that count the whole host

_spec = importlib.util.spec_from_file_location("_posttrain_sandbox_shim", os.path.join(HERE, "_shim.py"))
shim = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shim)
libc = ctypes.CDLL(None, use_errno=True)


def _tree(path: str, dev: int) -> list:
    """Every entry under `path` on device `dev` (not inside other mounts, e.g. the read-only binds)."""
    found = []
    for d, dirs, files in os.walk(path):
        kept = []
        for name in sorted(dirs + files):
            try:
                st = os.lstat(os.path.join(d, name))
            except OSError:
                found.append((d, name, None))
                continue
            found.append((d, name, st.st_ino, st.st_mode, st.st_rdev, sorted(os.listxattr(os.path.join(d, name),
                                                                                      follow_symlinks=False))))
            if name in dirs and st.st_dev == dev:
                kept.append(name)
        dirs[:] = kept
    return found


def snapshot(root: str) -> tuple:
    """What a program could leave behind for the next one, short of a running process."""
    listings = []
    for top in (*WRITABLE, root):
        try:
            st = os.lstat(top)
            names = sorted(os.listdir(top))
            stats = [(st.st_ino, st.st_mode, st.st_uid, st.st_gid, sorted(os.listxattr(top)))]
        except OSError:
            names, stats = None, [None]
        for name in names or ():
            try:
                st = os.lstat(os.path.join(top, name))
                stats.append((name, st.st_ino, st.st_mode, st.st_rdev))
            except OSError:
                stats.append((name, None))
            else:  # a directory of the tmpfs itself (e.g. one bwrap made to hold a virtualenv bound under /tmp)
                if top != root and stat.S_ISDIR(st.st_mode) and st.st_dev == os.lstat(top).st_dev:
                    stats.append(_tree(os.path.join(top, name), st.st_dev))
        listings.append(stats)
    tables = []
    for path in IPC_TABLES:
        try:
            with open(path) as f:
                tables.append(f.read().splitlines()[1:])  # rows after the header
        except OSError:
            tables.append(None)
    for path in SOCKSTAT:
        try:
            with open(path) as f:
                words = f.read().split()
        except OSError:
            words = []
        tables.append([(k, v) for k, v in zip(words, words[1:]) if v.isdigit() and k not in HOST_WIDE])
    try:  # (id, type) of every key we can see: usage counts and summaries change on their own
        with open("/proc/keys") as f:
            keys = sorted((row.split()[0], row.split()[7]) for row in f if len(row.split()) > 7)
    except OSError:
        keys = None
    try:
        with open("/proc/self/oom_score_adj") as f:
            oom = f.read()
    except OSError:
        oom = None
    limits = [resource.getrlimit(getattr(resource, name)) for name in sorted(dir(resource))
              if name.startswith("RLIMIT_")]
    return (listings, tables, keys, oom, limits, os.getpriority(os.PRIO_PROCESS, 0),
            sorted(os.sched_getaffinity(0)), os.getcwd())


def kill_all() -> None:
    """SIGKILL every other process of the namespace and reap them all (init inherits every orphan)."""
    while True:
        try:
            os.kill(-1, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            return
        time.sleep(0.0001)  # a SIGKILLed process takes ~0.3 ms to be gone: poll finely


def describe(status: int) -> str:
    return "signal %d" % os.WTERMSIG(status) if os.WIFSIGNALED(status) else "exit %d" % os.WEXITSTATUS(status)


def supervise(pid: int, deadline: float, max_procs: int, sock: socket.socket) -> str:
    """Wait for the program: its report, "timeout" at the deadline, or "procs N" past max_procs processes."""
    pidfd = os.pidfd_open(pid)
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    poller.register(sock, select.POLLIN)
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return "timeout"
            for fd, _ in poller.poll(max(1, int(min(left, shim.POLL_S) * 1000))):
                if fd == sock.fileno():  # the host went away, or broke the protocol
                    kill_all()
                    os._exit(0)
            try:  # reap orphans as they die; the program's own status ends the wait
                while True:
                    done, status = os.waitpid(-1, os.WNOHANG)
                    if done == 0:
                        break
                    if done == pid:
                        return describe(status)
            except ChildProcessError:
                return "exit 0"  # unreachable: the program is our child until reaped above
            if max_procs:
                count = sum(entry.isdigit() for entry in os.listdir("/proc"))
                if count > max_procs:
                    return "procs %d" % count
    finally:
        os.close(pidfd)


def serve(sock: socket.socket, root: str, max_procs: int) -> tuple:
    """The zygote's loop; returns only in a forked child: (program directory, request words, fds)."""
    os.mkdir(root, 0o700)
    baseline = snapshot(root)
    times = {top: (os.lstat(top).st_atime_ns, os.lstat(top).st_mtime_ns) for top in (*WRITABLE, root)}
    sock.send(b"ready")
    while True:
        msg, fds, _, _ = socket.recv_fds(sock, 4096, 4)
        words = msg.decode("ascii", "replace").split()
        if len(fds) not in (3, 4) or len(words) != 3:  # EOF (the host is gone) or a broken request
            kill_all()
            os._exit(0)
        deadline = time.monotonic() + float(words[1])
        directory = os.path.join(root, os.urandom(8).hex())
        try:
            os.mkdir(directory, 0o700)
            os.mkdir(os.path.join(directory, "work"))
            sys.stdout.flush()
            sys.stderr.flush()
            pid = os.fork()
        except OSError:  # the program never started: the host retries it on a fresh sandbox
            sock.send(b"retry")
            os._exit(0)
        if pid == 0:
            return directory, words, fds
        for fd in fds:
            os.close(fd)
        report = supervise(pid, deadline, max_procs, sock)
        kill_all()
        tainted = not remove_program_dir(directory)
        for top, atime_mtime in times.items():  # what a program may have set them to is gone
            try:
                os.utime(top, ns=atime_mtime, follow_symlinks=False)
            except OSError:
                tainted = True
        tainted = tainted or snapshot(root) != baseline
        sock.send((report + " tainted" if tainted else report).encode())
        if tainted:
            os._exit(0)


def remove_program_dir(directory: str) -> bool:
    """Remove DIR/work (which must be empty) and DIR/main.py, then DIR; False if anything else is there
    (the zygote is then retired, so the names it had to read go with it)."""
    try:
        os.rmdir(os.path.join(directory, "work"))
        if os.listdir(directory) != ["main.py"]:
            return False
        os.unlink(os.path.join(directory, "main.py"))
        os.rmdir(directory)
        return True
    except OSError:
        return False


def become_program(sock: socket.socket, directory: str, words: list, fds: list) -> tuple:
    """In the child: write main.py, isolate and limit; (main.py's path, a fresh __main__'s namespace)."""
    limits, _, token = words
    os.setsid()
    path = os.path.join(directory, "main.py")
    os.lseek(fds[2], 0, os.SEEK_SET)  # the source, in a memfd the host wrote
    with open(fds[2], "rb", closefd=False) as src, open(path, "wb") as dst:
        dst.write(src.read())
    os.dup2(fds[0], 1)
    os.dup2(fds[1], 2)
    if len(fds) > 3:  # stdin (else ours: /dev/null)
        os.dup2(fds[3], 0)
    sock.detach()  # its number is closed below; the object must not close a reused number later
    for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
        if fd > 2:
            try:
                os.close(fd)
            except OSError:
                pass
    libc.prctl(PR_SET_DUMPABLE, 1, 0, 0, 0)  # the program's own /proc/self is its own again
    signal.signal(signal.SIGINT, signal.default_int_handler)
    work = os.path.join(directory, "work")
    os.chdir(work)
    os.environ.update(TMPDIR=work, PWD=work, POSTTRAIN_SANDBOX=token)
    shim.set_limits(limits)
    os.nice(shim.PROGRAM_NICE)
    main = types.ModuleType("__main__")
    main.__file__, main.__cached__, main.__builtins__ = path, None, builtins
    main.__loader__ = importlib.machinery.SourceFileLoader("__main__", path)
    sys.modules["__main__"] = main
    sys.argv[:] = [path]
    return path, main.__dict__


def run_program(path: str, namespace: dict) -> None:
    """Run the program and exit as `python path` would: the exit status (SystemExit, or 1 after the
    traceback of an uncaught exception), then what Python promises at exit (non-daemon threads joined,
    atexit callbacks run, stdout and stderr flushed; a failed stdout flush exits 120). The module teardown
    that follows in a real interpreter exit is skipped (it is ~8 ms of the ~10 ms a forked child takes):
    objects still alive at exit are not finalized, which Python does not promise either."""
    try:
        with open(path, "rb") as f:
            source = f.read()
        exec(compile(source, path, "exec", dont_inherit=True), namespace)
        status = 0
    except SystemExit as e:
        status = exit_status(e.code)
    except BaseException as e:  # noqa: BLE001 - the interpreter's top level, on the program's behalf
        tb = e.__traceback__
        while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
            tb = tb.tb_next  # `python main.py` prints none of our frames
        e.__traceback__ = tb
        try:
            sys.excepthook(type(e), e, tb)
        except BaseException:  # noqa: BLE001
            sys.__excepthook__(type(e), e, tb)
        status = 128 + signal.SIGINT if isinstance(e, KeyboardInterrupt) else 1
    os._exit(finish(status))


def exit_status(code) -> int:
    """What python exits with after SystemExit(code) (a code that is not an int is printed to stderr)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code & 0xFF if -(1 << 63) <= code < (1 << 63) else 255
    try:
        sys.stderr.write(str(code) + "\n")
    except BaseException:  # noqa: BLE001
        pass
    return 1


def finish(status: int) -> int:
    """The parts of interpreter exit a program may rely on; the status to exit with."""
    try:
        if "threading" in sys.modules:
            sys.modules["threading"]._shutdown()
    except BaseException:  # noqa: BLE001
        pass
    try:
        import atexit
        atexit._run_exitfuncs()
    except BaseException:  # noqa: BLE001
        pass
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None and not stream.closed:
                stream.flush()
        except BaseException:  # noqa: BLE001
            status = 120 if stream is sys.stdout and status == 0 else status
    if status == 128 + signal.SIGINT:  # python ends an uncaught KeyboardInterrupt by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    return status


def start() -> tuple:
    sock_fd, root, max_procs = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    sock = socket.socket(fileno=sock_fd)
    if os.getpid() != 1:
        sys.stderr.write("sandbox zygote: not a pid namespace init\n")
        os._exit(2)
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # init: no handler -> no signal from inside reaches us
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        sys.stderr.write("sandbox zygote: prctl(PR_SET_DUMPABLE) failed\n")
        os._exit(2)
    os.chdir("/")
    for name in PRELOAD:
        try:
            __import__(name)
        except ImportError:
            pass
    for name in filter(None, (sys.argv[4] if len(sys.argv) > 4 else "").split(",")):
        spec = importlib.util.spec_from_file_location(name, os.path.join(HERE, "preload", name + ".py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)  # an error: the sandbox fails to start (the host goes cold)
    gc.freeze()  # children do not write to the pages of what is here now (copy-on-write stays shared)
    return sock, *serve(sock, root, max_procs)


if __name__ == "__main__":
    run_program(*become_program(*start()))
