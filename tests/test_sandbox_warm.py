"""The sandbox's warm path (bwrap's default): what one program may leave for the next in the same warm
sandbox (files, directory times, processes, System V IPC, a TIME_WAIT port, the zygote's own state), and that a
warm run behaves as a fresh interpreter does, outlives the thread that started it, is killed at the backstop when
stuck and falls back to the cold path when it cannot start. Split from tests/test_sandbox.py, whose fixtures
apply here too (every mode allowed; after each test nothing is left and a fresh run still works); each test
skips on a machine that opted out of bwrap (POSTTRAIN_WITHOUT_BWRAP=1)."""

from __future__ import annotations

import os
import re
import signal
import time

import pytest

from reward import _warm, sandbox
from reward.sandbox import run_many, run_python
from tests.test_sandbox import BUDGET_S, timed, warm_only
from tests.test_sandbox import every_mode_allowed, sandbox_survives  # noqa: F401 (autouse)

# ---- the warm path: what one program may leave for the next in the same warm sandbox ----

PID_NS = "import os\nprint(os.readlink('/proc/self/ns/pid'))\n"
LEAVE = {  # program A leaves something here ...
    "cwd": "open('left', 'w').write('A')",
    "TMPDIR": "import os, tempfile\ntempfile.mkstemp()\nos.mkdir(os.path.join(os.environ['TMPDIR'], 'd'))",
    "program dir": "open('../left', 'w').write('A')",
    "zygote root": "import os\nos.mkdir('../../left')",
    "/tmp": "open('/tmp/left', 'w').write('A')",
    "/dev/shm": "open('/dev/shm/left', 'w').write('A')",
    "/dev": "open('/dev/left', 'w').write('A')",
    "/dev link": "import os\nos.unlink('/dev/stdin')\nos.symlink('/dev/zero', '/dev/stdin')",
    "chmod 0": "import os\nos.makedirs('d/e')\nos.chmod('d', 0)\nos.chmod('.', 0o500)",
    "chmod root": "import os\nos.chmod('../..', 0)\nos.chmod('/tmp', 0o500)",
    "xattr": "import os\nos.setxattr('/tmp', 'user.left', b'A')\nos.setxattr('../..', 'user.left', b'A')",
}
# The first path component under /tmp of what the sandbox binds there (a virtualenv under /tmp), if any.
TMP_BINDS = sorted({a.split("/")[2] for a in sandbox._host_binds() if a.startswith("/tmp/")})
if TMP_BINDS:  # beside the bind is the sandbox's tmpfs again (tests/test_sandbox_paths.py: from any checkout)
    LEAVE["beside a bound venv"] = "import os, sys\nopen(os.path.join(os.path.dirname(sys.prefix), 'left'), 'w')"
SEES_NOTHING = (  # ... and program B must not see it
    "import os, sys\nassert os.listdir('.') == [], os.listdir('.')\n"
    "assert sorted(os.listdir('..')) == ['main.py', 'work'], os.listdir('..')\n"
    "root = os.path.dirname(os.path.dirname(os.getcwd()))\n"
    "assert os.listdir(root) == [os.path.basename(os.path.dirname(os.getcwd()))], os.listdir(root)\n"
    "assert sorted(os.listdir('/tmp')) == sorted([os.path.basename(root), *TMP_BINDS]), os.listdir('/tmp')\n"
    "assert not os.path.exists(os.path.join(os.path.dirname(sys.prefix), 'left'))\n"
    "assert os.listdir('/dev/shm') == [] and 'left' not in os.listdir('/dev'), os.listdir('/dev')\n"
    "assert os.readlink('/dev/stdin') == '/proc/self/fd/0'\n"
    "assert os.listxattr('/tmp') == os.listxattr(root) == [], (os.listxattr('/tmp'), os.listxattr(root))\n"
)


SEES_NOTHING = SEES_NOTHING.replace("TMP_BINDS", repr(TMP_BINDS))


@warm_only
def test_warm_sandbox_is_reused_by_clean_programs():
    namespaces = {run_python(PID_NS).stdout for _ in range(4)}
    assert len(namespaces) == 1 and namespaces.pop().startswith("pid:[")


@warm_only
@pytest.mark.parametrize("where", list(LEAVE))
def test_files_do_not_reach_the_next_program(where):
    a = run_python(LEAVE[where] + "\n" + PID_NS)
    b = run_python(SEES_NOTHING + PID_NS)
    assert a.status == "ok" and b.status == "ok", (a, b)
    assert a.stdout != b.stdout  # the sandbox A wrote to was retired; B ran in a fresh one


@warm_only
def test_directory_times_do_not_reach_the_next_program():
    stamp = "import os\nroot = os.path.dirname(os.path.dirname(os.getcwd()))\n"
    a = run_python(stamp + "os.utime('/tmp', (12345, 12345))\nos.utime(root, (12345, 12345))\n" + PID_NS)
    b = run_python(stamp + "assert 12345 not in {os.stat(p)[s] for p in ('/tmp', root) for s in (7, 8)}\n" + PID_NS)
    assert a.status == "ok" and b.status == "ok", (a, b)
    assert a.stdout == b.stdout  # restored, so the sandbox was kept


@warm_only
def test_processes_do_not_reach_the_next_program():
    """A's detached grandchild (own session, orphaned) is killed before B runs; the sandbox is reused."""
    a = run_python("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                   "        time.sleep(60)\n    os._exit(0)\nif os.fork() == 0:\n    time.sleep(60)\n"
                   "time.sleep(0.2)\n" + PID_NS)
    b = run_python(PID_NS + "print(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()), os.getpid())\n")
    assert a.status == "ok" and b.status == "ok", (a, b)
    b_ns, listing = b.stdout.splitlines()
    pids, me = listing.rsplit(" ", 1)
    assert a.stdout.strip() == b_ns and eval(pids) == sorted([1, int(me)])  # noqa: S307 - our own output


@warm_only
def test_sysv_ipc_does_not_reach_the_next_program():
    shm = "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
    a = run_python(shm + "assert libc.shmget(0x5EED, 4096, 0o1000 | 0o600) >= 0\n")  # IPC_CREAT
    b = run_python(shm + "assert libc.shmget(0x5EED, 0, 0) == -1\n")
    assert a.status == "ok" and b.status == "ok", (a, b)


@warm_only
def test_time_wait_port_does_not_reach_the_next_program():
    serve = ("import socket\nsrv = socket.socket()\nsrv.bind(('127.0.0.1', 8123))\nsrv.listen()\n"
             "c = socket.create_connection(('127.0.0.1', 8123))\nsrv.accept()[0].close()\n")
    a = run_python(serve + "c.close()\nsrv.close()\n")  # the server side closed first: TIME_WAIT
    b = run_python(serve)
    assert a.status == "ok" and b.status == "ok", (a, b)


@warm_only
def test_the_zygote_is_out_of_reach():
    """The program cannot read the zygote's memory or descriptors, ptrace it or signal it; what it may
    change (its rlimits, its priority) retires the sandbox, so the next program runs as usual."""
    before = run_python("import os\nprint(os.getpriority(os.PRIO_PROCESS, 0))\n")
    a = run_python("import ctypes, os, resource, signal\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                   "paths = ['/proc/1/mem', '/proc/1/environ', '/proc/1/cwd/x', '/proc/1/root/tmp/x']\n"
                   "paths += [f'/proc/1/fd/{fd}' for fd in os.listdir('/proc/1/fd')]\n"  # numbers only
                   "for path in paths:\n    for flags in (os.O_RDONLY, os.O_WRONLY | os.O_CREAT):\n        try:\n"
                   "            os.open(path, flags)\n            print('OPENED', path)\n"
                   "        except OSError:\n            pass\n"
                   "print('ptrace', libc.ptrace(16, 1, None, None))\n"  # PTRACE_ATTACH
                   "for sig in (signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGSTOP):\n"
                   "    os.kill(1, sig)\n"
                   "resource.prlimit(1, resource.RLIMIT_AS, (50 << 20, 50 << 20))\n"
                   "os.setpriority(os.PRIO_PROCESS, 1, 19)\n")
    b = run_python("import os, resource\nprint(os.getpriority(os.PRIO_PROCESS, 0))\n"
                   "print(resource.getrlimit(resource.RLIMIT_AS))\nx = bytearray(300 << 20)\n")
    assert a.status == "ok" and "OPENED" not in a.stdout and "ptrace -1" in a.stdout, a
    assert b.status == "ok" and b.stdout.splitlines() == [before.stdout.strip(), str((sandbox.MEMORY_BYTES,) * 2)], b


@warm_only
def test_warm_programs_get_their_own_random_state():
    outputs = {run_python("import random\nprint(random.random())\n").stdout for _ in range(3)}
    assert len(outputs) == 3  # random is preloaded in the zygote: each child must reseed


SAME_AS_COLD = [
    "print('x', end='')\nimport sys\nsys.stderr.write('e')",
    "def f():\n    raise ValueError('boom')\nf()",
    "raise SystemExit('bye')",
    "import sys\nsys.exit(300)",
    "x = (\n",
    "input()",
    "print('lost')\nimport os\nos._exit(0)",
    "import sys, os\nprint(__name__, os.path.basename(__file__), sys.argv, sys.flags.no_user_site,"
    " sys.flags.dont_write_bytecode, sys.flags.safe_path, sys.path)",
    "import atexit, threading, time\natexit.register(print, 'atexit')\n"
    "threading.Thread(target=lambda: (time.sleep(0.1), print('thread'))).start()",
    "import sys\nprint(sys.stdout.isatty(), sys.stdin.isatty(), sys.stdout.encoding, sys.stdout.line_buffering)",
    "import os\nprint(sorted(os.environ), os.getcwd(), os.environ['TMPDIR'] == os.getcwd(), oct(os.umask(0)))",
    "import signal\nprint([signal.getsignal(s) for s in"
    " (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGCHLD)])",
    "import os, resource\nprint(os.getpriority(os.PRIO_PROCESS, 0), [resource.getrlimit(getattr(resource, n)) for n in"
    " ('RLIMIT_CPU', 'RLIMIT_AS', 'RLIMIT_FSIZE', 'RLIMIT_NOFILE', 'RLIMIT_NPROC', 'RLIMIT_CORE', 'RLIMIT_MSGQUEUE')])",
    "import os\nprint(sorted(os.listdir('/proc/self/fd')))",
    "class A:\n    def __del__(self):\n        pass\na = A()\nraise KeyboardInterrupt",
]


@warm_only
@pytest.mark.parametrize("source", SAME_AS_COLD)
def test_warm_runs_a_program_as_a_fresh_interpreter_does(source):
    def seen(result):
        path = re.compile(r"/tmp/posttrain-sandbox-\w+(?:/[0-9a-f]{16})?")
        return result.returncode, result.status, path.sub("DIR", result.stdout), path.sub("DIR", result.stderr)

    assert seen(run_python(source, warm=True)) == seen(run_python(source, warm=False))


@warm_only
def test_warm_sandboxes_outlive_the_threads_that_started_them():
    _warm._pool.close()
    first = {r.stdout for r in run_many([PID_NS] * 4, max_workers=2)}  # started in run_many's threads
    time.sleep(0.2)
    assert {run_python(PID_NS).stdout for _ in range(2)} <= first


@warm_only
def test_a_stuck_warm_sandbox_is_killed_at_the_backstop(monkeypatch):
    monkeypatch.setattr(_warm, "BACKSTOP_S", 0.5)
    run_python("pass")
    bwrap = _warm._pool.idle[-1].proc  # the next run takes it
    init = next(int(p) for p in filter(str.isdigit, os.listdir("/proc"))
                if open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1] == str(bwrap.pid))
    os.kill(init, signal.SIGSTOP)  # from outside its namespace, this reaches the init
    result, took = timed("print('never')", timeout_s=0.5)
    assert result.status == "timeout" and bwrap.poll() is not None
    assert took < BUDGET_S  # killed at the backstop; its stopped init would never report


@warm_only
def test_a_warm_sandbox_that_cannot_start_falls_back_to_the_cold_path(monkeypatch, caplog):
    monkeypatch.setattr(_warm, "ZYGOTE", "/nonexistent/_zygote.py")
    monkeypatch.setattr(_warm, "_pool", _warm._Pool())
    with caplog.at_level("WARNING", logger="reward.sandbox"):
        first, second = run_python(PID_NS), run_python(PID_NS)
    assert first.status == second.status == "ok" and first.stdout != second.stdout  # a fresh sandbox each
    assert sum("failed to start" in r.getMessage() for r in caplog.records) == 1
