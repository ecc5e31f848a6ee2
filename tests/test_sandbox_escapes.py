"""The audit's escapes, each as a test: what a program can reach of the host (files, Unix sockets), how
much it can hold (tmpfs, processes), and what a weaker isolation mode must say it lost. The bwrap tests run
on both its paths, warm and cold. The code verifier's own escapes are in tests/test_code_escapes.py."""

from __future__ import annotations

import os
import pathlib
import socket
import uuid

import pytest

from reward import code, sandbox
from reward.sandbox import run_python
from tests.test_sandbox import WITHOUT_BWRAP, assert_nothing_left, every_mode_allowed  # noqa: F401 (autouse)

# Where bwrap is missing or its probe fails, tests.test_sandbox's import (above) already failed with the
# probe's reason: these tests skip only on a machine that opted out (POSTTRAIN_WITHOUT_BWRAP=1).
ACTIVE = sandbox.detect_isolation()
BWRAP = ACTIVE == "bwrap"
bwrap_only = pytest.mark.skipif(WITHOUT_BWRAP, reason="POSTTRAIN_WITHOUT_BWRAP=1: no bwrap here")
PATHS = [pytest.param(True, id="warm"), pytest.param(False, id="cold")]
REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 5.0
NONCE = "a3" * 16  # a run's secret: only a program that passed the tests prints it
TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 4\n"


@pytest.fixture(autouse=True)
def sandbox_survives():
    yield
    assert_nothing_left()
    assert run_python("print(6 * 7)", 5.0) == (0, "ok", "42\n", "", ACTIVE)


def run(source: str, warm: bool, timeout_s: float = TIMEOUT_S, stdin: bytes | None = None):
    return run_python(source, timeout_s, stdin=stdin, warm=warm)


# ---- 1. the host filesystem and its Unix sockets ---------------------------------------------------------

PROBE = """
import os, sys
for path in sys.argv[1:] or PATHS:
    try:
        if os.path.isdir(path):
            print("LISTED", path, os.listdir(path)[:3])
        else:
            print("READ", path, open(path, "rb").read(40))
    except OSError as e:
        print("DENIED", path, type(e).__name__)
"""


@bwrap_only
@pytest.mark.parametrize("warm", PATHS)
def test_host_secrets_and_the_repository_are_not_there(warm):
    secrets = ["/etc/shadow", "/etc/gshadow", "/etc/passwd", "/etc/hostname", "/root/.bashrc", "/root/.ssh",
               "/root/.cache", "/home", "/run", "/var", "/srv", "/mnt", "/opt", "/sys/class", str(REPO / ".git"),
               str(REPO / ".git" / "config"), str(REPO / "reward" / "code.py"), str(REPO / "pyproject.toml"),
               os.path.expanduser("~/.cache/huggingface/token"), "/proc/1/root/etc/shadow", "/dev/shm/../../etc/shadow"]
    result = run(f"PATHS = {secrets!r}\n" + PROBE, warm)
    assert result.status == "ok", result
    seen = result.stdout.splitlines()
    assert len(seen) == len(secrets) and all(line.startswith("DENIED") for line in seen), seen


@bwrap_only
@pytest.mark.parametrize("warm", PATHS)
def test_nothing_but_what_the_interpreter_needs_is_there(warm):
    """Every file of the sandbox (bar /proc, /dev and its own /tmp) is in a read-only bind of the module
    doc's list: /usr, the linker's cache and the time zone, the Python installation and virtualenv, the
    two trusted scripts. Directories on the way to them (/root, /work, ...) hold nothing else."""
    import sys

    allowed = ["/usr", *sandbox.HOST_ETC, sys.prefix, sys.base_prefix, sandbox.INNER_LIB, "/tmp", "/proc", "/dev"]
    walk = ("import os, sys\nallowed = ALLOWED\nfound = []\n"
            "for d, dirs, files in os.walk('/'):\n"
            "    dirs[:] = [x for x in dirs if os.path.join(d, x) not in allowed]\n"
            "    found += [os.path.join(d, f) for f in files if os.path.join(d, f) not in allowed]\n"
            "print(found)\n").replace("ALLOWED", repr(allowed))
    result = run(walk, warm)
    assert result.status == "ok" and result.stdout.strip() == "[]", result
    links = run("import os\nprint(sorted(p for p in os.listdir('/') if os.path.islink('/' + p)))\n", warm)
    assert set(eval(links.stdout)) <= {"bin", "sbin", "lib", "lib32", "lib64", "libx32"}  # noqa: S307


@bwrap_only
@pytest.mark.parametrize("warm", PATHS)
def test_the_virtualenv_is_there_but_not_the_rest_of_the_repository(warm):
    import sys

    result = run("import os, sys\nprint(sys.prefix, os.path.isdir(sys.prefix))\n"
                 f"print(sorted(os.listdir({str(REPO)!r})))\n", warm)
    assert result.status == "ok", result
    prefix, listing = result.stdout.splitlines()
    assert prefix == f"{sys.prefix} True"
    if sys.prefix.startswith(str(REPO) + "/"):  # this checkout's .venv: only it, of the repository
        assert eval(listing) == [os.path.relpath(sys.prefix, REPO).split("/")[0]]  # noqa: S307


@bwrap_only
@pytest.mark.parametrize("warm", PATHS)
def test_root_and_system_directories_are_read_only(warm):
    targets = ["/newfile", "/etc/newfile", "/usr/newfile", f"{sandbox.INNER_LIB}/newfile", "/proc/newfile"]
    result = run("import sys\nfor path in sys.argv[1:] or PATHS:\n    try:\n"
                 "        open(path, 'w').write('x')\n        print('WROTE', path)\n"
                 "    except OSError as e:\n        print('DENIED', path, e.strerror)\n"
                 "open('ok-in-cwd', 'w').write('x')\nopen('/tmp/ok-in-tmp', 'w').write('x')\n"
                 .replace("PATHS", repr(targets)), warm)
    assert result.status == "ok", result
    assert "WROTE" not in result.stdout and result.stdout.count("DENIED") == len(targets), result.stdout


@bwrap_only
@pytest.mark.parametrize("warm", PATHS)
def test_no_capabilities_so_no_remount_and_no_host_path(warm, host_dir):
    """(test_sandbox's remount test, for a root that no longer holds the host's directories: the write
    fails because the host path does not exist in the sandbox, not because it is read-only.)"""
    target = host_dir / "written-after-a-remount"
    result = run("import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                 "print(libc.mount(b'none', b'/', None, 32 | 4096, None))\n"  # MS_REMOUNT | MS_BIND, rw
                 "print(open('/proc/self/status').read().split('CapEff:')[1].split()[0])\n"
                 f"open({str(target)!r}, 'w').write('x')\n", warm)
    assert result.status == "exit" and "No such file or directory" in result.stderr, result
    assert result.stdout.split() == ["-1", "0000000000000000"] and not target.exists()


@pytest.fixture
def unix_server(host_dir):
    """A listening Unix socket on the host, at a path outside /tmp."""
    path = host_dir / "host.sock"
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen()
    server.setblocking(False)
    yield server, str(path)
    server.close()


CONNECT = ("import socket, sys\ns = socket.socket(socket.AF_UNIX)\ntry:\n    s.connect(ADDRESS)\n"
           "    print('CONNECTED')\nexcept OSError as e:\n    print('REFUSED', type(e).__name__)\n")


@bwrap_only
@pytest.mark.parametrize("warm", PATHS)
def test_host_unix_sockets_are_not_connectable(warm, unix_server):
    server, path = unix_server
    abstract = socket.socket(socket.AF_UNIX)  # abstract names belong to the network namespace
    abstract.bind(f"\0posttrain-escape-test-{uuid.uuid4().hex}")
    abstract.listen()
    abstract.setblocking(False)
    try:
        for address in (path, abstract.getsockname()):
            result = run(CONNECT.replace("ADDRESS", repr(address)), warm)
            assert result.status == "ok" and result.stdout.startswith("REFUSED"), (address, result)
            for listener in (server, abstract):
                with pytest.raises(BlockingIOError):
                    listener.accept()
    finally:
        abstract.close()


# ---- 2. memory: tmpfs sizes, the process cap, the fork bomb ---------------------------------------------

FILL = """
import errno, os, sys
total = 0
for i in range(1000):
    try:
        with open(os.path.join(DIR, f"fill{i}"), "wb") as f:
            for _ in range(8):
                f.write(b"x" * (1 << 20))
                total += 1 << 20
    except OSError as e:
        print(total, errno.errorcode[e.errno])
        break
else:
    print(total, "no limit")
for i in range(1000):
    try:
        os.unlink(os.path.join(DIR, f"fill{i}"))
    except OSError:
        break
"""


@bwrap_only
@pytest.mark.parametrize("warm", PATHS)
@pytest.mark.parametrize("where,cap", [("os.getcwd()", "TMP_BYTES"), ("'/tmp'", "TMP_BYTES"),
                                       ("'/dev/shm'", "DEV_BYTES"), ("'/dev'", "DEV_BYTES")])
def test_tmpfs_writes_are_capped(warm, where, cap):
    result = run(FILL.replace("DIR", where), warm, timeout_s=20.0)
    total, why = result.stdout.split()
    assert result.status == "ok" and why == "ENOSPC", result
    assert int(total) <= getattr(sandbox, cap)


def test_processes_times_memory_stays_modest():
    assert sandbox.MAX_PROCS * sandbox.MEMORY_BYTES <= 8 << 30
    if BWRAP:
        assert sandbox.TMP_BYTES + sandbox.DEV_BYTES <= 128 << 20


BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
HOLD = ("import os, time\nfor _ in range(MAX + 4):\n    if os.fork() == 0:\n        x = bytearray(50 << 20)\n"
        "        time.sleep(30)\n        os._exit(0)\ntime.sleep(30)\n")


@pytest.mark.parametrize("warm", PATHS)
def test_fork_bomb_is_bounded(warm):
    """RLIMIT_NPROC does not bind host root, even in bwrap's user namespace (checked below), so the
    sandbox's init counts processes: a fork bomb, or more than MAX_PROCS processes each holding memory,
    ends as a process-limit, long before the timeout."""
    if ACTIVE == "rlimits-only" and os.geteuid() == 0:
        pytest.skip("rlimits-only as root: nothing bounds a fork bomb (its warning says so)")
    if not warm and not BWRAP:
        pytest.skip("one path only")
    for source in (BOMB, HOLD.replace("MAX", str(sandbox.MAX_PROCS))):
        result = run(source, warm, timeout_s=10.0)
        assert result.status == "process-limit", result  # the watchdog stopped it, not the 10 s timeout


@bwrap_only
def test_rlimit_nproc_does_not_bind_root_in_bwrap():
    """Why the watchdog is needed (as root): a lower RLIMIT_NPROC than the children it then forks."""
    if os.geteuid() != 0:
        pytest.skip("only host root is exempt")
    result = run("import os, resource, time\nresource.setrlimit(resource.RLIMIT_NPROC, (2, 2))\nn = 0\n"
                 "for _ in range(4):\n    if os.fork() == 0:\n        time.sleep(0.5)\n        os._exit(0)\n"
                 "    n += 1\nprint(n)\n", warm=True)
    assert result.status == "ok" and result.stdout.strip() == "4", result


# ---- 3. fallbacks say what they lose --------------------------------------------------------------------

def test_a_failed_bwrap_probe_stops_unless_a_weaker_mode_is_named(monkeypatch, caplog):
    real = sandbox._execute

    def failing(mode, source, timeout_s, stdin, warm):
        if mode == "bwrap":
            return sandbox.SandboxResult(1, "exit", "", "bwrap: setting up uid map: Permission denied", "bwrap")
        return real(mode, source, timeout_s, stdin, warm)

    monkeypatch.setattr(sandbox, "_execute", failing)
    sandbox.probe.cache_clear()
    sandbox._warned.clear()
    try:
        with pytest.raises(sandbox.SandboxUnavailable) as refused:
            sandbox.require("bwrap")
        message = str(refused.value)
        assert "must run under bwrap isolation" in message and "bwrap: probe failed (exit)" in message
        assert "Permission denied" in message and "apt install bubblewrap" in message
        with caplog.at_level("INFO", logger="reward.sandbox"):
            mode = sandbox.require("unshare-net")  # named: runs, and says once what it loses
            sandbox.detect_isolation()
        records = [r for r in caplog.records if r.name == "reward.sandbox"]
        assert mode in ("unshare-net", "rlimits-only") and len(records) == 1, records
        message = records[0].getMessage()
        assert records[0].levelname == "WARNING" and "bwrap: probe failed" in message
        assert "Permission denied" in message and "filesystem isolation is LOST" in message.replace("Network and ", "")
    finally:
        sandbox.require("rlimits-only", check=False)
        monkeypatch.undo()
        sandbox.probe.cache_clear()
    assert sandbox.detect_isolation() == ACTIVE


def test_rlimits_only_warning_names_the_environment(monkeypatch, caplog):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.probe.cache_clear()
    sandbox._warned.clear()
    try:
        with caplog.at_level("WARNING", logger="reward.sandbox"):
            assert sandbox.detect_isolation() == "rlimits-only"  # named: every_mode_allowed
        (message,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert "bwrap: bwrap not found" in message and "unshare-net: unshare not found" in message
        assert "/proc/<pid>/environ" in message and "HF_TOKEN" in message
    finally:
        monkeypatch.undo()
        sandbox.probe.cache_clear()
    assert sandbox.detect_isolation() == ACTIVE


# ---- 3b. what rlimits-only's guard refuses (reward/_guard.py), and what it leaves programs -------------

GUARD = "sandbox (rlimits-only isolation) blocks "
ME = os.getpid()  # a process of ours: its /proc/<pid>/environ holds our environment (HF_TOKEN, ...)
OURS = f"another process's /proc entries (/proc/{ME})"
REFUSED = {  # program -> the end of its PermissionError
    "tcp socket": ("import socket\nsocket.socket()", "network access (socket.__new__, address family 2)"),
    "udp socket": ("import socket\nsocket.socket(socket.AF_INET6, socket.SOCK_DGRAM)",
                   "network access (socket.__new__, address family 10)"),
    "_socket": ("import _socket\n_socket.socket()", "network access (socket.__new__, address family -1)"),
    "dns": ("import socket\nsocket.getaddrinfo('localhost', 80)", "network access (socket.getaddrinfo)"),
    "host name": ("import socket\nsocket.gethostbyname('localhost')", "network access (socket.gethostbyname)"),
    "urllib": ("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:9/', timeout=1)",
               "network access (socket.getaddrinfo)"),
    "unix bind": ("import socket\nsocket.socket(socket.AF_UNIX).bind('\\0posttrain')", "network access (socket.bind)"),
    "unix sendto": ("import socket\na, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)\n"
                    "a.sendto(b'x', '/dev/log')", "network access (socket.sendto)"),
    "subprocess": ("import subprocess\nsubprocess.run(['true'])", "running other programs (subprocess.Popen)"),
    "os.popen": ("import os\nos.popen('true').read()", "running other programs (subprocess.Popen)"),
    "os.system": ("import os\nos.system('true')", "running other programs (os.system)"),
    "os.execv": ("import os\nos.execv('/bin/true', ['true'])", "running other programs (os.exec)"),
    "posix_spawn": ("import os\nos.posix_spawn('/bin/true', ['true'], {})", "running other programs (os.posix_spawn)"),
    "fork_exec": ("import _posixsubprocess\n_posixsubprocess.fork_exec()",
                  "running other programs (_posixsubprocess.fork_exec)"),
    "fork_exec afresh": ("import importlib.util\n"
                         "importlib.util.module_from_spec(importlib.util.find_spec('_posixsubprocess'))",
                         "running other programs (a fresh _posixsubprocess)"),
    "multiprocessing spawn": ("import multiprocessing as mp\nif __name__ == '__main__':\n"
                              "    p = mp.get_context('spawn').Process(target=print)\n    p.start()\n    p.join()",
                              "running other programs (_posixsubprocess.fork_exec)"),
    "ctypes library": ("import ctypes\nctypes.CDLL('libc.so.6')",
                       "loading native libraries (ctypes.dlopen 'libc.so.6')"),
    "ctypes symbol": ("import ctypes\nctypes.CDLL(None).socket(2, 1, 0)",
                      "native symbols but ['capget', 'capset', 'prctl'] (ctypes.dlsym 'socket')"),
    "ctypes address": ("import ctypes\nctypes.c_int.from_address(id(1))",
                       "memory access by address (ctypes.cdata: from_address)"),
    "our environ": (f"open('/proc/{ME}/environ', 'rb').read()", OURS),
    "our memory": (f"import os\nos.open(b'/proc/{ME}/mem', os.O_RDONLY)", OURS),
    "via /proc/self/..": (f"open('/proc/self/../{ME}/environ').read()", OURS),
    "via a symlink": (f"import os, pathlib\nos.symlink('/proc/{ME}/environ', 'e')\npathlib.Path('e').read_bytes()",
                      OURS),
    "via the installation": (f"import sys\nopen(sys.prefix + '/lib/' + '../' * 30 + 'proc/{ME}/environ').read()",
                             OURS),
    "via chdir": (f"import os\nos.chdir('/proc/{ME}')\nopen('environ').read()", OURS),
    "the shim's environ": ("import os\nopen(f'/proc/{os.getppid()}/environ').read()",
                           "another process's /proc entries"),
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_rlimits_only_guard_refuses_with_a_reason(name, monkeypatch):
    source, reason = REFUSED[name]
    monkeypatch.setenv("HF_TOKEN", "hf_fake_secret_for_the_sandbox_test")  # (not in /proc/<pid>/environ: belt)
    result = run_python(source + "\nprint('REACHED')\n", TIMEOUT_S, isolation="rlimits-only")
    assert result.status == "exit" and "REACHED" not in result.stdout, result
    assert "hf_fake_secret" not in result.stdout + result.stderr and "HOME=" not in result.stdout + result.stderr
    last = result.stderr.rstrip().splitlines()[-1]  # urllib wraps it: URLError: <urlopen error [Errno 1] ...>
    assert f"[Errno 1] {GUARD}{reason}" in last and "PermissionError" in result.stderr, result.stderr


def test_rlimits_only_guard_refuses_sub_interpreters():
    """A sub-interpreter would not have the hook (hooks are per interpreter); its failure names no reason
    ("interpreter creation failed"), so the guard writes it to stderr."""
    result = run_python("import _xxsubinterpreters\n_xxsubinterpreters.create()\nprint('REACHED')\n", TIMEOUT_S,
                        isolation="rlimits-only")
    assert result.status == "exit" and "REACHED" not in result.stdout, result
    assert result.stderr.startswith(f"{GUARD}sub-interpreters, which would run without this hook\n"), result


def test_rlimits_only_guard_refuses_host_unix_sockets(unix_server):
    server, path = unix_server
    result = run_python(CONNECT.replace("ADDRESS", repr(path)), TIMEOUT_S, isolation="rlimits-only")
    assert result.status == "ok" and result.stdout.strip() == "REFUSED PermissionError", result
    with pytest.raises(BlockingIOError):
        server.accept()


KEPT = """
import asyncio, ctypes, multiprocessing, os, socket, subprocess, sys
async def three():
    return 3
print(asyncio.run(three()))
a, b = socket.socketpair()
a.sendall(b"pair")
print(b.recv(4).decode())
if __name__ == "__main__":
    with multiprocessing.Pool(2) as pool:
        print(pool.map(abs, [-1, -2]))
libc = ctypes.CDLL(None, use_errno=True)  # what reward.code's harness does with it
print(libc.prctl(4, 1, 0, 0, 0), libc.capget)
print(b"POSTTRAIN_SANDBOX=" in open("/proc/self/environ", "rb").read(),
      len(open(f"/proc/{os.getpid()}/status").read()) > 0)
print([sorted(os.environ), [p for p in sys.path if "posttrain-sandbox" in p]])
"""


def test_rlimits_only_guard_leaves_programs_what_they_need():
    """AF_UNIX pairs (asyncio's loop), fork (multiprocessing's default), the harness's prctl, its own /proc,
    importing subprocess; and the guard hides itself (no PYTHONPATH, no sys.path entry)."""
    result = run_python(KEPT, 10.0, isolation="rlimits-only")
    assert result.status == "ok", result
    lines = result.stdout.splitlines()
    assert lines[:3] == ["3", "pair", "[1, 2]"] and lines[3].startswith("0 <_FuncPtr object")
    assert lines[4] == "True True"
    assert eval(lines[5]) == [sorted({*sandbox.ENV, "TMPDIR", "POSTTRAIN_SANDBOX"}), []]  # noqa: S307


def test_rlimits_only_guard_fails_closed(monkeypatch):
    """A guard that cannot install its hook stops the program before it runs."""
    broken = sandbox._guard_source().replace("import _posixsubprocess", "import _posttrain_no_such_module")
    monkeypatch.setattr(sandbox, "_guard_source", lambda: broken)
    result = run_python("print('RAN')\n", TIMEOUT_S, isolation="rlimits-only")
    assert (result.status, result.returncode) == ("exit", 125) and "RAN" not in result.stdout, result
    assert "the rlimits-only guard failed, so the program does not run" in result.stderr


def test_rlimits_only_guard_fails_the_candidate_with_the_reason():
    """Through the code verifier: the candidate's own network call fails its test, naming the guard."""
    source = "import socket\ndef add(a, b):\n    socket.create_connection(('127.0.0.1', 9))\n    return a + b\n"
    result = run_python(code.build_program(source, "add"), TIMEOUT_S, stdin=code.build_stdin(TESTS, NONCE),
                        isolation="rlimits-only")
    verdict = code.verdict(result, source, TESTS, NONCE, "add")
    assert verdict.reward == 0.0 and verdict.reason == (
        f"PermissionError: [Errno 1] {GUARD}network access (socket.getaddrinfo)"), (verdict, result)
