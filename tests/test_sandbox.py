"""Hostile programs against the sandbox. Each must end as a failure with a reason, leave no process
behind, and leave the sandbox working for the next run. Tests assert what the expected isolation mode
guarantees (the strongest one whose tool runs here, probed by the tests themselves, not taken from the
sandbox); a few also run under forced rlimits-only, the fallback, and, where bwrap is the mode, on both
its warm path (the default) and its cold path ("bwrap-cold"). The warm path reuses a sandbox: what one
program may leave for the next there is checked in tests/test_sandbox_warm.py."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from reward import code, sandbox
from reward.sandbox import PREFIX, run_many, run_python

PROBES = {"bwrap": ["--unshare-all", "--ro-bind", "/", "/"], "unshare-net": ["--user", "--map-root-user", "--net"]}


def works(mode: str) -> bool:
    """Whether the mode's tool is installed and runs `true` in its namespaces (the machine allows them)."""
    tool = shutil.which(sandbox.WRAPPERS[mode])
    return bool(tool) and subprocess.run([tool, *PROBES[mode], "true"], capture_output=True, timeout=30).returncode == 0


# The mode this machine must give, probed here independently of detect_isolation: the expectations below
# follow it, not whatever the sandbox settled on, so a sandbox that falls back where bwrap works fails.
BWRAP_WORKS, UNSHARE_WORKS = works("bwrap"), works("unshare-net")
EXPECTED = "bwrap" if BWRAP_WORKS else "unshare-net" if UNSHARE_WORKS else "rlimits-only"
# bwrap is required (scripts/setup.sh installs it): where it is missing or its probe fails, the next line
# raises SandboxUnavailable with the probe's reason and every sandbox test module fails to collect, instead of
# skipping its bwrap tests. POSTTRAIN_WITHOUT_BWRAP=1 accepts a machine without bwrap (its tests skip).
WITHOUT_BWRAP = os.environ.get("POSTTRAIN_WITHOUT_BWRAP") == "1" and not shutil.which("bwrap")
if WITHOUT_BWRAP:
    sandbox.require("rlimits-only", check=False)
ACTIVE = sandbox.detect_isolation()
NAMESPACED = EXPECTED in ("bwrap", "unshare-net")
TIMEOUT_S = 1.5
# A timed-out run must be over by then: killed, not waited for (the programs below never end, or sleep 60 s).
# The bound is the behaviour, so it stays, but generous: a busy machine may be slow, and speed lives in bench/.
BUDGET_S = 30.0
# Every mode a user may choose that runs here (bwrap on both its paths).
FALLBACK = (["bwrap", "bwrap-cold"] if BWRAP_WORKS else []) + (["unshare-net"] if UNSHARE_WORKS else []) + [
    "rlimits-only"]
warm_only = pytest.mark.skipif(WITHOUT_BWRAP, reason="POSTTRAIN_WITHOUT_BWRAP=1: no bwrap here")


@pytest.fixture(autouse=True, scope="module")
def every_mode_allowed():
    """The tests force each mode by name (run_python(isolation=...)); a process refuses modes weaker than its
    minimum (default bwrap), so this module lowers it, and restores it after."""
    before = sandbox.required()
    sandbox.require("rlimits-only", check=False)
    yield
    sandbox.require(before, check=False)


def stragglers(marker: str = PREFIX) -> list[str]:
    """Command lines of live (non-zombie) processes that mention the marker, or that run in an idle
    warm sandbox other than its bwrap and init (a program's process forked from the init has its
    command line, and one that exec-ed something else has not). Sandboxes that another process
    started (another test run on this machine, or the other pytest-xdist worker of this one: a process
    under a sibling of this worker) are not ours to judge."""
    procs = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state, ppid = f.read().rsplit(")", 1)[1].split()[:2]
        except OSError:
            continue
        procs[int(pid)] = (cmdline, state, int(ppid))
    siblings = ({pid for pid, (_, _, ppid) in procs.items() if ppid == os.getppid()} - {os.getpid()}
                if os.environ.get("PYTEST_XDIST_WORKER") else set())

    def foreign(pid: int) -> bool:
        seen = set()
        while pid in procs and pid not in seen:
            seen.add(pid)
            cmdline, _, ppid = procs[pid]
            if (os.path.basename(cmdline.split(" ")[0]) == "bwrap" and ppid != os.getpid()) or pid in siblings:
                return True
            pid = ppid
        return False

    bwraps = sandbox.warm_pids()
    inits = {pid for pid, (_, _, ppid) in procs.items() if ppid in bwraps}
    return [f"{pid} {cmdline}" for pid, (cmdline, state, ppid) in procs.items()
            if state != "Z" and pid != os.getpid() and pid not in bwraps | inits
            and (marker in cmdline or ppid in inits) and not foreign(pid)]


def assert_nothing_left(marker: str = PREFIX, within_s: float = 30.0) -> None:
    """Waits until no straggler is left (at once when none is; generous for a busy machine), else fails."""
    deadline = time.monotonic() + within_s
    while (left := stragglers(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes left behind: {left}"


@pytest.fixture(autouse=True)
def sandbox_survives():
    """After every test: nothing of any sandbox still runs, and a fresh run still works."""
    yield
    assert_nothing_left()
    assert run_python("print(6 * 7)", 5.0) == (0, "ok", "42\n", "", EXPECTED)


def timed(source: str, mode: str | None = None, timeout_s: float = TIMEOUT_S):
    """Run under `mode` ("bwrap-cold": bwrap's cold path); (result, seconds)."""
    warm = None if mode is None else not mode.endswith("-cold")
    start = time.monotonic()
    result = run_python(source, timeout_s, isolation=mode and mode.removesuffix("-cold"), warm=warm)
    return result, time.monotonic() - start


def test_isolation_is_probed_and_reported():
    assert ACTIVE in sandbox.MODES
    assert run_python("pass").isolation == ACTIVE
    # the strongest mode whose tool works here is the one in use (bwrap, else unshare, else neither)
    assert ACTIVE == EXPECTED, (f"{EXPECTED} works here but the sandbox uses {ACTIVE}; its own probe of "
                                f"{EXPECTED}: {run_python('print(1)', 10.0, isolation=EXPECTED, warm=False)}")
    if BWRAP_WORKS:
        assert sandbox.WARM  # the warm path is bwrap's default (the module doc); test_sandbox_warm.py relies on it


def _as_if_no_tools(monkeypatch):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)  # as if neither bwrap nor unshare
    sandbox.probe.cache_clear()
    sandbox._warned.clear()


def test_rlimits_only_runs_only_when_named_and_warns_once(monkeypatch, caplog):
    _as_if_no_tools(monkeypatch)
    try:
        with caplog.at_level("WARNING", logger="reward.sandbox"):
            assert sandbox.detect_isolation() == sandbox.detect_isolation() == "rlimits-only"  # named (fixture)
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "Network and filesystem isolation are LOST" in warnings[0]
        assert "audit hook" in warnings[0] and "does NOT stop native code" in warnings[0]
        for minimum in ("bwrap", "unshare-net"):  # not named: refused, with each probe's reason and the fix
            with pytest.raises(sandbox.SandboxUnavailable) as refused:
                sandbox.require(minimum)
            assert "bwrap: bwrap not found on PATH" in str(refused.value)
            assert f"must run under {minimum} isolation" in str(refused.value)
            assert "score.sandbox.isolation=rlimits-only" in str(refused.value)
            with pytest.raises(sandbox.SandboxUnavailable):
                run_python("print(1)")
    finally:
        sandbox.require("rlimits-only", check=False)
        monkeypatch.undo()
        sandbox.probe.cache_clear()
    assert sandbox.detect_isolation() == ACTIVE


@pytest.mark.parametrize("mode", FALLBACK)
def test_infinite_loop_times_out(mode):
    result, took = timed("while True:\n    pass\n", mode)
    assert result.status == "timeout" and took < BUDGET_S


@pytest.mark.parametrize("mode", FALLBACK)
def test_sleep_past_timeout(mode):
    result, took = timed("import time\ntime.sleep(60)\n", mode)
    assert result.status == "timeout" and took < BUDGET_S


def test_fork_bomb_is_contained():
    if not NAMESPACED and os.geteuid() == 0:
        pytest.skip("rlimits-only as root: RLIMIT_NPROC does not bind root, a fork bomb would hit the host")
    bomb = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass\n"
    result, took = timed(bomb)
    assert result.status in ("process-limit", "timeout") and took < BUDGET_S
    if NAMESPACED:  # the shim's watchdog stops it (typically within 0.1 s), not the timeout
        assert result.status == "process-limit"


@pytest.mark.parametrize("mode", FALLBACK)
def test_memory_bomb(mode):
    # one allocation past RLIMIT_AS (instant), not a slow fill: the machine may be busy
    result, _ = timed("blocks = [bytearray(10_000_000) for _ in range(20)]\nbig = bytearray(4 << 30)\n", mode)
    assert result.status == "exit" and "MemoryError" in result.stderr


@pytest.mark.parametrize("mode", FALLBACK)
def test_stdout_flood_is_capped(mode):
    result, took = timed("import sys\nwhile True:\n    sys.stdout.write('x' * 65536)\n", mode)
    assert result.status == "timeout" and took < BUDGET_S
    assert 0 < len(result.stdout) <= sandbox.MAX_OUTPUT + 100 and "bytes dropped" in result.stdout


def test_big_output_keeps_head_and_tail():
    result, _ = timed("import sys\nprint('HEAD')\nsys.stdout.write('y' * 20_000_000)\nprint('TAIL')\n"
                      "sys.exit(2)\n")
    assert (result.status, result.returncode) == ("exit", 2)
    assert result.stdout.startswith("HEAD") and result.stdout.rstrip().endswith("TAIL")
    assert len(result.stdout) <= sandbox.MAX_OUTPUT + 100


@pytest.mark.parametrize("mode", FALLBACK)
def test_parent_environment_is_not_inherited(mode, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_fake_secret_for_the_sandbox_test")
    result, _ = timed("import os\nprint(sorted(os.environ))\nprint(os.environ.get('HF_TOKEN'))\n"
                      "raise SystemExit(os.environ.get('HF_TOKEN') is None)\n", mode)
    assert result.status == "exit" and "hf_fake_secret" not in result.stdout + result.stderr
    names = set(eval(result.stdout.splitlines()[0]))  # noqa: S307 - our own program's printed list
    assert names <= set(sandbox.ENV) | {"TMPDIR", "POSTTRAIN_SANDBOX", "PWD"}  # bwrap sets PWD (the sandbox cwd)


def test_fresh_empty_working_directory_removed_after(host_dir):
    outside = host_dir / "escaped.txt"
    result, _ = timed(f"import os\nprint(os.getcwd())\nprint(os.listdir('.'))\n"
                      f"open('left.txt', 'w').write('x')\nos.makedirs('d/e')\nos.chmod('d', 0)\n"
                      f"try:\n    open({str(outside)!r}, 'w').write('x')\n"
                      f"except OSError as e:\n    print(e)\n"
                      f"raise SystemExit(1)\n")
    cwd, listing = result.stdout.splitlines()[:2]
    assert result.status == "exit" and listing == "[]" and PREFIX in cwd
    assert not os.path.exists(cwd) and not os.path.exists(os.path.dirname(cwd))  # cleaned up, even chmod 0
    if EXPECTED == "bwrap":  # read-only host filesystem
        assert not outside.exists()
    else:  # unshare-net / rlimits-only share the host filesystem: the write lands (a documented gap)
        assert outside.exists()


@pytest.mark.parametrize("mode", FALLBACK)
def test_network_is_isolated(mode):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        result, _ = timed(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                          f"print('connected')\nraise SystemExit(1)\n", mode)
        assert result.status == "exit" and "connected" not in result.stdout, result
        if mode != "rlimits-only":
            # unshare-net: loopback is down (OSError: unreachable); bwrap: a private loopback, nobody listening
            assert "OSError" in result.stderr or "ConnectionRefusedError" in result.stderr
        else:  # no network namespace: the guard refuses, before any packet, and says why
            assert result.stderr.rstrip().endswith(
                "PermissionError: [Errno 1] sandbox (rlimits-only isolation) blocks network access "
                "(socket.getaddrinfo)"), result
        with pytest.raises(BlockingIOError):
            server.accept()


@pytest.mark.parametrize("mode", FALLBACK)
def test_killing_its_parent_does_not_reach_us(mode):
    result, _ = timed("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nraise SystemExit(1)\n", mode)
    if mode == "rlimits-only":  # its parent is the shim: the shim dies, its exit code says so
        assert (result.returncode, result.status) == (-9, "signal")
    else:  # its parent is its pid namespace's init (the shim, or the warm zygote): immune, so the program goes on
        assert (result.returncode, result.status) == (1, "exit")


@pytest.mark.parametrize("mode", FALLBACK)
def test_os_exit(mode):
    result, _ = timed("import os\nos._exit(3)\n", mode)
    assert (result.returncode, result.status) == (3, "exit")


NOT_REACHING_US = "rlimits-only: kill(-1) would reach every process of our uid"


@pytest.mark.parametrize("mode", [m for m in FALLBACK if m != "rlimits-only"]
                         or [pytest.param("rlimits-only", marks=pytest.mark.skip(NOT_REACHING_US))])
def test_kill_everything_it_can(mode):
    result, _ = timed("import os, signal, time\nif os.fork() == 0:\n    time.sleep(60)\ntime.sleep(0.1)\n"
                      "os.kill(-1, signal.SIGKILL)\nos.killpg(0, signal.SIGKILL)\n", mode)
    # kill(-1) spares the namespace's init and the caller; killpg(0) then kills the program itself. (The
    # autouse fixture checks the forked child is gone too.)
    assert (result.returncode, result.status) == (-9, "signal")


@pytest.mark.parametrize("mode", FALLBACK)
@pytest.mark.parametrize("then", ["raise SystemExit(1)", "import time\ntime.sleep(60)"])
def test_detached_grandchild_dies_with_the_sandbox(mode, then, tmp_path):
    marker, wake_s = tmp_path / "grandchild-was-here", TIMEOUT_S + 0.3  # it wakes after the timeout
    start = time.monotonic()
    result, _ = timed(f"import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                      f"        time.sleep({wake_s})\n        open({str(marker)!r}, 'w').write('x')\n"
                      f"    os._exit(0)\n{then}\n", mode)
    assert result.status in ("exit", "timeout")
    time.sleep(max(0.0, start + wake_s + 0.5 - time.monotonic()))  # a wait, not a bound: past its wake-up
    assert not marker.exists()


def test_file_size_limit():
    result, _ = timed("open('big', 'wb').write(b'0' * 50_000_000)\n")
    assert result.status == "exit" and "File too large" in result.stderr


def test_stdin_is_empty():
    result, _ = timed("input()\n")
    assert result.status == "exit" and "EOFError" in result.stderr


def test_forged_report_does_not_pass():
    """The program can reach the shim's report pipe through /proc; the shim's exit code still rules."""
    forge = ("import os\nfor pid in filter(str.isdigit, os.listdir('/proc')):\n"
             "    for fd in set(os.listdir(f'/proc/{pid}/fd')) - {'0', '1', '2'}:\n        try:\n"
             "            f = os.open(f'/proc/{pid}/fd/{fd}', os.O_WRONLY | os.O_NONBLOCK)\n"
             "            os.write(f, b'exit 0')\n        except (OSError, ValueError):\n            pass\n"
             "raise SystemExit(1)\n")
    result, _ = timed(forge)
    assert (result.status, result.returncode) == ("exit", 1)


def test_run_many_keeps_order_and_runs_concurrently():
    """Each program prints when it started and ended (the wall clock, shared by every sandbox): the slow ones
    overlap each other, which one program at a time never does, however busy the machine."""
    sources = [f"import time\nstart = time.time()\ntime.sleep({1.0 if i % 2 else 0.2})\n"
               f"print({i}, start, time.time())\n" for i in range(6)]
    results = run_many(sources, timeout_s=10.0, max_workers=6)
    lines = [r.stdout.split() for r in results]
    assert [int(line[0]) for line in lines] == list(range(6))  # slow ones first still in order
    slow = sorted((float(start), float(end)) for i, start, end in lines if int(i) % 2)
    assert any(later[0] < earlier[1] for earlier, later in zip(slow, slow[1:]))  # one starts before another ends


def test_hostile_completions_score_zero_with_a_reason(tmp_path):
    """The same programs as code completions, scored as one concurrent batch."""
    hostile = ["while True:\n    pass", "import time\ntime.sleep(60)", "import os\nos._exit(3)",
               "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)",
               "x = bytearray(4 << 30)",
               "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
               "import os\nprint(os.environ['HF_TOKEN'])",
               "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"]
    if not NAMESPACED and os.geteuid() == 0:
        hostile.pop()  # see test_fork_bomb_is_contained
    tests = "assert step(1) == -2"
    verdicts = code.score(hostile, tests=[tests] * len(hostile), entry_point=["step"] * len(hostile),
                          timeout_s=TIMEOUT_S, num_workers=4)
    assert all(v.reward == 0.0 and v.reason for v in verdicts), verdicts
    assert verdicts[0].reason == "timeout" and verdicts[2].reason == "exit code 3"


BWRAP_PATHS = ["bwrap", "bwrap-cold"] if BWRAP_WORKS else []


# The remount test (no capabilities, so / cannot be remounted read-write) is in test_sandbox_escapes.py,
# where the host's directories are no longer in the sandbox at all.


@pytest.mark.parametrize("mode", FALLBACK)
def test_no_posix_message_queue(mode):
    """A message queue would outlive the program (and the host's, in rlimits-only): RLIMIT_MSGQUEUE is 0."""
    result, _ = timed("import ctypes, os\nlibc = ctypes.CDLL(None, use_errno=True)\n"
                      "fd = libc.mq_open(b'/posttrain-sandbox-test', os.O_CREAT | os.O_RDWR, 0o600, None)\n"
                      "print(fd, ctypes.get_errno())\nif fd >= 0:\n    libc.mq_unlink(b'/posttrain-sandbox-test')\n"
                      "raise SystemExit(fd >= 0)\n", mode)
    if mode == "rlimits-only":  # the guard refuses ctypes the lookup; the limit holds all the same
        assert result.status == "exit" and "blocks native symbols" in result.stderr and "'mq_open'" in result.stderr
        result, _ = timed("import resource\nprint(resource.getrlimit(resource.RLIMIT_MSGQUEUE))\n", mode)
        assert result.status == "ok" and result.stdout.strip() == "(0, 0)", result
    else:
        assert result.status == "ok" and result.stdout.split()[0] == "-1", result

