"""Hostile programs against the sandbox. Each must end as a failure with a reason, leave no process
behind, and leave the sandbox working for the next run. Tests assert what the active isolation mode
guarantees (the mode this machine probes to); a few also run under forced rlimits-only, the fallback."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from reward import code, sandbox
from reward.sandbox import PREFIX, run_many, run_python

ACTIVE = sandbox.detect_isolation()
NAMESPACED = ACTIVE in ("bwrap", "unshare-net")
TIMEOUT_S = 1.5
BUDGET_S = TIMEOUT_S + 1.5  # a timed-out run must be over by then
FALLBACK = ["rlimits-only"] if ACTIVE == "rlimits-only" else [ACTIVE, "rlimits-only"]


def stragglers(marker: str = PREFIX) -> list[str]:
    """Command lines of live (non-zombie) processes that mention the marker."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker in cmdline and state != "Z" and int(pid) != os.getpid():
            found.append(f"{pid} {cmdline}")
    return found


def assert_nothing_left(marker: str = PREFIX, within_s: float = 3.0) -> None:
    deadline = time.monotonic() + within_s
    while (left := stragglers(marker)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not left, f"processes left behind: {left}"


@pytest.fixture(autouse=True)
def sandbox_survives():
    """After every test: nothing of any sandbox still runs, and a fresh run still works."""
    yield
    assert_nothing_left()
    assert run_python("print(6 * 7)", 5.0) == (0, "ok", "42\n", "", ACTIVE)


def timed(source: str, mode: str | None = None, timeout_s: float = TIMEOUT_S):
    start = time.monotonic()
    result = run_python(source, timeout_s, isolation=mode)
    return result, time.monotonic() - start


def test_isolation_is_probed_and_reported():
    assert ACTIVE in sandbox.MODES
    assert run_python("pass").isolation == ACTIVE
    unshare = shutil.which("unshare")
    if unshare and subprocess.run([unshare, "--user", "--map-root-user", "--net", "true"]).returncode == 0:
        assert NAMESPACED, "unshare works here but the sandbox fell back to rlimits-only"


def test_rlimits_only_fallback_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(sandbox.shutil, "which", lambda name: None)  # as if neither bwrap nor unshare
    sandbox.detect_isolation.cache_clear()
    try:
        with caplog.at_level("WARNING", logger="reward.sandbox"):
            assert sandbox.detect_isolation() == sandbox.detect_isolation() == "rlimits-only"
        warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
        assert len(warnings) == 1 and "Network and filesystem isolation are LOST" in warnings[0]
    finally:
        monkeypatch.undo()
        sandbox.detect_isolation.cache_clear()
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


def test_fresh_empty_working_directory_removed_after(tmp_path):
    outside = tmp_path / "escaped.txt"
    result, _ = timed(f"import os\nprint(os.getcwd())\nprint(os.listdir('.'))\n"
                      f"open('left.txt', 'w').write('x')\nos.makedirs('d/e')\nos.chmod('d', 0)\n"
                      f"try:\n    open({str(outside)!r}, 'w').write('x')\n"
                      f"except OSError as e:\n    print(e)\n"
                      f"raise SystemExit(1)\n")
    cwd, listing = result.stdout.splitlines()[:2]
    assert result.status == "exit" and listing == "[]" and PREFIX in cwd
    assert not os.path.exists(cwd) and not os.path.exists(os.path.dirname(cwd))  # cleaned up, even chmod 0
    if ACTIVE == "bwrap":  # read-only host filesystem
        assert not outside.exists()
    else:  # unshare-net / rlimits-only share the host filesystem: the write lands (a documented gap)
        assert outside.exists()


def test_network_is_isolated():
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.setblocking(False)
        port = server.getsockname()[1]
        result, _ = timed(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
                          f"print('connected')\nraise SystemExit(1)\n")
        assert result.status == "exit"
        if NAMESPACED:
            # unshare-net: loopback is down (OSError: unreachable); bwrap: a private loopback, nobody listening
            assert "connected" not in result.stdout
            assert "OSError" in result.stderr or "ConnectionRefusedError" in result.stderr
            with pytest.raises(BlockingIOError):
                server.accept()
        else:  # rlimits-only: no network isolation (the warning says so)
            assert "connected" in result.stdout


@pytest.mark.parametrize("mode", FALLBACK)
def test_killing_its_parent_does_not_reach_us(mode):
    result, _ = timed("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\nraise SystemExit(1)\n", mode)
    assert result.status in ("signal", "exit")  # the shim died (-9), or as a namespace's init ignored it
    assert os.getppid() > 0  # and we are alive to check


@pytest.mark.parametrize("mode", FALLBACK)
def test_os_exit(mode):
    result, _ = timed("import os\nos._exit(3)\n", mode)
    assert (result.returncode, result.status) == (3, "exit")


def test_kill_everything_it_can():
    if not NAMESPACED:
        pytest.skip("rlimits-only: kill(-1) would reach every process of our uid")
    result, _ = timed("import os, signal, time\nif os.fork() == 0:\n    time.sleep(60)\ntime.sleep(0.1)\n"
                      "os.kill(-1, signal.SIGKILL)\nos.killpg(0, signal.SIGKILL)\n")
    assert result.status == "signal" and os.getppid() > 0  # the sandbox died; we did not


@pytest.mark.parametrize("mode", FALLBACK)
@pytest.mark.parametrize("then", ["raise SystemExit(1)", "import time\ntime.sleep(60)"])
def test_detached_grandchild_dies_with_the_sandbox(mode, then, tmp_path):
    marker, wake_s = tmp_path / "grandchild-was-here", TIMEOUT_S + 0.3  # it wakes after the timeout
    start = time.monotonic()
    result, _ = timed(f"import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                      f"        time.sleep({wake_s})\n        open({str(marker)!r}, 'w').write('x')\n"
                      f"    os._exit(0)\n{then}\n", mode)
    assert result.status in ("exit", "timeout")
    time.sleep(max(0.0, start + wake_s + 0.5 - time.monotonic()))
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
    sources = [f"import time\ntime.sleep({1.0 if i % 2 else 0.2})\nprint({i})\n" for i in range(6)]
    start = time.monotonic()
    results = run_many(sources, timeout_s=10.0, max_workers=6)
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(6)]  # slow ones first still in order
    assert time.monotonic() - start < 3.6  # 3.6 s of sleeps, overlapped


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
