"""The sandbox's trusted supervisor: the program's parent inside the sandbox. Stdlib only, run as
`python -I -S _shim.py STATUS_FD LIMITS MAX_PROCS PROGRAM_ARGV...`.

It forks the program with the resource limits set, waits for it, writes how it ended ("exit N",
"signal N" or "procs N") to STATUS_FD (closed in the program), and exits with the program's code
(128 + N for signal N). With MAX_PROCS > 0 the shim must be the init (pid 1) of a pid namespace
with its own /proc (else the watchdog stays off): as init it reaps orphans and, polling, kills every
process there once more than MAX_PROCS exist (give or take what forks between two polls); that is
the fork-bomb cap where RLIMIT_NPROC does not bind (host root's processes, even in a user namespace).
LIMITS is "NAME:soft:hard,..." with NAME a resource.RLIMIT_* suffix.
"""

import os
import resource
import signal
import sys
import time

POLL_S = 0.005
# The program runs at a lower priority than the shim: under a fork bomb a nice-0 shim still gets the
# CPU within milliseconds to count and kill (at equal priority it starves for seconds), and the host
# stays responsive.
PROGRAM_NICE = 5


def set_limits(spec: str) -> None:
    for item in spec.split(","):
        name, soft, hard = item.split(":")
        kind = getattr(resource, "RLIMIT_" + name)
        current = resource.getrlimit(kind)[1]
        # an unprivileged shim cannot raise a hard limit: keep the lower of ours and the inherited one
        top = int(hard) if current == resource.RLIM_INFINITY else min(int(hard), current)
        resource.setrlimit(kind, (min(int(soft), top), top))


def spawn(status_fd: int, limits: str, argv: list) -> int:
    pid = os.fork()
    if pid == 0:
        try:
            os.close(status_fd)
            set_limits(limits)
            os.nice(PROGRAM_NICE)
            # A program starts as from a shell, whatever launched us: a SIGINT ignored by a nohup'ed
            # training job would be inherited through exec (and the warm zygote resets it too).
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.execv(argv[0], argv)
        finally:
            os._exit(127)
    return pid


def wait_watching(pid: int, max_procs: int) -> tuple:
    """(wait status, report) of the program, polling the namespace's process count meanwhile."""
    while True:
        try:  # as pid 1 we inherit the program's orphans: reap them all, keep the program's status
            while True:
                done, status = os.waitpid(-1, os.WNOHANG)
                if done == 0:
                    break
                if done == pid:
                    return status, ""
        except ChildProcessError:
            pass
        count = sum(entry.isdigit() for entry in os.listdir("/proc"))
        if count > max_procs:
            os.kill(-1, 9)  # every process of the namespace but us
            return os.waitpid(pid, 0)[1], "procs %d" % count
        time.sleep(POLL_S)


def not_dumpable() -> None:
    """No ptrace of the shim by the program (same uid, and where Yama allows it), nor its /proc/<pid>/mem:
    else the program could write the shim's report and exit code. The program's exec makes it dumpable again."""
    import ctypes

    if ctypes.CDLL(None, use_errno=True).prctl(4, 0, 0, 0, 0) != 0:  # PR_SET_DUMPABLE
        sys.stderr.write("sandbox shim: prctl(PR_SET_DUMPABLE) failed\n")
        os._exit(2)


def main() -> None:
    status_fd, limits, max_procs, argv = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    not_dumpable()
    # kill(-1) is only safe from the init of a private pid namespace: anywhere else it would signal
    # every process we may signal on the host. Not pid 1 -> no watchdog (and a note on stderr).
    if max_procs > 0 and os.getpid() != 1:
        sys.stderr.write("sandbox shim: not a pid namespace init; process watchdog off\n")
        max_procs = 0
    pid = spawn(status_fd, limits, argv)
    status, report = wait_watching(pid, max_procs) if max_procs > 0 else (os.waitpid(pid, 0)[1], "")
    signum = os.WTERMSIG(status) if os.WIFSIGNALED(status) else 0
    report = report or ("signal %d" % signum if signum else "exit %d" % os.WEXITSTATUS(status))
    try:
        os.write(status_fd, ("\n%s\n" % report).encode())  # own line: forged bytes may precede it
    except OSError:  # no report pipe (a wrapper closed it): the exit code below still tells
        pass
    os._exit(128 + signum if signum else os.WEXITSTATUS(status))


if __name__ == "__main__":
    main()
