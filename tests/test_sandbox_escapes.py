"""The audit's escapes, each as a test: what a program can reach of the host (files, Unix sockets), how
much it can hold (tmpfs, processes), what a weaker isolation mode must say it lost, which fenced block
the code verifier runs, and whether a program can pass the code verifier without passing its tests
(forging the nonce, or the tests' comparisons). The bwrap tests run on both its paths, warm and cold."""

from __future__ import annotations

import os
import pathlib
import socket
import time
import uuid

import pytest

from reward import code, sandbox
from reward.sandbox import run_python
from reward.verdict import Verdict
from tests.test_sandbox import assert_nothing_left

ACTIVE = sandbox.detect_isolation()
BWRAP = ACTIVE == "bwrap"
bwrap_only = pytest.mark.skipif(not BWRAP, reason="bwrap is not the isolation mode here")
PATHS = [pytest.param(True, id="warm"), pytest.param(False, id="cold")]
REPO = pathlib.Path(__file__).resolve().parents[1]
TIMEOUT_S = 5.0


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
        start = time.monotonic()
        result = run(source, warm, timeout_s=10.0)
        assert result.status == "process-limit" and time.monotonic() - start < 5.0, result


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

def test_a_failed_bwrap_probe_warns_what_is_lost(monkeypatch, caplog):
    real = sandbox.run_python

    def probe(source, timeout_s=5.0, *, isolation=None, **kw):
        if isolation == "bwrap":
            return sandbox.SandboxResult(1, "exit", "", "bwrap: setting up uid map: Permission denied", "bwrap")
        return real(source, timeout_s, isolation=isolation, **kw)

    monkeypatch.setattr(sandbox, "run_python", probe)
    sandbox.detect_isolation.cache_clear()
    try:
        with caplog.at_level("INFO", logger="reward.sandbox"):
            mode = sandbox.detect_isolation()
        records = [r for r in caplog.records if r.name == "reward.sandbox"]
        assert mode in ("unshare-net", "rlimits-only") and len(records) == 1, records
        message = records[0].getMessage()
        assert records[0].levelname == "WARNING" and "bwrap: probe failed" in message
        assert "Permission denied" in message and "filesystem isolation is LOST" in message.replace("Network and ", "")
        if mode == "rlimits-only":
            assert "environ" in message and "HF_TOKEN" in message
    finally:
        monkeypatch.undo()
        sandbox.detect_isolation.cache_clear()
    assert sandbox.detect_isolation() == ACTIVE


def test_rlimits_only_warning_names_the_environment(monkeypatch, caplog):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)
    sandbox.detect_isolation.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="reward.sandbox"):
            assert sandbox.detect_isolation() == "rlimits-only"
        (message,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert "bwrap: bwrap not found" in message and "unshare-net: unshare not found" in message
        assert "/proc/<pid>/environ" in message and "HF_TOKEN" in message
    finally:
        monkeypatch.undo()
        sandbox.detect_isolation.cache_clear()
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


# ---- 4. which fenced block is the answer ----------------------------------------------------------------

SOLUTION = "def add(a, b):\n    return a + b\n"


@pytest.mark.parametrize("text,entry,expected", [
    # prose, a ```bash block, then the ```python one: the python block (the closing fence of bash is no
    # opening fence)
    (f"Install nothing:\n```bash\npip list\n```\nThen:\n```python\n{SOLUTION}```\nDone.", "add", SOLUTION),
    (f"Install nothing:\n```bash\npip list\n```\nThen:\n```python\n{SOLUTION}```\nDone.", None, SOLUTION),
    # a leading untagged usage example, then the solution (tagged or not)
    (f"Usage:\n```\n>>> add(1, 2)\n3\n```\nCode:\n```python\n{SOLUTION}```", "add", SOLUTION),
    (f"Usage:\n```\n>>> add(1, 2)\n3\n```\nCode:\n```\n{SOLUTION}```", None, SOLUTION),
    (f"Usage:\n```\n>>> add(1, 2)\n3\n```\nCode:\n```python\n{SOLUTION}```", None, SOLUTION),
    # a python-tagged example before an untagged solution: the entry point decides
    (f"```python\nprint(add(1, 2))\n```\n```\n{SOLUTION}```", "add", SOLUTION),
    # solution then its tests: the one that defines something (entry point unknown)
    (f"```python\n{SOLUTION}```\n```python\nassert add(1, 2) == 3\n```", None, SOLUTION),
    # two solutions: the first
    (f"```python\n{SOLUTION}```\nor\n```python\ndef add(a, b):\n    return b + a\n```", "add", SOLUTION),
    # no fence: all of it; an unclosed fence: to the end; a fence closed on the code's last line
    (SOLUTION, "add", SOLUTION),
    (f"Here:\n```python\n{SOLUTION}", "add", SOLUTION + "\n"),
    ("```python\ndef add(a, b):\n    return a + b```", "add", SOLUTION),
    # an indented fence (in a list item), a tilde fence, a fence with an info string after the language
    ("1. Code:\n   ```python\n   def add(a, b):\n       return a + b\n   ```\n", "add", SOLUTION),
    (f"~~~python\n{SOLUTION}~~~\n", "add", SOLUTION),
    (f"```python title=add.py\n{SOLUTION}```", "add", SOLUTION),
    (f"```Python3\n{SOLUTION}```", "add", SOLUTION),
    (f"Sure! Here it is: ```python\n{SOLUTION}```", "add", SOLUTION),
    # code is kept as written (trailing spaces in a string literal)
    ('```python\ns = """a  \nb"""\n```', None, 's = """a  \nb"""\n'),
])
def test_fences_pair_and_the_best_block_is_chosen(text, entry, expected):
    assert code.extract_code(text, entry) == expected


def test_only_other_languages_is_no_python():
    text = "```bash\necho hi\n```"
    assert code.extract_code(text, "add") == text
    assert code.score([text], tests=["assert add(1, 2) == 3"], entry_point=["add"]) == [Verdict(0.0, "syntax error")]


def test_fence_pairing_end_to_end():
    completions = [f"Install nothing:\n```bash\npip list\n```\nThen:\n```python\n{SOLUTION}```\n",
                   f"Usage:\n```\n>>> add(1, 2)\n3\n```\nCode:\n```python\n{SOLUTION}```"]
    verdicts = code.score(completions, tests=["assert add(1, 2) == 3"] * 2, entry_point=["add"] * 2)
    assert verdicts == [Verdict(1.0, "passed")] * 2


# ---- 5. passing without passing: the nonce, and the tests' comparisons ----------------------------------

NONCE = "a3" * 16
TESTS = "assert add(1, 2) == 3\nassert add(2, 2) == 4\n"
HEX = "import re\nTOKENS = set()\ndef look(data):\n    if isinstance(data, bytes):\n" \
      "        data = data.decode('latin-1')\n    TOKENS.update(re.findall(r'[0-9a-f]{32}', str(data)))\n"
REPORT = "\nimport os, sys\nfor t in TOKENS:\n    print(t)\nsys.stdout.flush()\nos._exit(0)\n"

FORGERIES = {
    # the auditor's: the nonce from its own file
    "own file": HEX + "look(open(__file__).read())\n" + REPORT,
    "stdin": HEX + "import os, sys\nlook(sys.stdin.read())\nlook(os.read(0, 1 << 20))\n" + REPORT,
    "/proc fds": HEX + "import os\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n"
                       "    for sub in ('fd', 'fdinfo'):\n        try:\n"
                       "            names = os.listdir(f'/proc/{pid}/{sub}')\n        except OSError:\n"
                       "            continue\n        for fd in names:\n            try:\n"
                       "                f = os.open(f'/proc/{pid}/{sub}/{fd}', os.O_RDONLY | os.O_NONBLOCK)\n"
                       "            except OSError:\n                continue\n            try:\n"
                       "                look(os.read(f, 1 << 22))\n            except OSError:\n"
                       "                pass\n            os.close(f)\n"
                       + REPORT,
    "/proc mem, environ, cmdline": HEX + "import os, re\n"
                       "for pid in filter(str.isdigit, os.listdir('/proc')):\n"
                       "    for name in ('environ', 'cmdline'):\n        try:\n"
                       "            look(open(f'/proc/{pid}/{name}', 'rb').read())\n        except OSError:\n"
                       "            pass\n    try:\n        maps = open(f'/proc/{pid}/maps').read().splitlines()\n"
                       "        mem = open(f'/proc/{pid}/mem', 'rb')\n    except OSError:\n        continue\n"
                       "    for line in maps:\n        lo, hi = (int(x, 16) for x in line.split()[0].split('-'))\n"
                       "        if 'rw' in line.split()[1] and hi - lo < 1 << 26:\n            try:\n"
                       "                mem.seek(lo)\n                look(mem.read(hi - lo))\n"
                       "            except (OSError, ValueError, OverflowError):\n                pass\n" + REPORT,
    "gc objects": HEX + "import gc\nfor obj in gc.get_objects():\n    try:\n"
                        "        if isinstance(obj, dict):\n            for v in list(obj.values()):\n"
                        "                if isinstance(v, (str, bytes)):\n                    look(v)\n"
                        "        elif isinstance(obj, (list, tuple)):\n            for v in obj:\n"
                        "                if isinstance(v, (str, bytes)):\n                    look(v)\n"
                        "    except Exception:\n        pass\n" + REPORT,
    "frames": HEX + "import sys\nf = sys._getframe()\nwhile f is not None:\n"
                    "    for v in list(f.f_locals.values()) + list(f.f_globals.values()):\n"
                    "        if isinstance(v, (str, bytes)):\n            look(v)\n    f = f.f_back\n"
                    "for m in list(sys.modules.values()):\n    for v in list(getattr(m, '__dict__', {}).values()):\n"
                    "        if isinstance(v, (str, bytes)):\n            look(v)\n" + REPORT,
    "files": HEX + "import os\nfor top in ('/tmp', '/dev/shm', '/posttrain-sandbox', os.getcwd()):\n"
                   "    for d, _, names in os.walk(top):\n        for n in names:\n            try:\n"
                   "                look(open(os.path.join(d, n), 'rb').read(1 << 22))\n"
                   "            except OSError:\n                pass\n" + REPORT,
    "ptrace and process_vm_readv": HEX + "import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                   "print('attach', libc.ptrace(16, os.getppid(), None, None), ctypes.get_errno())\n"
                   "buf = ctypes.create_string_buffer(16)\n"
                   "print('pidfd', libc.syscall(438, libc.syscall(434, os.getppid(), 0), 0, 0))\n" + REPORT,
    "exit 0 before the tests": "import os\nos._exit(0)\n",
    "kill the parent then exit 0": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nos._exit(0)\n",
    # the tests' comparisons: objects that equal anything
    "always-equal object": "class E:\n    def __eq__(self, other):\n        return True\n"
                           "    __hash__ = object.__hash__\n    def __bool__(self):\n        return True\n"
                           "def add(a, b):\n    return E()\n",
    "always-equal int": "class I(int):\n    def __eq__(self, other):\n        return True\n"
                        "    __hash__ = int.__hash__\ndef add(a, b):\n    return I(0)\n",
    "always-equal str": "class S(str):\n    def __eq__(self, other):\n        return True\n"
                        "    __hash__ = str.__hash__\ndef add(a, b):\n    return S('')\n",
    "shadowed builtin": "def add(a, b):\n    return 0\ndef abs(x):\n    return 0\n",
    # a reply of its own on the harness's pipe: a pickle that would run code in the parent
    "malicious pickle": "import gc, os, pickle\n"
                        "codec = next(o for o in gc.get_objects() if type(o).__name__ == 'Codec')\n"
                        "class P:\n    def __reduce__(self):\n        return (print, ('PWNED',))\n"
                        "data = pickle.dumps(('globals', {'add': P()}, ['add'], {}))\n"
                        "os.write(codec.wfd, len(data).to_bytes(4, 'little') + data)\n"
                        "def add(a, b):\n    return 0\n",
}


@bwrap_only
@pytest.mark.parametrize("warm", PATHS)
@pytest.mark.parametrize("name", list(FORGERIES))
def test_a_program_cannot_pass_without_passing_the_tests(warm, name):
    tests = TESTS + ("assert abs(add(5, -9)) == 4\n" if name == "shadowed builtin" else "")
    program = code.build_program(FORGERIES[name], "add")
    result = run(program, warm, stdin=code.build_stdin(tests, NONCE))
    assert NONCE not in result.stdout + result.stderr and "PWNED" not in result.stdout, result
    assert code.verdict(result, FORGERIES[name], tests, NONCE, "add").reward == 0.0, result
    if name == "malicious pickle":  # the parent refused it
        assert "UnpicklingError: not plain data: builtins.print" in result.stderr, result


@bwrap_only
@pytest.mark.parametrize("warm", PATHS)
def test_the_stdin_the_sandbox_init_still_holds_is_empty(warm):
    """Cold path: the shim (pid 1) keeps the stdin memfd open and is dumpable; the harness emptied it."""
    probe = "import os, stat\nfor fd in os.listdir('/proc/1/fd'):\n    try:\n" \
            "        if stat.S_ISREG(os.stat(f'/proc/1/fd/{fd}').st_mode):\n" \
            "            print(fd, len(open(f'/proc/1/fd/{fd}', 'rb').read()))\n    except OSError as e:\n" \
            "        print(fd, type(e).__name__)\ndef add(a, b):\n    return a + b\n"
    result = run(code.build_program(probe, "add"), warm, stdin=code.build_stdin(TESTS, NONCE))
    assert result.stdout.rstrip().endswith(NONCE), result  # it passed: the tests ran
    fds = dict(line.split(" ", 1) for line in result.stdout.split("\n\n")[0].splitlines() if " " in line)
    assert all(v in ("0", "PermissionError") for v in fds.values()), fds


@pytest.mark.parametrize("completion,tests,reward", [
    ("def add(a, b):\n    return a + b\n", TESTS, 1.0),
    ("def add(a, b):\n    return a - b\n", TESTS, 0.0),
    # objects of the solution: attributes and methods reach the tests as data
    ("class P:\n    def __init__(self, x):\n        self.x = x\n    def double(self):\n        return 2 * self.x\n"
     "def make(x):\n    return P(x)\n", "p = make(3)\nassert p.x == 3 and p.double() == 6\n", 1.0),
    # functions of the tests, called back from the solution
    ("def apply(f, xs):\n    return [f(x) for x in xs]\n", "assert apply(lambda v: v * 2, [1, 2]) == [2, 4]\n", 1.0),
    # in-place changes to arguments
    ("def sort_in_place(xs):\n    xs.sort()\n", "xs = [3, 1, 2]\nsort_in_place(xs)\nassert xs == [1, 2, 3]\n", 1.0),
    # exceptions the tests expect
    ("def check(x):\n    if x < 0:\n        raise ValueError('negative')\n    return x\n",
     "try:\n    check(-1)\nexcept ValueError as e:\n    assert str(e) == 'negative'\n"
     "else:\n    raise AssertionError\n", 1.0),
    # plain values of the solution's own types: namedtuple, numpy scalar and array, Counter
    ("import collections\nP = collections.namedtuple('P', 'x y')\ndef f():\n    return P(1, 2)\n",
     "assert f() == (1, 2)\n", 1.0),
    ("import numpy as np\ndef f():\n    return np.int64(3), np.array([1, 2])\n",
     "assert f() == (3, [1, 2])\n", 1.0),
    ("import collections\ndef f(s):\n    return collections.Counter(s)\n",
     "assert f('aab') == {'a': 2, 'b': 1}\n", 1.0),
    # a generator reaches the tests as its items (consumed in the child); an iterator class of the
    # solution's own stays opaque: the tests cannot iterate it
    ("def f():\n    yield 1\n", "assert list(f()) == [1]\n", 1.0),
    ("class It:\n    def __iter__(self):\n        return self\n    def __next__(self):\n        raise StopIteration\n"
     "def f():\n    return It()\n", "assert list(f()) == []\n", 0.0),
    # the candidate's helper, and its constant
    ("K = 3\ndef helper(x):\n    return x * K\ndef f(x):\n    return helper(x)\n",
     "assert f(2) == helper(2) == 2 * K\n", 1.0),
])
def test_what_the_tests_can_do_with_the_solution(completion, tests, reward):
    assert code.score([completion], tests=[tests], entry_point=[None])[0].reward == reward


def test_reasons_still_name_the_failure():
    cases = {
        "def add(a, b):\n    return a - b\n": "AssertionError: assert add(1, 2) == 3",
        "def add(a, b):\n    return a / 0\n": "ZeroDivisionError: division by zero",
        "def add(a, b):\n    assert a > 5\n    return a + b\n": "AssertionError: assert a > 5",
        "raise ValueError('at import')\n": "ValueError: at import",
        "def add(a, b):\n    return undefined\n": "NameError: name 'undefined' is not defined",
        "def add(a, b):\n    import os\n    os._exit(4)\n": "exit code 4",
        "def add(a, b):\n    import sys\n    sys.exit(0)\n": "exited before the tests finished",
        "def sub(a, b):\n    return a - b\n": "entry point add not defined",
    }
    verdicts = code.score(list(cases), tests=[TESTS] * len(cases), entry_point=["add"] * len(cases))
    assert [v.reason for v in verdicts] == list(cases.values())
    assert all(v.reward == 0.0 for v in verdicts)


MODES = ["rlimits-only"] + (["unshare-net"] if ACTIVE in ("bwrap", "unshare-net") else [])


@pytest.mark.parametrize("mode", MODES)
def test_the_harness_judges_alike_in_the_fallback_modes(mode):
    """The verifier's verdicts do not depend on the mode (only what an attacker can reach does)."""
    cases = {"def add(a, b):\n    return a + b\n": 1.0, "def add(a, b):\n    return a - b\n": 0.0,
             "import os\nos._exit(0)\n": 0.0, FORGERIES["always-equal object"]: 0.0}
    for source, reward in cases.items():
        result = run_python(code.build_program(source, "add"), TIMEOUT_S, stdin=code.build_stdin(TESTS, NONCE),
                            isolation=mode)
        assert code.verdict(result, source, TESTS, NONCE, "add").reward == reward, (mode, source, result)
