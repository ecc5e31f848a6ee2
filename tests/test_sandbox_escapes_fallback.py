"""The audit's escapes that concern the weaker isolation modes: a fallback from bwrap must be named and must
say what it loses, and rlimits-only's guard (reward/_guard.py) refuses network access, other programs, native
code and our processes' /proc entries, each with a reason, while leaving programs what they need (AF_UNIX pairs,
fork, the harness's prctl) and failing closed. Split from tests/test_sandbox_escapes.py, whose fixtures apply
here too (every mode allowed; after each test nothing is left and a fresh run still works)."""

from __future__ import annotations

import os

import pytest

from reward import code, sandbox
from reward.sandbox import run_python
from tests.test_sandbox import every_mode_allowed  # noqa: F401 (autouse)
from tests.test_sandbox_escapes import ACTIVE, CONNECT, NONCE, TESTS, TIMEOUT_S
from tests.test_sandbox_escapes import sandbox_survives, unix_server  # noqa: F401 (autouse; a fixture)

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


def test_rlimits_only_guard_refuses_host_unix_sockets(unix_server):  # noqa: F811 (the imported fixture)
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
