"""The audit's escapes, each as a test: what a program can reach of the host (files, Unix sockets), how
much it can hold (tmpfs, processes). What a weaker isolation mode must say it lost, and what rlimits-only's
guard refuses, are in tests/test_sandbox_escapes_fallback.py. The bwrap tests run on both its paths, warm and
cold. The code verifier's own escapes are in tests/test_code_escapes.py."""

from __future__ import annotations

import os
import pathlib
import socket
import uuid

import pytest

from reward import sandbox
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

