"""More hostile programs, each run in every mode a user may choose (bwrap warm and cold, unshare-net,
rlimits-only): what each mode must contain. Filesystem escapes are contained by bwrap alone (the weaker modes
share the host filesystem by definition: sandbox.LOST, which their warning prints); process, signal, ptrace,
namespace and file-descriptor escapes are contained in every mode, except where a row below says why not.

Each program prints ESCAPED <what> when it got somewhere it must not; the tests also check the host side
(files, our processes) rather than trusting the program's word."""

from __future__ import annotations

import os
import socket
import threading

import pytest

from reward import sandbox
from reward.sandbox import run_python
from tests.test_sandbox import FALLBACK, assert_nothing_left, every_mode_allowed  # noqa: F401 (autouse)

MODES = FALLBACK  # bwrap, bwrap-cold, unshare-net, rlimits-only: those that run here
NAMESPACED = ("bwrap", "bwrap-cold", "unshare-net")
ROOT = os.geteuid() == 0


def run(source: str, mode: str, timeout_s: float = 5.0):
    warm = not mode.endswith("-cold")
    return run_python(source, timeout_s, isolation=mode.removesuffix("-cold"), warm=warm)


@pytest.fixture(autouse=True)
def nothing_left():
    yield
    assert_nothing_left()


# ---- filesystem (bwrap only: the weaker modes share the host filesystem, and say so) ----------------------

FS = {
    "write through /proc/self/root": "open('/proc/self/root' + HOST + '/a', 'w').write('x')",
    "write through /proc/1/root": "open('/proc/1/root' + HOST + '/b', 'w').write('x')",
    "symlink in cwd to a host dir": "os.symlink(HOST, 'link')\nopen('link/c', 'w').write('x')",
    "hard link to a host file": "os.link(HOST + '/keep', 'hard')\nopen('hard', 'a').write('x')",
    "read /etc/shadow via symlink": "os.symlink('/etc/shadow', 's')\nprint(open('s').read()[:5])",
}


@pytest.mark.parametrize("mode", [m for m in MODES if m.startswith("bwrap")])
@pytest.mark.parametrize("name", FS)
def test_filesystem_tricks_reach_nothing_of_the_host(name, mode, host_dir):
    (host_dir / "keep").write_text("host")
    source = f"import os\nHOST = {str(host_dir)!r}\ntry:\n" + "".join(
        f"    {line}\n" for line in FS[name].splitlines()) + f"    print('ESCAPED', {name!r})\nexcept OSError as e:\n" \
        "    print('DENIED', type(e).__name__)\n"
    result = run(source, mode)
    assert result.status == "ok" and "ESCAPED" not in result.stdout, result
    assert sorted(p.name for p in host_dir.iterdir()) == ["keep"] and (host_dir / "keep").read_text() == "host"


def test_a_symlink_left_in_the_work_directory_is_not_followed_by_cleanup(host_dir):
    """The weaker modes keep the program's directory on the host and remove it afterwards: a symlink the
    program left there to a host directory must be removed, not followed (rmtree does not follow links)."""
    (host_dir / "keep").write_text("host")
    for mode in MODES:
        target = str(host_dir)
        result = run(f"import os\nos.symlink({target!r}, 'link')\nos.symlink({target!r} + '/keep', 'f')\n", mode)
        assert result.status == "ok", (mode, result)
        assert (host_dir / "keep").read_text() == "host", mode


# ---- processes, signals, namespaces, limits, descriptors: every mode ---------------------------------------

PTRACE = """
import ctypes, os
try:
    libc = ctypes.CDLL(None, use_errno=True)
except OSError as e:  # rlimits-only's guard refuses ctypes
    print('DENIED', e); raise SystemExit
for pid in {1, os.getppid(), TARGET}:
    if libc.ptrace(16, pid, 0, 0) == 0:  # PTRACE_ATTACH
        print('ESCAPED ptrace', pid)
    else:
        print('DENIED', pid, ctypes.get_errno())
"""

UNSHARE_CHROOT = """
import ctypes, os
try:
    os.chroot('/')
    print('ESCAPED chroot')
except OSError as e:
    print('DENIED chroot', e.errno)
try:
    libc = ctypes.CDLL(None, use_errno=True)
except OSError as e:
    print('DENIED', e); raise SystemExit
for flag in (0x10000000, 0x00020000):  # CLONE_NEWUSER (then root of it), CLONE_NEWNS
    print('ESCAPED unshare' if libc.unshare(flag) == 0 else 'DENIED unshare', hex(flag))
if libc.mount(b'none', b'/tmp', b'tmpfs', 0, None) == 0:
    print('ESCAPED mount')
"""

SETRLIMIT = """
import resource
for name in ('RLIMIT_AS', 'RLIMIT_NPROC', 'RLIMIT_CPU', 'RLIMIT_NOFILE'):
    which = getattr(resource, name)
    soft, hard = resource.getrlimit(which)
    try:
        resource.setrlimit(which, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        print('ESCAPED', name)
    except (ValueError, OSError) as e:
        print('DENIED', name)
"""

FDS = """
import os
fds = sorted(int(fd) for fd in os.listdir('/proc/self/fd'))
for fd in fds:
    try:
        target = os.readlink(f'/proc/self/fd/{fd}')
    except OSError:
        continue
    if fd > 2 and not target.startswith('/proc/'):
        print('INHERITED', fd, target)
"""

ENVIRON = """
import os
for path in ['/proc/1/environ', f'/proc/{os.getppid()}/environ', f'/proc/{TARGET}/environ']:
    try:
        print(open(path, 'rb').read().decode(errors='replace'))
    except OSError as e:
        print('DENIED', path, type(e).__name__)
"""

DEV_TCP = """
for path in ['/dev/tcp/127.0.0.1/PORT', '/dev/udp/127.0.0.1/PORT']:
    try:
        open(path, 'w').write('x')
        print('ESCAPED', path)
    except OSError as e:
        print('DENIED', path, type(e).__name__)
import socket
try:
    socket.create_connection(('127.0.0.1', PORT), timeout=1).sendall(b'ESCAPED')
    print('ESCAPED tcp')
except OSError as e:
    print('DENIED tcp', type(e).__name__)
"""

HUGE = """
import os, sys
try:
    os.execv(sys.executable, [sys.executable, '-c', 'print(1)', 'x' * (8 << 20)])
except OSError as e:
    print('DENIED exec', e.errno)
try:
    os.environ['HUGE'] = 'y' * (2 << 30)
except MemoryError:
    print('DENIED memory')
"""

SIGNALS = """
import os, signal
for target in (0, -os.getpgid(0), os.getppid(), 1):
    try:
        (os.killpg if target <= 0 and target != 0 else os.kill)(abs(target) if target < 0 else target, signal.SIGKILL)
    except OSError as e:
        print('DENIED', target, e.errno)
"""


def _listener():
    """A host TCP listener on loopback; returns (port, accepted connections)."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(5)
    got: list[bytes] = []

    def serve():
        try:
            conn, _ = server.accept()
            got.append(conn.recv(16))
        except OSError:
            pass
        finally:
            server.close()

    threading.Thread(target=serve, daemon=True).start()
    return server.getsockname()[1], got


@pytest.mark.parametrize("mode", MODES)
def test_ptrace_of_any_process_is_refused(mode):
    result = run(PTRACE.replace("TARGET", str(os.getpid())), mode)
    assert result.status in ("ok", "exit") and "ESCAPED" not in result.stdout, result


def _mounts() -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return sorted(line.split(" - ")[0].split(" ", 4)[4] for line in f)


@pytest.mark.parametrize("mode", MODES)
def test_chroot_unshare_and_mount_change_nothing_of_ours(mode):
    """bwrap: all refused (no capabilities, no nested user namespace: --disable-userns). unshare-net: the
    program is nobody in its user namespace (chroot refused), but may create a nested user namespace and
    mount there, privately: the host's mount table must not change. rlimits-only: the guard refuses ctypes;
    chroot('/') as host root changes nothing (that mode has no namespaces: sandbox.LOST)."""
    before = _mounts()
    result = run(UNSHARE_CHROOT, mode)
    assert _mounts() == before and os.path.isdir("/tmp") and os.listdir("/")
    if mode.startswith("bwrap") or mode == "rlimits-only" and not ROOT:
        assert "ESCAPED" not in result.stdout, (mode, result)
    elif mode == "unshare-net":
        assert "ESCAPED chroot" not in result.stdout, (mode, result)
    else:
        assert "ESCAPED unshare" not in result.stdout and "ESCAPED mount" not in result.stdout, (mode, result)


@pytest.mark.parametrize("mode", MODES)
def test_limits_cannot_be_raised(mode):
    result = run(SETRLIMIT, mode)
    assert result.status == "ok", result
    if mode == "rlimits-only" and ROOT:  # host root holds CAP_SYS_RESOURCE: sandbox.LOST's fork-bomb caveat
        pytest.xfail("rlimits-only as root: setrlimit may raise hard limits (the mode's warning says so)")
    assert "ESCAPED" not in result.stdout, (mode, result.stdout)


@pytest.mark.parametrize("mode", MODES)
def test_no_descriptor_of_ours_is_inherited(mode):
    result = run(FDS, mode)
    assert result.status == "ok" and "INHERITED" not in result.stdout, (mode, result)


@pytest.mark.parametrize("mode", MODES)
def test_our_environment_is_out_of_reach(mode):
    secret = os.environ.get("PATH", "")
    result = run(ENVIRON.replace("TARGET", str(os.getpid())), mode)
    assert result.status == "ok", result
    assert secret and secret not in result.stdout, (mode, result.stdout[:500])


@pytest.mark.parametrize("mode", MODES)
def test_dev_tcp_paths_and_host_loopback_are_unreachable(mode):
    port, got = _listener()
    result = run(DEV_TCP.replace("PORT", str(port)), mode)
    assert "ESCAPED" not in result.stdout and got == [], (mode, result)


@pytest.mark.parametrize("mode", MODES)
def test_huge_argv_and_environment_end_as_failures(mode):
    result = run(HUGE, mode, timeout_s=10.0)
    assert result.status in ("ok", "exit", "signal") and result.status != "error", result
    assert len(result.stdout) <= sandbox.MAX_OUTPUT and "1\n" not in result.stdout.splitlines()[:1]


@pytest.mark.parametrize("mode", MODES)
def test_signals_to_the_group_and_parents_hurt_only_the_program(mode):
    # kill(1) in rlimits-only as root would reach the host's init: namespaced modes only for that target
    source = SIGNALS if mode in NAMESPACED else SIGNALS.replace(", 1)", ")")
    pid_before = os.getpid()
    result = run(source, mode)
    assert result.status in ("signal", "exit", "ok"), result
    assert os.getpid() == pid_before and run("print(7)", mode).stdout == "7\n"  # we, and the sandbox, live on

